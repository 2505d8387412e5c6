//! The reconciler on the local adapters (SQLite, the local bus), its clock
//! moved by hand. The same repairs on DynamoDB Local are
//! `aws_emulator::emulator_the_reconciler_*` in `tests/`.

use super::*;
use printworks::domain::events::EventType;
use printworks::domain::ops::{Stage, stage_of};
use printworks::ports::OpsStore;
use printworks::testing::LocalEnv;
use std::time::Duration;

fn reconciler(env: &LocalEnv) -> Reconciler {
    Reconciler::new(
        &Config::default(),
        env.store.clone(),
        env.store.clone(),
        Arc::new(env.bus.clone()),
        env.clock.clone(),
    )
}

const MIN: Duration = Duration::from_secs(60);

/// The events the outbox holds, without relaying them.
async fn outbox(env: &LocalEnv) -> Vec<printworks::domain::events::EventEnvelope> {
    env.store
        .unpublished(env.now() + Duration::from_secs(1), 1000)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idle_paid_order_is_handed_to_render_once_even_by_two_runs_at_once() {
    let env = LocalEnv::new().await;
    env.subscribe_all().await;
    let order = env.place_paid(&[("poster-30x40", 1)], "DE").await;
    env.published().await;
    env.clock.advance(14 * MIN);
    let early = reconciler(&env).run().await.unwrap();
    assert_eq!(early, Report::default(), "nothing before the deadline");

    env.clock.advance(2 * MIN);
    let (a, b) = (reconciler(&env), reconciler(&env));
    let (ra, rb) = tokio::join!(a.run(), b.run());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.rendered_again + rb.rendered_again, 1, "{ra:?} {rb:?}");
    let events = outbox(&env).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_type, EventType::OrderNudged);
    assert_eq!(stage_of(&events[0]), Some(Stage::Render));
    let stored = env.reload(&order).await;
    assert_eq!(stored.watch.as_ref().unwrap().nudges, 1);
    assert_eq!(env.published().await, vec!["OrderNudged"]);
    // Just handed over: the next run leaves it.
    assert_eq!(reconciler(&env).run().await.unwrap().rendered_again, 0);
}

#[tokio::test]
async fn a_rendered_order_goes_to_dispatch_and_an_order_past_its_deadline_is_announced_once() {
    let env = LocalEnv::new().await;
    env.subscribe_all().await;
    let paid = env.place_paid(&[("poster-30x40", 1)], "DE").await;
    let (rendered, _) = env.render(&paid, None).await;
    env.published().await;
    let mut announced = 0;
    let mut handed = 0;
    for _ in 0..6 {
        env.clock.advance(15 * MIN);
        let report = reconciler(&env).run().await.unwrap();
        handed += report.dispatched_again;
        announced += report.stuck;
    }
    assert_eq!(handed, 6, "every 15 minutes");
    assert_eq!(announced, 1, "stuck once, after an hour in rendered");
    let published = env.published().await;
    assert_eq!(
        published.iter().filter(|t| *t == "OrderStuck").count(),
        1,
        "{published:?}"
    );
    let stored = env.reload(&rendered).await;
    assert!(stored.is_stuck());
    let attention = env.store.needing_attention(10).await.unwrap();
    assert_eq!(attention.len(), 1);
    assert_eq!(attention[0].id, rendered.id);
}

#[tokio::test]
async fn jobs_the_plant_has_not_taken_get_fresh_urls_before_theirs_expire() {
    let env = LocalEnv::new().await;
    env.subscribe_all().await;
    let order =
        printworks::testing::stored_dispatched(&*env.store, &[("poster-30x40", 2)], env.now())
            .await;
    env.published().await;
    env.clock.advance(10 * 60 * MIN);
    let report = reconciler(&env).run().await.unwrap();
    assert_eq!(report.urls_refreshed, 0, "{report:?}");
    env.clock.advance(60 * MIN);
    let report = reconciler(&env).run().await.unwrap();
    assert_eq!(report.urls_refreshed, 1, "{report:?}");
    let events = outbox(&env).await;
    let nudge = events
        .iter()
        .find(|e| e.event_type == EventType::OrderNudged)
        .expect("a hand-over to dispatch");
    assert_eq!(stage_of(nudge), Some(Stage::Dispatch));
    assert_eq!(nudge.data["attempt"], order.attempt);
    // Not again until the fresh URLs near their own expiry.
    env.clock.advance(60 * MIN);
    assert_eq!(reconciler(&env).run().await.unwrap().urls_refreshed, 0);
}

#[tokio::test]
async fn outbox_events_left_unpublished_are_published_after_five_minutes() {
    let env = LocalEnv::new().await;
    env.subscribe_all().await;
    env.place_paid(&[("poster-30x40", 1)], "DE").await;
    // No relay ran: the placement's events wait in the outbox.
    let waiting = outbox(&env).await.len();
    assert_eq!(waiting, 2, "OrderPlaced and OrderPaid");
    env.clock.advance(4 * MIN);
    assert_eq!(reconciler(&env).run().await.unwrap().republished, 0);
    env.clock.advance(2 * MIN);
    let (a, b) = (reconciler(&env), reconciler(&env));
    let (ra, rb) = tokio::join!(a.run(), b.run());
    let republished = ra.unwrap().republished + rb.unwrap().republished;
    assert!(
        (2..=4).contains(&republished),
        "at least once: {republished}"
    );
    assert!(outbox(&env).await.is_empty());
    let mut types =
        printworks::testing::published(&env.bus, printworks::testing::local_env::ALL).await;
    types.sort();
    types.dedup();
    assert_eq!(types, vec!["OrderPaid", "OrderPlaced"]);
}

#[tokio::test]
async fn orders_waiting_for_the_customer_or_a_person_are_left_alone() {
    let env = LocalEnv::new().await;
    let paid = env.place_paid(&[("poster-30x40", 1)], "DE").await;
    let mut held = paid.successor(env.now());
    held.state = printworks::domain::state::OrderState::OnHold;
    env.store
        .transition(&held, &paid, Vec::new())
        .await
        .unwrap();
    env.bus.relay_outbox(100).await.unwrap();
    env.clock.advance(Duration::from_secs(30 * 86_400));
    let report = reconciler(&env).run().await.unwrap();
    assert_eq!(report, Report::default());
}
