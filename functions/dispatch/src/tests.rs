//! Dispatch on the real SQLite store, local bus and file blob store.

use super::*;
use printworks::adapters::local::blobs::FsBlobStore;
use printworks::domain::production::Job;
use printworks::testing::LocalEnv;
use std::collections::{BTreeMap, BTreeSet};

/// The shared local environment with the plants' job queues, a prints
/// store and the dispatcher on them.
struct Env {
    local: LocalEnv,
    prints: Arc<FsBlobStore>,
    dispatcher: Dispatcher,
}

impl std::ops::Deref for Env {
    type Target = LocalEnv;
    fn deref(&self) -> &LocalEnv {
        &self.local
    }
}

async fn setup(plant_queues: &[&str]) -> Env {
    let local = LocalEnv::new().await;
    local.subscribe_all().await;
    for plant in plant_queues {
        local.declare_queue(&format!("plant-{plant}-jobs")).await;
    }
    let prints = local.blobs("prints", "http://127.0.0.1:9");
    let catalog = Arc::new(Catalog::builtin().clone());
    let dispatcher = Dispatcher {
        plants: PlantQueues::for_plants(catalog.plants.keys(), |plant| {
            Arc::new(local.bus.queue(&format!("plant-{plant}-jobs")))
        }),
        catalog,
        orders: local.store.clone(),
        production: local.store.clone(),
        prints: prints.clone(),
        clock: local.clock.clone(),
        url_ttl: Duration::from_secs(3600),
    };
    Env {
        local,
        prints,
        dispatcher,
    }
}

impl Env {
    /// A rendered order with its print files in the prints store; returns
    /// its `OrderRendered` event.
    async fn rendered(&self, items: &[(&str, u32)], country: &str) -> EventEnvelope {
        let paid = self.place_paid(items, country).await;
        let (_, event) = self.render(&paid, Some(self.prints.as_ref())).await;
        self.published().await;
        event
    }

    async fn order(&self, event: &EventEnvelope) -> Order {
        self.store
            .get(&event.tenant, &event.order_id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Every job on a plant's queue (taken off it).
    async fn jobs(&self, plant: &str) -> Vec<Job> {
        let mut jobs = Vec::new();
        loop {
            let batch = self
                .bus
                .receive(&format!("plant-{plant}-jobs"), 10)
                .await
                .unwrap();
            if batch.is_empty() {
                return jobs;
            }
            for m in batch {
                self.bus.delete(&m.receipt).await.unwrap();
                jobs.push(Job::parse(&m.body).unwrap());
            }
        }
    }

    async fn open_jobs(&self) -> BTreeMap<String, i64> {
        self.store
            .open_jobs(&["muc".into(), "btf".into()])
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_rendered_order_goes_to_its_plant_as_one_job_per_copy() {
    let env = setup(&["muc", "btf"]).await;
    let event = env
        .rendered(&[("poster-30x40", 2), ("photobox-10x15", 1)], "AT")
        .await;
    let outcome = env.dispatcher.handle(&event).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Dispatched {
            plant: "muc".into(),
            jobs: 3
        }
    );
    let order = env.order(&event).await;
    assert_eq!(order.state, OrderState::Dispatched);
    let production = order.production.clone().unwrap();
    assert_eq!(env.open_jobs().await["muc"], 3);
    assert_eq!(env.published().await, ["OrderDispatched"]);

    let jobs = env.jobs("muc").await;
    assert!(env.jobs("btf").await.is_empty());
    let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    let expected: Vec<&str> = production.jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids, expected);
    let box_job = jobs.iter().find(|j| j.line == 2).unwrap();
    assert_eq!(box_job.files.len(), order.items[1].images.len());
    for job in &jobs {
        let item = &order.items[job.line as usize - 1];
        assert_eq!(job.copies, item.quantity);
        assert_eq!(job.product.sku, item.sku);
        assert_eq!(job.ship_to, order.shipping.address);
        assert_eq!(job.packing_ref, production.packing_ref);
        assert_eq!(job.jobs_in_package, 3);
        assert_eq!(
            job.barcode,
            format!("{}-{}-{}", production.packing_ref, job.line, job.copy)
        );
        assert_eq!(
            job.files_expire_at,
            env.clock.now() + Duration::from_secs(3600)
        );
        for (file, render) in job.files.iter().zip(&item.renders) {
            assert_eq!(file.sha256, render.print.sha256);
            // The URL is a valid presigned GET of the print file.
            let url = url_parts(&file.url);
            let key = url.0.strip_prefix("http://127.0.0.1:9/blobs/").unwrap();
            assert_eq!(key, render.print.key);
            env.prints.authorize_get(key, &url.1).unwrap();
        }
    }
    let (first, second) = (&jobs[0].product, &jobs[2].product);
    assert_eq!((first.width_mm, first.height_mm), (300, 400));
    assert_eq!(second.sku, "photobox-10x15");
}

fn url_parts(url: &str) -> (String, BTreeMap<String, String>) {
    let (path, query) = url.split_once('?').unwrap();
    let query = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    (path.to_string(), query)
}

#[tokio::test]
async fn a_redelivery_sends_the_same_job_ids_and_counts_once() {
    let env = setup(&["muc", "btf"]).await;
    let event = env.rendered(&[("poster-30x40", 2)], "CH").await;
    env.dispatcher.handle(&event).await.unwrap();
    let first: Vec<String> = env
        .jobs("muc")
        .await
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    env.clock.advance(Duration::from_secs(60));
    let again = env.dispatcher.handle(&event).await.unwrap();
    assert_eq!(
        again,
        Outcome::Resent {
            plant: "muc".into(),
            jobs: 2
        }
    );
    let second: Vec<String> = env
        .jobs("muc")
        .await
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(first, second);
    assert_eq!(env.open_jobs().await["muc"], 2);
    assert_eq!(env.published().await, ["OrderDispatched"]);
}

#[tokio::test]
async fn concurrent_deliveries_dispatch_once() {
    let env = setup(&["muc", "btf"]).await;
    for round in 0..5 {
        let event = env.rendered(&[("poster-30x40", 3)], "IT").await;
        let (a, b) = tokio::join!(env.dispatcher.handle(&event), env.dispatcher.handle(&event));
        let outcomes = [a.unwrap(), b.unwrap()];
        let dispatched = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Dispatched { .. }))
            .count();
        assert_eq!(dispatched, 1, "round {round}: {outcomes:?}");
        assert_eq!(env.published().await, ["OrderDispatched"]);
        let ids: BTreeSet<String> = env
            .jobs("muc")
            .await
            .into_iter()
            .map(|j| j.job_id)
            .collect();
        assert_eq!(ids.len(), 3);
    }
    assert_eq!(env.open_jobs().await["muc"], 15);
}

#[tokio::test]
async fn the_plant_with_fewer_open_jobs_gets_the_next_order() {
    let env = setup(&["muc", "btf"]).await;
    // Both plants serve Germany.
    let mut plants = Vec::new();
    for quantity in [2, 1, 1] {
        let event = env.rendered(&[("poster-30x40", quantity)], "DE").await;
        match env.dispatcher.handle(&event).await.unwrap() {
            Outcome::Dispatched { plant, .. } => plants.push(plant),
            other => panic!("{other:?}"),
        }
    }
    // A tie goes to btf (first by id); then muc has fewer; then 2 against 1.
    assert_eq!(plants, ["btf", "muc", "muc"]);
    assert_eq!(
        env.open_jobs().await,
        BTreeMap::from([("btf".into(), 2), ("muc".into(), 2)])
    );
}

#[tokio::test]
async fn an_order_no_plant_can_make_goes_on_hold() {
    let env = setup(&["muc", "btf"]).await;
    let event = env
        .rendered(&[("canvas-30x40", 1), ("card-a6-folded", 1)], "DE")
        .await;
    let Outcome::Held { reason } = env.dispatcher.handle(&event).await.unwrap() else {
        panic!("not held");
    };
    assert!(reason.contains("no plant"), "{reason}");
    let order = env.order(&event).await;
    assert_eq!(order.state, OrderState::OnHold);
    assert_eq!(env.published().await, ["OrderOnHold"]);
    assert!(env.jobs("muc").await.is_empty() && env.jobs("btf").await.is_empty());
    assert_eq!(
        env.open_jobs().await,
        BTreeMap::from([("btf".into(), 0), ("muc".into(), 0)])
    );
}

#[tokio::test]
async fn jobs_that_could_not_be_sent_are_sent_with_the_same_ids_on_the_next_delivery() {
    // The plant's queue does not exist yet: the send fails after the write.
    let env = setup(&["btf"]).await;
    let event = env.rendered(&[("poster-30x40", 2)], "AT").await;
    let err = env.dispatcher.handle(&event).await.unwrap_err();
    assert!(format!("{err:#}").contains("muc"), "{err:#}");
    let order = env.order(&event).await;
    assert_eq!(order.state, OrderState::Dispatched);
    env.declare_queue("plant-muc-jobs").await;
    let outcome = env.dispatcher.handle(&event).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Resent {
            plant: "muc".into(),
            jobs: 2
        }
    );
    let ids: Vec<String> = env
        .jobs("muc")
        .await
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    let stored: Vec<String> = order
        .production
        .unwrap()
        .jobs
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(ids, stored);
}

#[tokio::test]
async fn other_events_and_unknown_orders_are_skipped_and_bad_messages_fail() {
    let env = setup(&["muc", "btf"]).await;
    let event = env.rendered(&[("poster-30x40", 1)], "AT").await;
    let mut other = event.clone();
    other.event_type = EventType::OrderPaid;
    assert!(matches!(
        env.dispatcher.handle(&other).await.unwrap(),
        Outcome::Skipped(_)
    ));
    let mut unknown = event.clone();
    unknown.order_id = printworks::domain::order::OrderId::new();
    assert!(matches!(
        env.dispatcher.handle(&unknown).await.unwrap(),
        Outcome::Skipped(_)
    ));

    let mut batch = SqsEvent::default();
    for (id, body) in [
        ("good", serde_json::to_string(&event).unwrap()),
        ("bad", "{\"type\": 1}".into()),
    ] {
        let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body);
        batch.records.push(m);
    }
    let response = env.dispatcher.handle_sqs(batch).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["bad"]);
    assert_eq!(env.order(&event).await.state, OrderState::Dispatched);
}

/// A reprint (an operator's new attempt) sends only the jobs it makes anew,
/// to the plant chosen for them; the first attempt's `OrderRendered`,
/// delivered again, starts nothing.
#[tokio::test]
async fn a_reprint_sends_only_its_new_jobs_and_the_old_attempt_starts_nothing() {
    use printworks::domain::operator::OperatorId;
    use printworks::domain::production::{JobState, JobStatusReport, StatusOutcome};

    let env = setup(&["muc", "btf"]).await;
    let rendered = env.rendered(&[("poster-30x40", 2)], "AT").await;
    env.dispatcher.handle(&rendered).await.unwrap();
    assert_eq!(env.jobs("muc").await.len(), 2);
    env.published().await;
    // Both jobs ship.
    for i in 0..2 {
        let order = env.order(&rendered).await;
        let job = order.production.as_ref().unwrap().jobs[i].clone();
        let report = JobStatusReport {
            job_id: job.job_id.clone(),
            plant: "muc".into(),
            tenant: order.tenant.clone(),
            order_id: order.id.clone(),
            status: JobState::Shipped,
            at: env.now(),
            carrier: Some("DHL".into()),
            tracking: Some(format!("JJD{i}")),
            reason: None,
        };
        let StatusOutcome::Changed { next, events, .. } =
            order.apply_job_status(&report, env.now())
        else {
            panic!("not applied");
        };
        env.store
            .transition_counted(&next, &order, events, "muc", -1)
            .await
            .unwrap();
    }
    let order = env.order(&rendered).await;
    assert_eq!(order.state, OrderState::Shipped);
    let first = order.production.as_ref().unwrap().jobs[1].job_id.clone();
    let acted = order
        .reprint(
            &OperatorId::parse("anna").unwrap(),
            "parcel lost",
            std::slice::from_ref(&first),
            Some("btf"),
            Catalog::builtin(),
            env.now(),
        )
        .unwrap();
    let resumed = acted.events[0].clone();
    env.store
        .transition_counted(&acted.next, &order, acted.events, "btf", 1)
        .await
        .unwrap();

    // The old attempt's OrderRendered, delivered again: nothing happens.
    let late = env.dispatcher.handle(&rendered).await.unwrap();
    assert!(
        matches!(late, Outcome::Skipped(ref why) if why.contains("attempt")),
        "{late:?}"
    );
    assert!(env.jobs("muc").await.is_empty());

    let outcome = env.dispatcher.handle(&resumed).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Resent {
            plant: "btf".into(),
            jobs: 1
        }
    );
    let jobs = env.jobs("btf").await;
    assert!(env.jobs("muc").await.is_empty());
    let [job] = &jobs[..] else { panic!("{jobs:?}") };
    assert_eq!(job.job_id, format!("{first}-2"));
    assert_eq!(job.plant, "btf");
    assert!(job.packing_ref.ends_with("-A2"), "{}", job.packing_ref);
    assert_eq!(job.jobs_in_package, 1);
    assert_eq!(env.open_jobs().await["btf"], 1);
}

#[tokio::test]
async fn a_cancel_after_dispatch_tells_the_plant_every_open_job_from_runs_or_from_ids() {
    use printworks::domain::operator::OperatorId;
    use printworks::domain::production::{JobState, JobStatusReport, StatusOutcome};

    let env = setup(&["muc", "btf"]).await;
    let rendered = env
        .rendered(&[("poster-30x40", 3), ("poster-50x70", 3)], "AT")
        .await;
    env.dispatcher.handle(&rendered).await.unwrap();
    assert_eq!(env.jobs("muc").await.len(), 6);
    let order = env.order(&rendered).await;
    let jobs = order.production.as_ref().unwrap().jobs.clone();
    // The second copy of the first line ships.
    let report = JobStatusReport {
        job_id: jobs[1].job_id.clone(),
        plant: "muc".into(),
        tenant: order.tenant.clone(),
        order_id: order.id.clone(),
        status: JobState::Shipped,
        at: env.now(),
        carrier: Some("DHL".into()),
        tracking: Some("JJD1".into()),
        reason: None,
    };
    let StatusOutcome::Changed { next, events, .. } = order.apply_job_status(&report, env.now())
    else {
        panic!("not applied");
    };
    env.store
        .transition_counted(&next, &order, events, "muc", -1)
        .await
        .unwrap();
    let order = env.order(&rendered).await;
    let acted = order
        .cancel_by_operator(&OperatorId::parse("anna").unwrap(), "fraud", env.now())
        .unwrap();
    let cancelled = acted.events[0].clone();
    // Three runs: copy 1 of line 1, copy 3 of line 1, line 2.
    assert_eq!(cancelled.data["jobs_to_stop"].as_array().unwrap().len(), 3);
    assert_eq!(cancelled.data["jobs_to_stop_count"], 5);
    env.store
        .transition(&acted.next, &order, acted.events)
        .await
        .unwrap();

    let outcome = env.dispatcher.handle(&cancelled).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Stopped {
            plants: "muc".into(),
            jobs: 5
        }
    );
    let open: BTreeSet<String> = jobs
        .iter()
        .filter(|j| j.job_id != jobs[1].job_id)
        .map(|j| j.job_id.clone())
        .collect();
    assert_eq!(cancels(&env).await, open);

    // An event written before runs, naming each job: the same message.
    let mut legacy = cancelled.clone();
    legacy.data["jobs_to_stop"] = open
        .iter()
        .map(|id| serde_json::json!({ "job_id": id, "plant": "muc" }))
        .collect();
    env.dispatcher.handle(&legacy).await.unwrap();
    assert_eq!(cancels(&env).await, open);
}

/// The job ids cancelled on plant muc's queue (taken off it); the queue
/// carries nothing else.
async fn cancels(env: &Env) -> BTreeSet<String> {
    use printworks::domain::production::PlantMessage;
    let mut ids = BTreeSet::new();
    loop {
        let batch = env.bus.receive("plant-muc-jobs", 10).await.unwrap();
        if batch.is_empty() {
            return ids;
        }
        for m in batch {
            env.bus.delete(&m.receipt).await.unwrap();
            let PlantMessage::Cancel(cancel) = PlantMessage::parse(&m.body).unwrap() else {
                panic!("a job after the cancel: {}", m.body)
            };
            assert_eq!(cancel.reason, "fraud");
            ids.extend(cancel.cancel_jobs);
        }
    }
}

#[tokio::test]
async fn the_reconcilers_hand_over_sends_the_untaken_jobs_again_with_fresh_urls() {
    use printworks::domain::production::JobState;
    use printworks::domain::reconcile::{Deadlines, RepairKind};
    let env = setup(&["muc", "btf"]).await;
    let event = env.rendered(&[("poster-30x40", 2)], "DE").await;
    env.dispatcher.handle(&event).await.unwrap();
    let plant = env.order(&event).await.production.unwrap().plant;
    let first = env.jobs(&plant).await;
    assert_eq!(first.len(), 2);
    // The plant took the first job; the second never came off its queue.
    let dispatched = env.order(&event).await;
    let mut taken = dispatched.successor(env.now());
    taken.state = OrderState::InProduction;
    let jobs = &mut taken.production.as_mut().unwrap().jobs;
    jobs[0].status = Some(JobState::Accepted);
    jobs[0].status_at = Some(env.now());
    env.store
        .transition(&taken, &dispatched, Vec::new())
        .await
        .unwrap();
    env.published().await;
    // The links (one hour here) near their expiry: the reconciler decides.
    env.clock.advance(Duration::from_secs(55 * 60));
    let deadlines = Deadlines {
        job_url_ttl: Duration::from_secs(3600),
        refresh_before: Duration::from_secs(600),
        ..Deadlines::default()
    };
    let stored = env.order(&event).await;
    let repair = stored.reconcile(env.now(), &deadlines).expect("a repair");
    assert_eq!(repair.kinds, vec![RepairKind::RefreshUrls]);
    env.store
        .transition(&repair.next, &stored, repair.events.clone())
        .await
        .unwrap();
    let outcome = env.dispatcher.handle(&repair.events[0]).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Resent {
            plant: plant.clone(),
            jobs: 1
        }
    );
    let again = env.jobs(&plant).await;
    assert_eq!(again.len(), 1);
    let untaken = first
        .iter()
        .find(|j| j.job_id != taken.production.as_ref().unwrap().jobs[0].job_id)
        .unwrap();
    assert_eq!(again[0].job_id, untaken.job_id, "the same job id");
    assert!(again[0].files_expire_at > untaken.files_expire_at + Duration::from_secs(50 * 60));
    assert_ne!(again[0].files[0].url, untaken.files[0].url, "fresh links");
    // Nothing else moved: no second dispatch, the counts as they were.
    assert_eq!(env.open_jobs().await[&plant], 2);
    assert_eq!(env.published().await, ["OrderNudged"]);
}
