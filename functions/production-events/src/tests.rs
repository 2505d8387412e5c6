//! Status reports applied on the real SQLite store and local bus.

use super::*;
use printworks::domain::catalog::Catalog;
use printworks::domain::order::Order;
use printworks::domain::production::{Dispatch, JobState};
use printworks::domain::state::OrderState;
use printworks::testing::LocalEnv;
use std::collections::BTreeMap;

/// The shared local environment with the handler on it.
struct Env {
    local: LocalEnv,
    handler: ProductionEvents,
}

impl std::ops::Deref for Env {
    type Target = LocalEnv;
    fn deref(&self) -> &LocalEnv {
        &self.local
    }
}

async fn setup() -> Env {
    let local = LocalEnv::new().await;
    local.subscribe_all().await;
    let handler = ProductionEvents {
        orders: local.store.clone(),
        production: local.store.clone(),
        clock: local.clock.clone(),
    };
    Env { local, handler }
}

impl Env {
    /// A dispatched order (through the domain, as dispatch writes it).
    async fn dispatched(&self, quantity: u32) -> Order {
        let paid = self.place_paid(&[("poster-30x40", quantity)], "AT").await;
        let (rendered, _) = self.render(&paid, None).await;
        let Dispatch::ToPlant { next, event } = rendered
            .dispatch(Catalog::builtin(), &BTreeMap::new(), self.clock.now())
            .unwrap()
        else {
            panic!("held");
        };
        self.store
            .transition_counted(&next, &rendered, vec![event], "muc", i64::from(quantity))
            .await
            .unwrap();
        self.published().await;
        next
    }

    fn report(&self, order: &Order, job: usize, status: JobState) -> String {
        let production = order.production.as_ref().unwrap();
        serde_json::to_string(&JobStatusReport {
            job_id: production.jobs[job].job_id.clone(),
            plant: production.plant.clone(),
            tenant: order.tenant.clone(),
            order_id: order.id.clone(),
            status,
            at: self.clock.now(),
            carrier: (status == JobState::Shipped).then(|| "DHL".into()),
            tracking: (status == JobState::Shipped).then(|| format!("JJD00{job}")),
            reason: (status == JobState::Failed).then(|| "printhead failure".into()),
        })
        .unwrap()
    }

    async fn apply(&self, order: &Order, job: usize, status: JobState) -> Outcome {
        self.handler
            .handle(&self.report(order, job, status))
            .await
            .unwrap()
    }

    async fn open_jobs(&self) -> i64 {
        self.store.open_jobs(&["muc".into()]).await.unwrap()["muc"]
    }
}

#[tokio::test]
async fn an_order_follows_its_jobs_to_shipped() {
    let env = setup().await;
    let order = env.dispatched(2).await;
    let handle = |job, status| env.apply(&order, job, status);
    assert_eq!(
        handle(0, JobState::Accepted).await,
        Outcome::Applied {
            events: vec!["OrderInProduction".into()]
        }
    );
    assert_eq!(env.reload(&order).await.state, OrderState::InProduction);
    assert_eq!(
        handle(0, JobState::Accepted).await,
        Outcome::NoChange,
        "duplicate"
    );
    for status in [
        JobState::Printing,
        JobState::Printed,
        JobState::Packed,
        JobState::Shipped,
    ] {
        handle(0, status).await;
    }
    assert_eq!(
        handle(0, JobState::Printed).await,
        Outcome::NoChange,
        "stale"
    );
    assert_eq!(env.open_jobs().await, 1);
    for status in [JobState::Accepted, JobState::Printed] {
        handle(1, status).await;
    }
    assert_eq!(env.reload(&order).await.state, OrderState::Printed);
    assert_eq!(
        handle(1, JobState::Shipped).await,
        Outcome::Applied {
            events: vec!["OrderShipped".into()]
        }
    );
    let shipped = env.reload(&order).await;
    assert_eq!(shipped.state, OrderState::Shipped);
    assert_eq!(env.open_jobs().await, 0);
    // The plants view: two jobs shipped today (a stale or duplicate report
    // counts nothing), and the agent's last report is the last handled.
    let today = env.clock.now().to_offset(time::UtcOffset::UTC).date();
    let activity = env
        .store
        .plant_activity(&["muc".into()], today)
        .await
        .unwrap();
    assert_eq!(activity["muc"].shipped, 2);
    let millis = |t: time::OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
    assert_eq!(
        activity["muc"].last_report.map(millis),
        Some(millis(env.clock.now())),
        "kept to the millisecond"
    );
    handle(1, JobState::Shipped).await;
    let again = env
        .store
        .plant_activity(&["muc".into()], today)
        .await
        .unwrap();
    assert_eq!(again["muc"].shipped, 2, "a duplicate ships nothing more");
    assert_eq!(env.published().await, ["OrderInProduction", "OrderShipped"]);
    // The OrderShipped event carries both tracking numbers.
    let events = env.bus.events_of(&order.tenant, &order.id).await.unwrap();
    let shipped_event = events.last().unwrap();
    let tracking: Vec<&str> = shipped_event.data["shipments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tracking"].as_str().unwrap())
        .collect();
    assert_eq!(tracking, ["JJD000", "JJD001"]);
}

#[tokio::test]
async fn concurrent_reports_of_one_orders_jobs_all_count() {
    let env = setup().await;
    let order = env.dispatched(12).await;
    let bodies: Vec<String> = (0..12)
        .flat_map(|job| {
            [JobState::Accepted, JobState::Shipped]
                .into_iter()
                .map(move |s| (job, s))
        })
        .map(|(job, s)| env.report(&order, job, s))
        .collect();
    // All polled together on this task: their reads and writes interleave.
    let results = futures::future::join_all(bodies.iter().map(|b| env.handler.handle(b))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = env.reload(&order).await;
    assert_eq!(done.state, OrderState::Shipped);
    assert!(
        done.production
            .unwrap()
            .jobs
            .iter()
            .all(|j| j.status == Some(JobState::Shipped))
    );
    assert_eq!(env.open_jobs().await, 0);
    assert_eq!(env.published().await, ["OrderInProduction", "OrderShipped"]);
}

#[tokio::test]
async fn a_failed_job_holds_the_order_and_closes_the_job() {
    let env = setup().await;
    let order = env.dispatched(2).await;
    env.handler
        .handle(&env.report(&order, 0, JobState::Printing))
        .await
        .unwrap();
    let outcome = env
        .handler
        .handle(&env.report(&order, 1, JobState::Failed))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied {
            events: vec!["ProductionFailed".into(), "OrderOnHold".into()]
        }
    );
    let held = env.reload(&order).await;
    assert_eq!(held.state, OrderState::OnHold);
    assert!(held.hold.unwrap().reason.contains("printhead failure"));
    assert_eq!(env.open_jobs().await, 1);
    // The other job still counts down when it ships; the hold stays.
    env.handler
        .handle(&env.report(&order, 0, JobState::Shipped))
        .await
        .unwrap();
    assert_eq!(env.open_jobs().await, 0);
    assert_eq!(env.reload(&order).await.state, OrderState::OnHold);
}

#[tokio::test]
async fn reports_that_cannot_be_applied_are_rejected_for_the_dead_letter_queue() {
    let env = setup().await;
    let order = env.dispatched(1).await;
    let good = env.report(&order, 0, JobState::Accepted);
    let mut other_plant: serde_json::Value = serde_json::from_str(&good).unwrap();
    other_plant["plant"] = "btf".into();
    let mut no_order = other_plant.clone();
    no_order["plant"] = "muc".into();
    no_order["order_id"] = printworks::domain::order::OrderId::new().to_string().into();
    for body in [
        "not json".to_string(),
        other_plant.to_string(),
        no_order.to_string(),
    ] {
        let err = env.handler.handle(&body).await.unwrap_err();
        assert!(matches!(err, Failure::Rejected(_)), "{body}: {err}");
    }
    assert_eq!(
        env.reload(&order).await.version,
        order.version,
        "nothing written"
    );

    let mut batch = SqsEvent::default();
    for (id, body) in [("good", good), ("bad", "{}".to_string())] {
        let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body);
        batch.records.push(m);
    }
    let response = env.handler.handle_sqs(batch).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["bad"]);
    assert_eq!(env.reload(&order).await.state, OrderState::InProduction);
}
