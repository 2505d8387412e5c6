//! The projection on the real SQLite store and local bus: events reach the
//! `stats` queue through the bus's subscription filter, as on AWS through
//! SNS's, and are counted once however they are delivered.

use super::*;
use printworks::domain::catalog::Catalog;
use printworks::domain::order::Order;
use printworks::domain::production::{Dispatch, JobState, JobStatusReport};
use printworks::domain::state::OrderState;
use printworks::domain::stats::{Report, STATS_EVENTS, StatsQuery};
use printworks::domain::tenant::{Tenant, TenantId};
use printworks::ports::{NewOrder, OrderStore, ProductionStore};
use printworks::testing::{LocalEnv, b2b_tenant, local_env::queue_config, order_request};
use printworks::topology::STATS;
use production_events::ProductionEvents;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use time::{Date, Duration, OffsetDateTime};

struct Env {
    local: LocalEnv,
    stats: Stats,
    production: ProductionEvents,
}

async fn setup(start: OffsetDateTime) -> Env {
    let local = LocalEnv::starting_at(start).await;
    local
        .bus
        .declare_queue(STATS.name, queue_config())
        .await
        .unwrap();
    local
        .bus
        .subscribe(STATS.name, Some(&STATS_EVENTS))
        .await
        .unwrap();
    let stats = Stats::new(local.store.clone());
    let production = ProductionEvents::new(
        local.store.clone(),
        local.store.clone(),
        local.clock.clone(),
    );
    Env {
        local,
        stats,
        production,
    }
}

impl Env {
    /// Relays the outbox and takes every message off the `stats` queue.
    async fn delivered(&self) -> Vec<String> {
        let bus = &self.local.bus;
        bus.relay_outbox(100_000).await.unwrap();
        let mut bodies = Vec::new();
        loop {
            let batch = bus.receive(STATS.name, 10).await.unwrap();
            if batch.is_empty() {
                return bodies;
            }
            for m in batch {
                bus.delete(&m.receipt).await.unwrap();
                bodies.push(m.body);
            }
        }
    }

    async fn report(&self, query: &StatsQuery) -> Report {
        Report::from_counts(query, self.local.store.counts(query).await.unwrap())
    }

    async fn place(&self, tenant: &Tenant, items: &[(&str, u32)], country: &str) -> Order {
        let request = order_request(Catalog::builtin(), items, country);
        let (order, events) =
            Order::place(Catalog::builtin(), tenant, &request, self.local.now()).unwrap();
        self.local
            .place(NewOrder {
                idempotency: printworks::ports::IdempotencyRecord {
                    key: order.id.to_string(),
                    request_hash: "stats".into(),
                    response: printworks::ports::StoredResponse {
                        status: 201,
                        body: "{}".into(),
                    },
                },
                order,
                events,
            })
            .await
    }

    /// Renders and dispatches a paid order as render and dispatch write
    /// it; the order, dispatched or held (no plant makes all of it).
    async fn dispatch(&self, paid: &Order) -> Order {
        let (rendered, _) = self.local.render(paid, None).await;
        let now = self.local.now();
        match rendered
            .dispatch(Catalog::builtin(), &BTreeMap::new(), now)
            .unwrap()
        {
            Dispatch::ToPlant { next, event } => {
                let production = next.production.as_ref().unwrap();
                let (plant, jobs) = (production.plant.clone(), production.jobs.len() as i64);
                self.local
                    .store
                    .transition_counted(&next, &rendered, vec![event], &plant, jobs)
                    .await
                    .unwrap();
                next
            }
            Dispatch::Hold { next, event } => {
                self.local
                    .store
                    .transition(&next, &rendered, vec![event])
                    .await
                    .unwrap();
                next
            }
        }
    }

    /// Every job of a dispatched order shipped, reported by its plant.
    async fn ship(&self, dispatched: &Order) {
        let production = dispatched.production.as_ref().unwrap();
        for (i, job) in production.jobs.iter().enumerate() {
            let report = JobStatusReport {
                job_id: job.job_id.clone(),
                plant: production.plant.clone(),
                tenant: dispatched.tenant.clone(),
                order_id: dispatched.id.clone(),
                status: JobState::Shipped,
                at: self.local.now(),
                carrier: Some("DHL".into()),
                tracking: Some(format!("JJD{i:04}")),
                reason: None,
            };
            self.production
                .handle(&serde_json::to_string(&report).unwrap())
                .await
                .unwrap();
        }
    }
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: TenantId::parse(id).unwrap(),
        ..b2b_tenant()
    }
}

/// The nearest-rank percentile of raw values, computed apart from the
/// domain's bucketed one.
fn nearest_rank(values: &mut [i64], p: usize) -> i64 {
    values.sort_unstable();
    let rank = (p * values.len()).div_ceil(100).max(1);
    values[rank - 1]
}

/// The figures recounted from the orders themselves: revenue under the day
/// each order was paid (placed: these tenants pay by invoice), holds under
/// the day each held order was held, lead times of the shipped ones.
struct Recount {
    revenue: BTreeMap<(Date, String, String), (i64, i64, i64)>,
    holds: BTreeMap<(Date, String, String), i64>,
    lead: BTreeMap<(String, String), Vec<i64>>,
}

fn recount(orders: &[Order], from: Date, to: Date, tenant: Option<&str>) -> Recount {
    let mut r = Recount {
        revenue: BTreeMap::new(),
        holds: BTreeMap::new(),
        lead: BTreeMap::new(),
    };
    let within = |day: Date| from <= day && day <= to;
    for o in orders {
        let of_tenant = tenant.is_none_or(|t| t == o.tenant.as_str());
        let placed = o.created_at.date();
        if of_tenant && within(placed) {
            let e = r
                .revenue
                .entry((placed, o.tenant.to_string(), o.currency.code().into()))
                .or_default();
            e.0 += 1;
            e.1 += o.totals.total.amount;
            e.2 += o.totals.vat.amount;
        }
        if o.state == OrderState::OnHold && of_tenant && within(o.updated_at.date()) {
            let code = o.hold.as_ref().unwrap().code.clone().unwrap();
            *r.holds
                .entry((o.updated_at.date(), o.tenant.to_string(), code))
                .or_default() += 1;
        }
        if o.state == OrderState::Shipped && within(o.updated_at.date()) {
            let plant = o.production.as_ref().unwrap().plant.clone();
            let minutes = (o.updated_at - o.created_at).whole_minutes();
            let mut skus: Vec<_> = o.items.iter().map(|i| i.sku.clone()).collect();
            skus.sort();
            skus.dedup();
            for sku in skus {
                r.lead
                    .entry((plant.clone(), sku))
                    .or_default()
                    .push(minutes);
            }
        }
    }
    r
}

fn check(report: &Report, mut expected: Recount) {
    let revenue: BTreeMap<_, _> = report
        .revenue
        .iter()
        .map(|l| {
            assert_eq!(l.net, l.gross - l.vat);
            assert_eq!(l.refunded, 0);
            assert_eq!(l.average_order_value, (l.net + l.orders / 2) / l.orders);
            (
                (l.day, l.tenant.to_string(), l.currency.code().to_string()),
                (l.orders, l.gross, l.vat),
            )
        })
        .collect();
    assert_eq!(revenue, expected.revenue);
    let holds: BTreeMap<_, _> = report
        .holds
        .iter()
        .map(|h| ((h.day, h.tenant.to_string(), h.code.clone()), h.holds))
        .collect();
    assert_eq!(holds, expected.holds);
    let lead: BTreeMap<_, _> = report
        .lead_times
        .iter()
        .map(|l| {
            (
                (l.plant.clone(), l.sku.clone()),
                (l.orders, l.p50_minutes, l.p95_minutes),
            )
        })
        .collect();
    let expected_lead: BTreeMap<_, _> = expected
        .lead
        .iter_mut()
        .map(|(k, v)| {
            (
                k.clone(),
                (v.len() as i64, nearest_rank(v, 50), nearest_rank(v, 95)),
            )
        })
        .collect();
    assert_eq!(lead, expected_lead);
}

/// 1,000 orders of three tenants in EUR and CHF over ten days: paid on
/// placement, some held (a photo problem, no plant for the mix), most
/// shipped by their plant hours or days later. Their events reach the
/// projection through the bus, shuffled and each delivered twice; every
/// figure equals the recount from the stored orders, over the whole
/// range, one tenant, and days in the middle.
#[tokio::test]
async fn the_statistics_of_a_thousand_orders_equal_a_recount_from_the_orders() {
    let start = time::macros::datetime!(2026-11-02 06:00 UTC);
    let env = setup(start).await;
    let mut rng = StdRng::seed_from_u64(19);
    let tenants = [
        tenant("acme-prints"),
        tenant("bravo-photo"),
        tenant("cielo-cards"),
    ];
    let carts: [&[(&str, u32)]; 6] = [
        &[("poster-30x40", 1)],
        &[("photo-10x15", 12), ("poster-50x70", 1)],
        &[("canvas-40x60", 1)],
        &[("card-a6-folded", 25)],
        &[("poster-20x30", 2), ("canvas-30x40", 1)],
        // No plant makes both: held `no_plant` at dispatch.
        &[("canvas-50x70", 1), ("card-a6-folded", 1)],
    ];
    let countries = ["DE", "AT", "FR", "CH", "NL"];
    let mut to_ship = Vec::new();
    let mut placed = Vec::new();
    for i in 0..1000 {
        env.local
            .clock
            .advance(std::time::Duration::from_secs(rng.random_range(60..1400)));
        let tenant = &tenants[i % 3];
        let cart = carts[rng.random_range(0..carts.len())];
        let country = countries[rng.random_range(0..countries.len())];
        let paid = env.place(tenant, cart, country).await;
        placed.push(paid.clone());
        if rng.random_ratio(1, 10) {
            let (held, event) = paid
                .hold_unprintable(
                    &paid.items[0],
                    0,
                    &printworks::domain::print::Unprintable::UploadMissing,
                    env.local.now(),
                )
                .unwrap();
            env.local
                .store
                .transition(&held, &paid, vec![event])
                .await
                .unwrap();
            continue;
        }
        let dispatched = env.dispatch(&paid).await;
        if dispatched.state == OrderState::Dispatched && !rng.random_ratio(1, 8) {
            to_ship.push(dispatched);
        }
    }
    // Shipments over the following days, in an order of their own.
    to_ship.shuffle(&mut rng);
    for dispatched in &to_ship {
        env.local
            .clock
            .advance(std::time::Duration::from_secs(rng.random_range(30..1500)));
        env.ship(dispatched).await;
    }
    let end = env.local.now();

    // Every event delivered twice, in any order.
    let mut bodies = env.delivered().await;
    let events = bodies.len();
    bodies.extend(bodies.clone());
    bodies.shuffle(&mut rng);
    let mut counted = 0;
    for body in &bodies {
        if env.stats.handle(body).await.unwrap() == Outcome::Counted {
            counted += 1;
        }
    }
    assert_eq!(counted, events, "each event counted once");

    let mut orders = Vec::new();
    for order in &placed {
        orders.push(env.local.reload(order).await);
    }
    assert_eq!(orders.len(), 1000);
    let shipped = orders
        .iter()
        .filter(|o| o.state == OrderState::Shipped)
        .count();
    let held = orders
        .iter()
        .filter(|o| o.state == OrderState::OnHold)
        .count();
    assert_eq!(shipped, to_ship.len());
    assert!(
        shipped > 500 && held > 100,
        "{shipped} shipped, {held} held"
    );
    assert!((end.date() - start.date()).whole_days() >= 10);

    let whole = StatsQuery::new(start.date(), end.date(), None, None).unwrap();
    let report = env.report(&whole).await;
    assert!(report.revenue.iter().any(|l| l.currency.code() == "CHF"));
    assert!(report.holds.iter().any(|h| h.code == "no_plant"));
    assert!(report.lead_times.iter().any(|l| l.plant == "btf"));
    check(&report, recount(&orders, whole.from, whole.to, None));

    let one = StatsQuery::new(
        start.date(),
        end.date(),
        Some(TenantId::parse("bravo-photo").unwrap()),
        None,
    )
    .unwrap();
    check(
        &env.report(&one).await,
        recount(&orders, one.from, one.to, Some("bravo-photo")),
    );
    let middle = StatsQuery::new(
        start.date() + Duration::days(3),
        start.date() + Duration::days(7),
        None,
        None,
    )
    .unwrap();
    check(
        &env.report(&middle).await,
        recount(&orders, middle.from, middle.to, None),
    );
}

fn envelope(event_type: &str, data: serde_json::Value) -> String {
    serde_json::json!({
        "id": format!("evt_{}", rand::random::<u64>()), "type": event_type,
        "order_id": "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f90", "tenant": "acme-prints",
        "occurred_at": "2026-11-22T10:00:00Z", "data": data,
    })
    .to_string()
}

#[tokio::test]
async fn refunds_count_under_their_day_and_a_second_shipment_of_an_order_counts_no_lead_time() {
    let env = setup(time::macros::datetime!(2026-11-22 10:00 UTC)).await;
    let refund = envelope(
        "PaymentRefunded",
        serde_json::json!({"amount": {"amount": 1250, "currency": "CHF"}, "refunded": {"amount": 1250, "currency": "CHF"}, "full": false}),
    );
    assert_eq!(env.stats.handle(&refund).await.unwrap(), Outcome::Counted);
    assert_eq!(
        env.stats.handle(&refund).await.unwrap(),
        Outcome::AlreadyCounted
    );
    let shipped = |minutes: i64| {
        let placed = time::macros::datetime!(2026-11-22 10:00 UTC) - Duration::minutes(minutes);
        envelope(
            "OrderShipped",
            serde_json::json!({"plant": "muc", "skus": ["poster-30x40"],
                "placed_at": placed.format(&time::format_description::well_known::Rfc3339).unwrap()}),
        )
    };
    assert_eq!(
        env.stats.handle(&shipped(600)).await.unwrap(),
        Outcome::Counted
    );
    // A reprint of the same order ships again: its lead time was counted.
    assert_eq!(
        env.stats.handle(&shipped(9000)).await.unwrap(),
        Outcome::AlreadyCounted
    );
    let day = time::macros::date!(2026 - 11 - 22);
    let report = env
        .report(&StatsQuery::new(day, day, None, None).unwrap())
        .await;
    assert_eq!(report.revenue.len(), 1);
    let line = &report.revenue[0];
    assert_eq!(
        (
            line.orders,
            line.gross,
            line.refunded,
            line.average_order_value
        ),
        (0, 0, 1250, 0)
    );
    assert_eq!(report.lead_times.len(), 1);
    assert_eq!(
        (
            report.lead_times[0].orders,
            report.lead_times[0].p95_minutes
        ),
        (1, 600)
    );
    // Nothing for a plant that shipped nothing, nor on other days.
    let other = StatsQuery::new(day, day, None, Some("btf".into())).unwrap();
    assert!(env.report(&other).await.lead_times.is_empty());
    let before = day.previous_day().unwrap();
    assert_eq!(
        env.report(&StatsQuery::new(before, before, None, None).unwrap())
            .await
            .revenue,
        vec![]
    );
}

#[tokio::test]
async fn what_cannot_be_counted_is_rejected_for_the_dead_letter_queue_and_counts_nothing() {
    let env = setup(time::macros::datetime!(2026-11-22 10:00 UTC)).await;
    for body in [
        "not json".to_string(),
        envelope(
            "OrderPaid",
            serde_json::json!({"amount": {"amount": 100, "currency": "EUR"}}),
        ),
    ] {
        assert!(matches!(
            env.stats.handle(&body).await,
            Err(Failure::Rejected(_))
        ));
    }
    assert_eq!(
        env.stats
            .handle(&envelope("OrderRendered", serde_json::json!({})))
            .await
            .unwrap(),
        Outcome::NotCounted
    );
    let day = time::macros::date!(2026 - 11 - 22);
    let report = env
        .report(&StatsQuery::new(day, day, None, None).unwrap())
        .await;
    assert!(report.revenue.is_empty() && report.lead_times.is_empty() && report.holds.is_empty());
}
