//! Back-office benchmark: ORDERS orders (100,000) in the local SQLite
//! store over DAYS days (90), from three tenants in EUR and CHF; their
//! statistics kept by the stats projection (every order's `OrderPaid`, a
//! hold for one in ten, the first shipment of the rest, through the same
//! `StatsStore::apply` the stats consumer calls); then the operator API's
//! `GET /v1/ops/stats` over loopback HTTP, as the console asks it: the
//! last 30 days, the whole range, and one tenant's. Prints the time to
//! fill the store and, per query, the median, p95 and worst of ROUNDS
//! (50) requests and the response size; and the search page's
//! `POST /v1/ops/search` (newest, by id, reference, e-mail, tenant with
//! state and days, a day's second page) the same way. Each order's
//! confirmation e-mail is claimed against its tenant's daily cap, so the
//! statistics also carry the notifications against the caps.
//!
//! The orders are placed with the store's own `place` (the order, its
//! idempotency record and its events in one transaction), so the
//! statistics' tables sit beside 100,000 orders and their outbox as in
//! `printworks up`. The shipments' facts are given to the projection
//! directly (plant, products, lead time from the order), not made by
//! running 90,000 orders through render and the plants.
//!
//! Environment: `ORDERS` (100000), `DAYS` (90), `ROUNDS` (50),
//! `BENCH_TMP` (default `<workspace>/target/bench-back-office-tmp`).

use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::store::SqliteStore;
use printworks::clock::SystemClock;
use printworks::domain::catalog::Catalog;
use printworks::domain::order::Order;
use printworks::domain::stats::{Fact, lead_minutes};
use printworks::domain::tenant::{Tenant, TenantId};
use printworks::ports::{
    EmailMessage, IdempotencyRecord, NewOrder, NotificationRecord, NotificationStatus,
    NotificationStore, OpsStore, OrderStore, Outgoing, StatsStore, StoredResponse,
};
use printworks::testing::{b2b_tenant, order_request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The confirmation e-mail of `order`, as notify would record it.
fn notification(order: &Order, at: time::OffsetDateTime) -> NotificationRecord {
    NotificationRecord {
        id: format!("ntf-{}", order.id),
        tenant: order.tenant.clone(),
        order_id: order.id.clone(),
        event_id: format!("evt-{}", order.id),
        event_type: printworks::domain::events::EventType::OrderPlaced,
        message: Outgoing::Email(Box::new(EmailMessage {
            from_name: "Shop".into(),
            from_address: "orders@shop.example".into(),
            reply_to: None,
            to_name: order.customer.name.clone(),
            to_address: order.customer.email.clone(),
            subject: format!("Order {}", order.id),
            text: String::new(),
            html: String::new(),
            language: "en".into(),
            message_id: format!("ntf-{}@shop.example", order.id),
        })),
        status: NotificationStatus::Retry,
        attempts: 0,
        created_at: at,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let orders: usize = env_or("ORDERS", 100_000);
    let days: i64 = env_or("DAYS", 90);
    let rounds: usize = env_or("ROUNDS", 50);
    let tmp = std::env::var("BENCH_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-back-office-tmp")
        });
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let db = Arc::new(Db::open(tmp.join("pw.sqlite"), Durability::Normal)?);
    let store = Arc::new(SqliteStore::new(db.clone()));

    let catalog = Catalog::builtin();
    let tenants: Vec<Tenant> = ["acme-prints", "bravo-photo", "cielo-cards"]
        .iter()
        .map(|id| Tenant {
            id: TenantId::parse(id).unwrap(),
            ..b2b_tenant()
        })
        .collect();
    let carts: [&[(&str, u32)]; 4] = [
        &[("poster-30x40", 1)],
        &[("photo-10x15", 12), ("poster-50x70", 1)],
        &[("canvas-40x60", 1)],
        &[("card-a6-folded", 25)],
    ];
    let plants = ["muc", "btf"];
    let countries = ["DE", "AT", "FR", "CH", "NL"];
    // Requests are the costly part of placing: a few hundred, reused.
    let requests: Vec<_> = carts
        .iter()
        .flat_map(|cart| countries.iter().map(|c| order_request(catalog, cart, c)))
        .collect();
    let mut rng = StdRng::seed_from_u64(7);
    let now = time::OffsetDateTime::now_utc();
    let start = now - time::Duration::days(days);
    let step = (days * 86_400) as f64 / orders as f64;
    let filled = Instant::now();
    let mut pending = Vec::new();
    for i in 0..orders {
        let at = start + time::Duration::seconds_f64(step * i as f64);
        let tenant = &tenants[i % tenants.len()];
        let mut request = requests[rng.random_range(0..requests.len())].clone();
        // A reference each, and 5,000 customers with 20 orders each.
        request.reference = Some(format!("PO-{i:06}"));
        request.customer.email = format!("customer-{}@example.com", i % 5_000);
        let (order, events) = Order::place(catalog, tenant, &request, at)
            .map_err(|e| anyhow::anyhow!("placing: {e:?}"))?;
        let mut facts: Vec<(String, Fact)> = events
            .iter()
            .filter_map(|e| Some((e.id.clone(), printworks::domain::stats::fact(e).ok()??)))
            .collect();
        if rng.random_ratio(1, 10) {
            facts.push((
                format!("hold-{}", order.id),
                Fact::Held {
                    tenant: tenant.id.clone(),
                    day: at.date(),
                    code: ["unprintable_resolution", "no_plant", "production_failed"]
                        [rng.random_range(0..3)]
                    .into(),
                },
            ));
        } else {
            let shipped = (at + time::Duration::minutes(rng.random_range(240..7_200))).min(now);
            facts.push((
                format!("ship-{}", order.id),
                Fact::Shipped {
                    order: order.id.clone(),
                    day: shipped.date(),
                    plant: plants[rng.random_range(0..plants.len())].into(),
                    skus: order.items.iter().map(|i| i.sku.clone()).collect(),
                    minutes: lead_minutes(at, shipped),
                },
            ));
        }
        // Its confirmation e-mail, claimed against the tenant's daily cap
        // as notify claims it: the statistics' notifications.
        let mail = notification(&order, at);
        let store = store.clone();
        pending.push(tokio::spawn(async move {
            store
                .place(NewOrder {
                    idempotency: IdempotencyRecord {
                        key: order.id.to_string(),
                        request_hash: "bench".into(),
                        response: StoredResponse {
                            status: 201,
                            body: "{}".into(),
                        },
                    },
                    order,
                    events,
                })
                .await?;
            for (id, fact) in &facts {
                store.apply(id, fact).await?;
            }
            store
                .claim(&mail, 5_000, at, Duration::from_secs(60))
                .await?;
            anyhow::Ok(())
        }));
        // The writer groups what is queued into one transaction: keep a
        // few hundred writes in flight.
        if pending.len() >= 512 {
            for p in pending.drain(..) {
                p.await??;
            }
        }
    }
    for p in pending {
        p.await??;
    }
    println!(
        "filled: {orders} orders over {days} days, with their statistics, in {:.1} s ({} orders in the store)",
        filled.elapsed().as_secs_f64(),
        store.count_orders().await?
    );

    // The operator API over loopback HTTP, as `printworks up` serves it.
    let (_, key) =
        printworks_local::operators::add(store.as_ref(), "bench", "support", "local", now).await?;
    let ops = ops_api::App::new(
        ops_api::Config::for_env("local")?,
        ops_api::Ops {
            stats: Some(store.clone()),
            notifications: Some(store.clone()),
            ..ops_api::Ops::new(
                Arc::new(catalog.clone()),
                store.clone(),
                Arc::new(SystemClock),
            )
        },
        store.clone(),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        axum::serve(listener, ops_api::router(Arc::new(ops)))
            .await
            .unwrap()
    });
    let client = reqwest::Client::new();
    let today = now.date();
    let queries = [
        ("the last 30 days, every tenant", String::new()),
        (
            "the whole range, every tenant",
            format!("from={}&to={today}", start.date()),
        ),
        (
            "the whole range, one tenant",
            format!("from={}&to={today}&tenant=bravo-photo", start.date()),
        ),
    ];
    let timed = |times: &mut Vec<Duration>| {
        times.sort();
        format!(
            "median {:>7.1} ms  p95 {:>7.1} ms  worst {:>7.1} ms",
            ms(times[times.len() / 2]),
            ms(times[(times.len() * 95).div_ceil(100).max(1) - 1]),
            ms(times[times.len() - 1]),
        )
    };
    // The search page's requests: POST /v1/ops/search.
    let last_id = store
        .search(&printworks::ports::SearchQuery {
            limit: 1,
            ..Default::default()
        })
        .await?
        .and_then(|p| p.orders.into_iter().next())
        .map(|o| o.id.to_string())
        .unwrap_or_default();
    let day = (start + time::Duration::days(days / 2)).date();
    let searches = [
        ("the newest orders", serde_json::json!({})),
        ("by order id", serde_json::json!({"order_id": last_id})),
        (
            "by reference",
            serde_json::json!({"reference": "PO-050000"}),
        ),
        (
            "by e-mail (20 orders)",
            serde_json::json!({"email": "Customer-4242@example.com"}),
        ),
        (
            "tenant, state, 7 days",
            serde_json::json!({"tenant": "bravo-photo", "state": "paid", "from": (today - time::Duration::days(6)).to_string(), "to": today.to_string()}),
        ),
        (
            "one day, page 2",
            serde_json::json!({"from": day.to_string(), "to": day.to_string(), "page": 2}),
        ),
    ];
    println!("POST /v1/ops/search, {rounds} requests each (after one warm-up):");
    for (what, body) in searches {
        let url = format!("{base}/v1/ops/search");
        let post = |body: serde_json::Value| {
            let (client, url, key) = (client.clone(), url.clone(), key.full.clone());
            async move {
                let response = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status() == 200,
                    "{}: {}",
                    response.status(),
                    response.text().await?
                );
                anyhow::Ok(response.json::<serde_json::Value>().await?)
            }
        };
        // Page 2: the first page's cursor, as the console's "next page".
        let body = if body.get("page").is_some() {
            let mut first = body.clone();
            first.as_object_mut().map(|o| o.remove("page"));
            let answer = post(first.clone()).await?;
            first["cursor"] = answer["next"].clone();
            first
        } else {
            body
        };
        let found = post(body.clone()).await?["orders"]
            .as_array()
            .map_or(0, Vec::len);
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            post(body.clone()).await?;
            times.push(t.elapsed());
        }
        println!("  {what:<32} {}  ({found} orders)", timed(&mut times));
    }
    println!("GET /v1/ops/stats, {rounds} requests each (after one warm-up):");
    for (what, query) in queries {
        let url = format!("{base}/v1/ops/stats?{query}");
        let get = || async {
            let response = client.get(&url).bearer_auth(&key.full).send().await?;
            anyhow::ensure!(response.status() == 200, "{}", response.status());
            anyhow::Ok(response.bytes().await?.len())
        };
        let size = get().await?;
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            get().await?;
            times.push(t.elapsed());
        }
        println!("  {what:<32} {}  ({size} bytes)", timed(&mut times));
    }
    db.close();
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
