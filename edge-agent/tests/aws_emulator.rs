//! Dispatch with the AWS adapters and the real `edge-agent` binary against
//! the emulators (DynamoDB on DynamoDB Local, S3 and SQS on moto server):
//! an order delivered to dispatch twice at once is dispatched once, the job
//! messages dispatch sends to the plant's SQS queue land in the agent's hot
//! folder, with the print files it downloaded from S3 through their
//! presigned URLs, and the agent reports them on `plant-events`.
//! `scripts/test` starts both emulators and sets `AWS_ENDPOINT_URL` (moto)
//! and `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local); without them the test
//! says so and returns.

mod aws_emulator {
    use dispatch::{Dispatcher, Outcome, PlantQueues};
    use edge_agent::driver::{Ticket, file_name, ticket_name};
    use printworks::adapters::aws::dynamodb::DynamoStore;
    use printworks::adapters::aws::load_sdk_config;
    use printworks::adapters::aws::s3::S3Blobs;
    use printworks::adapters::aws::sqs::SqsQueue;
    use printworks::clock::SystemClock;
    use printworks::domain::catalog::Catalog;
    use printworks::domain::production::{JobState, JobStatusReport};
    use printworks::ports::{BlobStore, MessageQueue, OrderStore, ProductionStore};
    use printworks::testing::emulator::{
        create_bucket, create_orders_table, create_queue, endpoint as emulator, run_id,
    };
    use printworks::testing::{paid_order, rendered};
    use sha2::{Digest, Sha256};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// The agent process: killed when the test ends without stopping it,
    /// and its log printed when the test failed.
    struct AgentProcess {
        child: Child,
        log: PathBuf,
    }

    impl AgentProcess {
        fn log(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        /// Sends SIGTERM and waits up to `limit` for the exit status.
        fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
            let sent = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status()
                .expect("kill runs");
            assert!(sent.success(), "kill -TERM {}", self.child.id());
            let deadline = Instant::now() + limit;
            loop {
                if let Some(status) = self.child.try_wait().expect("waiting on the agent") {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "the agent did not stop within {limit:?} of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    impl Drop for AgentProcess {
        fn drop(&mut self) {
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
            if std::thread::panicking() {
                eprintln!("--- edge-agent log ---\n{}--- end ---", self.log());
            }
        }
    }

    fn toml_path(path: &Path) -> String {
        toml_str(path.to_str().expect("a UTF-8 temporary path"))
    }

    fn toml_str(s: &str) -> String {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }

    fn sha256_of(path: &Path) -> String {
        hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn emulator_dispatch_sends_jobs_that_the_edge_agent_puts_in_a_hot_folder() {
        let Some(endpoint) = emulator() else { return };
        let started = Instant::now();
        let sdk = load_sdk_config().await;
        let run = run_id();
        let (table, bucket) = (format!("orders-{run}"), format!("prints-{run}"));
        create_orders_table(&sdk, &table).await;
        create_bucket(&sdk, &bucket).await;
        let catalog = Arc::new(Catalog::builtin().clone());
        // PLANT_QUEUE_URL_TEMPLATE's way: one queue per plant of the catalog.
        let mut plant_urls = BTreeMap::new();
        for plant in catalog.plants.keys() {
            let url = create_queue(&sdk, &format!("plant-{plant}-jobs-{run}")).await;
            plant_urls.insert(plant.clone(), url);
        }
        assert!(plant_urls.contains_key("muc"), "the catalog has plant muc");
        let events_url = create_queue(&sdk, &format!("plant-events-{run}")).await;

        // A rendered order, its print files in the prints bucket.
        let store = Arc::new(DynamoStore::from_sdk(&sdk, &table));
        let prints = Arc::new(S3Blobs::from_sdk(&sdk, &bucket, true));
        let now = time::OffsetDateTime::now_utc();
        let new = paid_order(&[("poster-30x40", 2)], "AT", now);
        let paid = new.order.clone();
        store.place(new).await.unwrap();
        let (next, event, files) = rendered(&paid, now);
        for (key, bytes) in files {
            prints.put(&key, bytes, "image/jpeg").await.unwrap();
        }
        store
            .transition(&next, &paid, vec![event.clone()])
            .await
            .unwrap();

        // Dispatch, wired as its main.rs wires it.
        let dispatcher = Dispatcher {
            catalog: catalog.clone(),
            orders: store.clone(),
            production: store.clone(),
            prints: prints.clone(),
            plants: PlantQueues::for_plants(catalog.plants.keys(), |plant| {
                Arc::new(SqsQueue::from_sdk(&sdk, plant_urls[plant].clone()))
            }),
            clock: Arc::new(SystemClock),
            url_ttl: Duration::from_secs(3600),
        };
        // OrderRendered delivered twice at once (SNS and SQS deliver at
        // least once): one delivery assigns the plant and counts its jobs,
        // the other, having lost the transaction on DynamoDB Local or read
        // after it, sends the same jobs again.
        let (first, second) = tokio::join!(dispatcher.handle(&event), dispatcher.handle(&event));
        let mut outcomes = [first.unwrap(), second.unwrap()];
        outcomes.sort_by_key(|o| !matches!(o, Outcome::Dispatched { .. }));
        assert_eq!(
            outcomes,
            [
                Outcome::Dispatched {
                    plant: "muc".into(),
                    jobs: 2
                },
                Outcome::Resent {
                    plant: "muc".into(),
                    jobs: 2
                }
            ]
        );
        let open = store.open_jobs(&["muc".to_string()]).await.unwrap();
        assert_eq!(open["muc"], 2, "the jobs are counted once");
        let dispatched = store
            .get(&event.tenant, &event.order_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dispatched.state.as_str(), "dispatched");
        let production = dispatched.production.clone().expect("a production record");
        assert_eq!(production.plant, "muc");
        let job_ids: BTreeSet<String> = production.jobs.iter().map(|j| j.job_id.clone()).collect();
        assert_eq!(job_ids.len(), 2, "one job per copy");
        let print = dispatched.items[0].renders[0].print.clone();

        // The real agent, on moto's SQS, with a hot folder; the jobs queue
        // holds each job twice.
        let dir = tempfile::tempdir().unwrap();
        let machine = dir.path().join("machine");
        let (hot, done, error) = (
            machine.join("hot"),
            machine.join("done"),
            machine.join("error"),
        );
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "plant = \"muc\"\n\
                 jobs_queue_url = {jobs}\n\
                 events_queue_url = {events}\n\
                 endpoint_url = {endpoint}\n\
                 region = \"eu-central-1\"\n\
                 state_dir = {state}\n\
                 wait_secs = 1\n\
                 \n\
                 [driver]\n\
                 kind = \"hotfolder\"\n\
                 hot = {hot}\n\
                 done = {done}\n\
                 error = {error}\n\
                 \n\
                 [after_print]\n\
                 mode = \"manual\"\n",
                jobs = toml_str(&plant_urls["muc"]),
                events = toml_str(&events_url),
                endpoint = toml_str(&endpoint),
                state = toml_path(&dir.path().join("state")),
                hot = toml_path(&hot),
                done = toml_path(&done),
                error = toml_path(&error),
            ),
        )
        .unwrap();
        let log = dir.path().join("agent.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            // Only the file and the AWS_* variables of this test configure it.
            .env_remove("EDGE_AGENT_CONFIG")
            .env_remove("EDGE_AGENT_PLANT")
            .env_remove("EDGE_AGENT_JOBS_QUEUE_URL")
            .env_remove("EDGE_AGENT_EVENTS_QUEUE_URL")
            .env_remove("EDGE_AGENT_STATE_DIR")
            .env_remove("EDGE_AGENT_PAUSE_AT")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "eu-central-1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the edge-agent binary starts");
        let mut agent = AgentProcess { child, log };

        // Both jobs' tickets in the hot folder.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !job_ids.iter().all(|id| hot.join(ticket_name(id)).exists()) {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("the agent exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the jobs did not reach the hot folder within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let in_hot = started.elapsed();
        for id in &job_ids {
            let ticket: Ticket =
                serde_json::from_slice(&std::fs::read(hot.join(ticket_name(id))).unwrap()).unwrap();
            assert_eq!(&ticket.job_id, id);
            assert_eq!(ticket.order_id, event.order_id.to_string());
            assert_eq!(ticket.sku, "poster-30x40");
            assert_eq!(ticket.copies, 2);
            assert_eq!(ticket.packing_ref, production.packing_ref);
            assert_eq!(ticket.files, vec![file_name(id, "1.jpg")]);
            // Downloaded from S3 through the presigned URL and verified.
            let file = hot.join(&ticket.files[0]);
            assert_eq!(sha256_of(&file), print.sha256, "{}", file.display());
            assert_eq!(std::fs::metadata(&file).unwrap().len(), print.bytes);
        }

        // Its reports on plant-events: accepted and printing for each job.
        let events = SqsQueue::from_sdk(&sdk, events_url.clone());
        let events: &dyn MessageQueue = &events;
        let want: BTreeSet<(String, &str)> = job_ids
            .iter()
            .flat_map(|id| {
                [
                    (id.clone(), JobState::Accepted.as_str()),
                    (id.clone(), JobState::Printing.as_str()),
                ]
            })
            .collect();
        let mut got = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !want.is_subset(&got) {
            assert!(
                Instant::now() < deadline,
                "reports missing after 30 s: {:?}",
                want.difference(&got).collect::<Vec<_>>()
            );
            for m in events.receive(10, Duration::from_secs(1)).await.unwrap() {
                let report = JobStatusReport::parse(&m.body).unwrap();
                assert_eq!(report.plant, "muc");
                assert_eq!(report.order_id, event.order_id);
                assert_eq!(report.tenant, event.tenant);
                assert!(job_ids.contains(&report.job_id), "{}", m.body);
                got.insert((report.job_id, report.status.as_str()));
                events.delete(&m.receipt).await.unwrap();
            }
        }
        assert_eq!(got, want, "nothing else reported");

        // The jobs queue empties: each message was deleted once journaled,
        // the second copy of each job too (the agent knows its id).
        let jobs_queue = SqsQueue::from_sdk(&sdk, plant_urls["muc"].clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let depth = jobs_queue.depth().await.unwrap();
            if depth == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{depth} job messages still queued after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // SIGTERM: the agent finishes its step and exits cleanly.
        let status = agent.terminate(Duration::from_secs(15));
        assert!(
            status.success(),
            "the agent exited with {status}\n{}",
            agent.log()
        );
        eprintln!(
            "jobs in the hot folder after {in_hot:?}; test done after {:?}",
            started.elapsed()
        );
    }
}
