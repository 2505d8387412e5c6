//! The agent's guarantees, shown on the real `edge-agent` binary against a
//! local SQS endpoint (the bus's queues behind `sqs_api`), with a simulated
//! machine in the test process consuming the hot folder, so what reached
//! the machine is counted by something that is never killed:
//!
//! - killed with SIGKILL at each step and restarted: every job reaches the
//!   machine exactly once, every status reaches `plant-events`;
//! - the queue unreachable for a while: journaled jobs keep printing, and
//!   the statuses arrive once it is back;
//! - the same job delivered twice, also at the same time: one print;
//! - a file whose sha256 does not match: not printed, reported failed;
//! - SIGTERM: a clean exit (status 0).

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::response::IntoResponse;
use edge_agent::config::{AfterPrint, Config, DriverConfig, Folders};
use edge_agent::driver::SimulatedMachine;
use edge_agent::faults::Step;
use printworks::adapters::local::bus::{LocalBus, QueueConfig};
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::sqs_api;
use printworks::clock::SystemClock;
use printworks::domain::locale::CountryCode;
use printworks::domain::order::{Address, OrderId};
use printworks::domain::production::{Job, JobFile, JobProduct, JobStatusReport, job_id};
use printworks::domain::tenant::TenantId;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const JOBS: &str = "plant-muc-jobs";
const EVENTS: &str = "plant-events";
const ALL_STATUSES: [&str; 5] = ["accepted", "printing", "printed", "packed", "shipped"];

type Files = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// A plant for one test: the queues, a file server, a machine, and the
/// agent's configuration. The agent talks to `agent_base` (the server, or
/// a proxy in front of it).
struct Plant {
    dir: tempfile::TempDir,
    bus: LocalBus,
    base: String,
    files: Files,
    stop: watch::Sender<bool>,
    proxy: Option<Proxy>,
    statuses: BTreeMap<String, BTreeSet<String>>,
    reports: Vec<JobStatusReport>,
}

/// How often each file was fetched.
static FETCHES: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

async fn serve_file(
    State(files): State<Files>,
    UrlPath(name): UrlPath<String>,
) -> impl IntoResponse {
    *FETCHES.lock().unwrap().entry(name.clone()).or_default() += 1;
    match files.lock().unwrap().get(&name) {
        Some(bytes) => (axum::http::StatusCode::OK, bytes.clone()).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

impl Plant {
    async fn start(machine_delay: Duration, with_proxy: bool) -> Plant {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path().join("cloud.sqlite"), Durability::Normal).unwrap());
        let bus = LocalBus::new(db, Arc::new(SystemClock));
        for queue in [JOBS, EVENTS] {
            let config = QueueConfig {
                visibility_timeout: Duration::from_secs(10),
                max_receive_count: 100,
                dead_letter: None,
            };
            bus.declare_queue(queue, config).await.unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files: Files = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let app: Router = sqs_api::router_with_shutdown(bus.clone(), base.clone(), stopped.clone())
            .merge(
                Router::new()
                    .route("/files/{name}", axum::routing::get(serve_file))
                    .with_state(files.clone()),
            );
        let mut server_stop = stopped.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                })
                .await
                .unwrap();
        });
        let folders = Folders::under(&dir.path().join("machine"));
        let machine =
            SimulatedMachine::new(folders, dir.path().join("printed.log"), machine_delay, 0.0)
                .unwrap();
        tokio::spawn(machine.run(stopped));
        let proxy = if with_proxy {
            Some(Proxy::start(&base).await)
        } else {
            None
        };
        Plant {
            dir,
            bus,
            base,
            files,
            stop,
            proxy,
            statuses: BTreeMap::new(),
            reports: Vec::new(),
        }
    }

    fn agent_base(&self) -> String {
        self.proxy
            .as_ref()
            .map_or_else(|| self.base.clone(), |p| p.base.clone())
    }

    /// A job of one file; `corrupt` announces a sha256 the file does not have.
    fn job(&self, copy: u32, order: &OrderId, corrupt: bool) -> Job {
        let id = job_id(order, 1, copy);
        let bytes: Vec<u8> = format!("print file of {id}\n").repeat(2000).into_bytes();
        let announced = if corrupt {
            Sha256::digest(b"something else")
        } else {
            Sha256::digest(&bytes)
        };
        let name = format!("{id}.jpg");
        let file = JobFile {
            name: "1.jpg".into(),
            url: format!("{}/files/{name}", self.base),
            sha256: hex::encode(announced),
            bytes: bytes.len() as u64,
            width: 100,
            height: 150,
        };
        self.files.lock().unwrap().insert(name, bytes);
        Job {
            job_id: id,
            plant: "muc".into(),
            tenant: TenantId::parse("acme-prints").unwrap(),
            order_id: order.clone(),
            line: 1,
            copy,
            copies: 9,
            product: JobProduct {
                sku: "poster-30x40".into(),
                name: "Poster 30x40 cm".into(),
                width_mm: 300,
                height_mm: 400,
                options: BTreeMap::new(),
            },
            files: vec![file],
            files_expire_at: time::OffsetDateTime::now_utc() + Duration::from_secs(3600),
            shipping_method: printworks::domain::catalog::ShippingMethod::Standard,
            ship_to: Address {
                name: "Erika Muster".into(),
                company: None,
                line1: "Heidestr. 17".into(),
                line2: None,
                postal_code: "1010".into(),
                city: "Wien".into(),
                country: CountryCode::AT,
            },
            packing_ref: printworks::domain::production::packing_reference("muc", order),
            jobs_in_package: 1,
            barcode: "MUC-TEST".into(),
        }
    }

    /// `n` jobs, each its own package, sent to the plant's queue.
    async fn enqueue(&self, n: u32) -> Vec<Job> {
        let jobs: Vec<Job> = (1..=n)
            .map(|copy| self.job(copy, &OrderId::new(), false))
            .collect();
        self.send(&jobs).await;
        jobs
    }

    async fn send(&self, jobs: &[Job]) {
        let bodies: Vec<String> = jobs
            .iter()
            .map(|j| serde_json::to_string(j).unwrap())
            .collect();
        self.bus.send(JOBS, "message", &bodies).await.unwrap();
    }

    fn config(&self) -> PathBuf {
        let dir = self.dir.path();
        let Folders { hot, done, error } = Folders::under(&dir.join("machine"));
        let config = Config {
            concurrency: 4,
            wait_secs: 1,
            visibility_secs: 10,
            report_backoff_max_secs: 1,
            after_print: AfterPrint::Simulate {
                ship_delay_ms: 100,
                carrier: "SIM-POST".into(),
            },
            ..Config::local(
                &self.agent_base(),
                "muc",
                (JOBS, EVENTS),
                dir.join("agent"),
                DriverConfig::Hotfolder { hot, done, error },
            )
        };
        let path = dir.join("agent.toml");
        config.write(&path).unwrap();
        path
    }

    /// Starts the real binary, paused at `step` if given.
    fn spawn_agent(&self, pause_at: Option<Step>) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_edge-agent"));
        let mut command = edge_agent::command(bin, &self.config());
        command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(step) = pause_at {
            command.env(edge_agent::faults::PAUSE_AT, step.as_str());
        }
        Agent(Some(command.spawn().unwrap()))
    }

    /// Takes every report off `plant-events` into `statuses`.
    async fn collect(&mut self) {
        loop {
            let batch = self.bus.receive(EVENTS, 10).await.unwrap();
            if batch.is_empty() {
                return;
            }
            for m in batch {
                self.bus.delete(&m.receipt).await.unwrap();
                let report = JobStatusReport::parse(&m.body).unwrap();
                self.statuses
                    .entry(report.job_id.clone())
                    .or_default()
                    .insert(report.status.as_str().to_string());
                self.reports.push(report);
            }
        }
    }

    /// Waits until every job has reported every status in `wanted`.
    async fn wait_for(&mut self, jobs: &[Job], wanted: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.collect().await;
            let done = jobs.iter().all(|j| {
                self.statuses
                    .get(&j.job_id)
                    .is_some_and(|s| wanted.iter().all(|w| s.contains(*w)))
            });
            if done {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "statuses missing after {within:?}: {:?}\nagent log:\n{}",
                    self.statuses,
                    std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until no job message is left on the plant's queue.
    async fn wait_drained(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.bus.depth(JOBS).await.unwrap() > 0 {
            assert!(Instant::now() < deadline, "job messages left on the queue");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn printed(&self) -> Vec<String> {
        SimulatedMachine::printed(&self.dir.path().join("printed.log")).unwrap()
    }

    /// Asserts each job was printed exactly once.
    fn assert_printed_once(&self, jobs: &[Job]) {
        let printed = self.printed();
        for job in jobs {
            let n = printed.iter().filter(|p| **p == job.job_id).count();
            assert_eq!(n, 1, "{} printed {n} times: {printed:?}", job.job_id);
        }
    }

    fn journal_count(&self, sql: &str) -> i64 {
        let path = self.dir.path().join("agent").join("journal.sqlite");
        match rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) {
            Ok(c) => c.query_row(sql, [], |r| r.get(0)).unwrap_or(0),
            Err(_) => 0,
        }
    }
}

impl Drop for Plant {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The agent process; killed if the test ends while it runs.
struct Agent(Option<Child>);

impl Agent {
    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// Waits until the agent stopped itself at its pause point.
    async fn wait_paused(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let stat = format!("/proc/{}/stat", self.pid());
        loop {
            let raw = std::fs::read_to_string(&stat).unwrap_or_default();
            let state = raw
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if state == Some('T') {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent never reached its pause point"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&mut self) {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    /// SIGTERM; returns the exit status.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().unwrap();
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent did not stop within 20 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP proxy that can be cut (connections refused, open ones dropped).
struct Proxy {
    base: String,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let target = target.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (is_up, cuts) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            base,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn hot_tickets(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("machine").join("hot"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ticket.json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_any_step_every_job_prints_once_and_every_status_arrives() {
    for step in Step::ALL {
        let mut plant = Plant::start(Duration::from_millis(50), false).await;
        let jobs = plant.enqueue(3).await;
        let mut agent = plant.spawn_agent(Some(step));
        agent.wait_paused(Duration::from_secs(30)).await;
        agent.kill9();
        let mut agent = plant.spawn_agent(None);
        plant
            .wait_for(&jobs, &ALL_STATUSES, Duration::from_secs(60))
            .await;
        plant.assert_printed_once(&jobs);
        assert_eq!(plant.printed().len(), 3, "{}", step.as_str());
        assert_eq!(hot_tickets(plant.dir.path()), 0);
        // A message whose delete was lost comes back after its visibility
        // timeout (10 s) and is only deleted.
        plant.wait_drained(Duration::from_secs(30)).await;
        plant.assert_printed_once(&jobs);
        let status = agent.terminate().await;
        assert!(status.success(), "{}: {status}", step.as_str());
        eprintln!(
            "killed {}: 3 jobs printed once each, all statuses delivered",
            step.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journaled_jobs_keep_printing_while_the_queue_is_unreachable() {
    let mut plant = Plant::start(Duration::from_millis(1500), true).await;
    let jobs = plant.enqueue(4).await;
    let mut agent = plant.spawn_agent(None);
    // Once all four are journaled, the cloud goes away.
    let deadline = Instant::now() + Duration::from_secs(30);
    while plant.journal_count("SELECT COUNT(*) FROM jobs") < 4 {
        assert!(Instant::now() < deadline, "jobs not journaled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    plant.proxy.as_ref().unwrap().cut();
    plant.collect().await;
    let before: usize = plant.reports.len();
    // The machine prints them all meanwhile, and the agent ships them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while plant.journal_count("SELECT COUNT(*) FROM jobs WHERE state = 'shipped'") < 4 {
        assert!(
            Instant::now() < deadline,
            "jobs did not print while the queue was unreachable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    plant.assert_printed_once(&jobs);
    tokio::time::sleep(Duration::from_secs(3)).await;
    plant.collect().await;
    assert_eq!(
        plant.reports.len(),
        before,
        "nothing arrives while the queue is unreachable"
    );
    assert!(
        plant.journal_count("SELECT COUNT(*) FROM outbox") > 0,
        "statuses wait in the outbox"
    );
    assert!(
        plant.reports.iter().all(|r| r.status.as_str() != "shipped"),
        "no shipped status could have been sent"
    );
    plant.proxy.as_ref().unwrap().restore();
    plant
        .wait_for(&jobs, &ALL_STATUSES, Duration::from_secs(60))
        .await;
    // The agent removes a status from its outbox once the queue took it,
    // just after the send: the test may see the report on the queue first.
    let deadline = Instant::now() + Duration::from_secs(30);
    while plant.journal_count("SELECT COUNT(*) FROM outbox") > 0 {
        assert!(
            Instant::now() < deadline,
            "statuses the queue took are still in the outbox: {}",
            plant.journal_count("SELECT COUNT(*) FROM outbox")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(agent.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_twice_even_at_the_same_time_prints_once() {
    let mut plant = Plant::start(Duration::from_millis(50), false).await;
    let order = OrderId::new();
    let mut twin = plant.job(1, &order, false);
    let mut other = plant.job(2, &order, false);
    (twin.jobs_in_package, other.jobs_in_package) = (2, 2);
    // Two messages of one job in the same batch, and another job.
    plant
        .send(&[twin.clone(), twin.clone(), other.clone()])
        .await;
    let mut agent = plant.spawn_agent(None);
    let jobs = [twin.clone(), other];
    plant
        .wait_for(&jobs, &ALL_STATUSES, Duration::from_secs(60))
        .await;
    // A third delivery, long after: only deleted.
    plant.send(std::slice::from_ref(&twin)).await;
    plant.wait_drained(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    plant.assert_printed_once(&jobs);
    assert_eq!(plant.printed().len(), 2);
    plant.collect().await;
    let accepted = plant
        .reports
        .iter()
        .filter(|r| r.job_id == twin.job_id && r.status.as_str() == "accepted")
        .count();
    assert_eq!(accepted, 1, "one intake, one report");
    assert!(agent.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_checksum_does_not_match_is_not_printed_and_is_reported_failed() {
    let mut plant = Plant::start(Duration::from_millis(50), false).await;
    let bad = plant.job(1, &OrderId::new(), true);
    let good = plant.job(2, &OrderId::new(), false);
    plant.send(&[bad.clone(), good.clone()]).await;
    let mut agent = plant.spawn_agent(None);
    plant
        .wait_for(
            std::slice::from_ref(&bad),
            &["failed"],
            Duration::from_secs(30),
        )
        .await;
    plant
        .wait_for(
            std::slice::from_ref(&good),
            &ALL_STATUSES,
            Duration::from_secs(60),
        )
        .await;
    let failed = plant
        .reports
        .iter()
        .find(|r| r.job_id == bad.job_id)
        .unwrap();
    assert_eq!(failed.status.as_str(), "failed");
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("checksum mismatch"),
        "{failed:?}"
    );
    assert_eq!(
        plant.statuses[&bad.job_id].len(),
        1,
        "only failed: never accepted or printed"
    );
    assert_eq!(plant.printed(), std::slice::from_ref(&good.job_id));
    let done = plant.dir.path().join("machine").join("done");
    assert!(!done.join(format!("{}.ticket.json", bad.job_id)).exists());
    assert_eq!(
        plant.bus.depth(JOBS).await.unwrap(),
        0,
        "the bad job's message is not redelivered forever"
    );
    assert!(agent.terminate().await.success());
}

/// The copies of one item share their print file: the agent fetches it
/// once (its spool's cache by sha256) and every copy is still printed, each
/// once, from a file checked against its sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_one_print_download_it_once() {
    let mut plant = Plant::start(Duration::from_millis(50), false).await;
    let order = OrderId::new();
    let first = plant.job(1, &order, false);
    let name = first.files[0].url.rsplit('/').next().unwrap().to_string();
    let jobs: Vec<Job> = (1..=6)
        .map(|copy| Job {
            job_id: job_id(&order, 1, copy),
            copy,
            copies: 6,
            jobs_in_package: 6,
            ..first.clone()
        })
        .collect();
    plant.send(&jobs).await;
    let mut agent = plant.spawn_agent(None);
    plant
        .wait_for(&jobs, &ALL_STATUSES, Duration::from_secs(60))
        .await;
    let mut printed = plant.printed();
    printed.sort();
    let mut ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    ids.sort();
    assert_eq!(printed, ids, "each copy printed once");
    assert_eq!(
        FETCHES.lock().unwrap().get(&name).copied(),
        Some(1),
        "six copies of one print, one download"
    );
    assert!(agent.terminate().await.success());
}

/// A job whose links expired before the agent took it (the plant was
/// offline past the links' lifetime) is not failed: its message is
/// deleted with nothing journaled, and the copy with fresh links that the
/// reconciler has dispatch send under the same job id prints, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_links_expired_waits_for_the_copy_with_fresh_links() {
    let mut plant = Plant::start(Duration::from_millis(50), false).await;
    let fresh = plant.job(1, &OrderId::new(), false);
    let mut expired = fresh.clone();
    expired.files_expire_at = time::OffsetDateTime::now_utc() - Duration::from_secs(60);
    // The store refuses an expired link (S3 answers 403; here the name is gone).
    expired.files[0].url = format!("{}/files/expired-{}.jpg", plant.base, fresh.job_id);
    plant.send(std::slice::from_ref(&expired)).await;
    let mut agent = plant.spawn_agent(None);
    plant.wait_drained(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    plant.collect().await;
    assert!(
        !plant.statuses.contains_key(&fresh.job_id),
        "nothing reported: {:?}",
        plant.statuses
    );
    assert_eq!(plant.journal_count("SELECT COUNT(*) FROM jobs"), 0);
    plant.send(std::slice::from_ref(&fresh)).await;
    plant
        .wait_for(
            std::slice::from_ref(&fresh),
            &ALL_STATUSES,
            Duration::from_secs(60),
        )
        .await;
    plant.assert_printed_once(std::slice::from_ref(&fresh));
    assert!(agent.terminate().await.success());
}
