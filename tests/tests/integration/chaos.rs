//! The chaos test: hundreds of orders across tenants, products
//! and both plants through the whole local platform, with the fault switch
//! on (every message delivered twice, acknowledgements lost, the outbox
//! publisher crashing between publish and mark, the blob store and the
//! queues down for a while), and the plants' edge agents running as their
//! own processes (the real `edge-agent` binary), killed with SIGKILL at
//! random moments and restarted. Then it waits for quiet and checks:
//!
//! - every order is in the end state its inputs explain: shipped, cancelled
//!   (the customer cancelled before paying), or on hold with the reason
//!   (a photo too small to print); an operator reprints a job of some
//!   shipped orders (they ship again, in attempt 2) and cancels others as
//!   soon as they are dispatched (cancelled, or shipped if the parcel left
//!   first), through the operator API while the faults are on;
//! - every job of every attempt reached a hot folder exactly once (the
//!   machines' `printed.log`, written by the simulated machines in this
//!   process, which are never killed), and a job of an order cancelled
//!   after dispatch at most once, as its record says (never printed,
//!   printed and stopped, or shipped before the cancel arrived);
//! - exactly one notification per (order, event, channel) (a reprinted
//!   order ships twice: two `OrderShipped`): the ledger, the outbox's send
//!   log and the tenant webhook receiver agree;
//! - the dead-letter queues hold the messages the test poisoned and
//!   nothing else;
//! - the same orders with the faults off end the same way.
//!
//! It prints the counts it checked (to stderr, also when it passes). `PRINTWORKS_CHAOS_ORDERS` changes the
//! number of orders (500 by default); `PRINTWORKS_CHAOS_LOG=1` shows the
//! platform's warnings (every injected fault and retry).

use axum::extract::State;
use edge_agent::config::Folders;
use edge_agent::driver::SimulatedMachine;
use printworks::adapters::local::outbox::OutboxFolder;
use printworks::clock::SystemClock;
use printworks::domain::locale::{CountryCode, Locale};
use printworks::domain::money::Currency;
use printworks::domain::notify::{NotifySettings, TenantWebhook};
use printworks::domain::order::{Order, OrderId};
use printworks::domain::production::JobState;
use printworks::domain::state::OrderState;
use printworks::domain::tenant::{PaymentSetup, Tenant, TenantId, TenantKind};
use printworks::faults::{FaultPlan, Faults, Outage};
use printworks::ports::NotificationStatus;
use printworks_local::payments::{self, PayEvent};
use printworks_local::platform::{self, NotifyOptions, Options, PlantOptions};
use printworks_tests::photo;
use reqwest::Client;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const PLANTS: [&str; 2] = ["muc", "btf"];
const QUEUES: [&str; 6] = [
    "render",
    "dispatch",
    "notify",
    "plant-events",
    "plant-muc-jobs",
    "plant-btf-jobs",
];
/// Bodies the test sends to a queue on purpose: they can never be handled,
/// so they must end in that queue's dead-letter queue, and only they may.
const POISON: [(&str, &str); 3] = [
    ("render", "poison: not an event envelope"),
    ("dispatch", "{\"poison\": \"an object, not an event\"}"),
    ("plant-events", "poison: not a job status report"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// demo-b2b, paid by invoice: shipped.
    Invoice,
    /// chaos-b2b (a tenant webhook, customer e-mail on), by invoice: shipped.
    Webhooked,
    /// demo-brand (B2C), paid by a signed Stripe webhook: shipped.
    Paid,
    /// demo-brand, cancelled by the customer before paying: cancelled.
    Cancelled,
    /// demo-b2b with a photo far too small: on hold.
    TooSmall,
    /// demo-b2b by invoice; once shipped, an operator reprints its first
    /// job: shipped again, in attempt 2.
    Reprinted,
    /// demo-b2b by invoice; an operator cancels it once it is dispatched:
    /// cancelled (or shipped, if it shipped before the cancel).
    Stopped,
    /// demo-b2b by invoice, naming an upload that never arrived: held; the
    /// customer replaces the photo through the tenant API mid-run:
    /// shipped, in attempt 2.
    Fixed,
    /// demo-brand, paid by a signed Stripe webhook, then paid again (a
    /// second PaymentIntent): shipped, the second payment flagged and owed
    /// back.
    PaidTwice,
}

#[derive(Debug, Clone)]
struct Spec {
    kind: Kind,
    sku: &'static str,
    country: CountryCode,
    quantity: u32,
}

/// The orders, a function of their number only, so both runs place the
/// same ones.
fn scenario(n: usize) -> Vec<Spec> {
    (0..n)
        .map(|i| {
            let kind = match i % 20 {
                0..=6 => Kind::Invoice,
                7 => Kind::Fixed,
                8 => Kind::Reprinted,
                9 => Kind::Stopped,
                10..=13 => Kind::Webhooked,
                14 | 15 => Kind::Paid,
                16 => Kind::PaidTwice,
                17 | 18 => Kind::Cancelled,
                _ => Kind::TooSmall,
            };
            // Canvas is made only in btf; CH and AT are served by muc,
            // NL and FR by btf; DE by either (the less loaded).
            let sku = match i % 10 {
                0 => "poster-20x30",
                5 => "canvas-30x40",
                _ => "photo-10x15",
            };
            let country = match (kind, i % 3) {
                (Kind::Webhooked, 0) => CountryCode::FR,
                (Kind::Webhooked, _) => CountryCode::NL,
                (_, 0) => CountryCode::CH,
                (_, 1) => CountryCode::AT,
                _ => CountryCode::DE,
            };
            let sku =
                if sku == "canvas-30x40" && matches!(country, CountryCode::CH | CountryCode::AT) {
                    "poster-20x30"
                } else {
                    sku
                };
            Spec {
                kind,
                sku,
                country,
                quantity: 1 + (i % 5 == 0) as u32,
            }
        })
        .collect()
}

/// What the operator did to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acted {
    /// Reprinted its first job once it shipped.
    Reprinted,
    /// Cancelled it after dispatch.
    Cancelled,
    /// Found it shipped before the cancel (no cancel, or a 409).
    ShippedFirst,
    /// The customer replaced the photo it was held for.
    Fixed,
}

/// What a run ended with, by order number.
#[derive(Debug, Default, PartialEq)]
struct Ends {
    /// state, hold reason
    states: BTreeMap<usize, (String, Option<String>)>,
    /// (event type, channel) of the notifications sent, with how many
    /// (orders an operator stopped: left out, their end is a race)
    notifications: BTreeMap<usize, BTreeMap<(String, String), usize>>,
    jobs: BTreeMap<usize, usize>,
}

/// Tenant webhooks received, by (order, event id).
type Received = Arc<Mutex<BTreeMap<(String, String), (String, usize)>>>;

async fn receive_webhook(State(received): State<Received>, body: String) -> &'static str {
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let key = (
        v["order_id"].as_str().unwrap_or("?").to_string(),
        v["id"].as_str().unwrap_or("?").to_string(),
    );
    let ty = v["type"].as_str().unwrap_or("?").to_string();
    received.lock().unwrap().entry(key).or_insert((ty, 0)).1 += 1;
    "ok"
}

/// The real `edge-agent` binary, next to this test's executable (built by
/// `cargo test --workspace`: the edge-agent crate's tests need it).
fn edge_agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("edge-agent");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p edge-agent` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// One plant's agent process.
struct Agent {
    plant: &'static str,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn new(data_dir: &Path, base: &str, plant: &'static str) -> Agent {
        // The platform's own agent configuration (its folders and queues),
        // quicker: short polls, a 10 s visibility timeout, fast shipping.
        let plants = PlantOptions {
            ship_delay: Duration::from_millis(100),
            ..PlantOptions::default()
        };
        let config = edge_agent::Config {
            wait_secs: 1,
            visibility_secs: 10,
            report_backoff_max_secs: 1,
            ..platform::agent_config(data_dir, base, plant, &plants)
        };
        let dir = platform::plant_dir(data_dir, plant);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        config.write(&path).unwrap();
        let mut agent = Agent {
            plant,
            config: path,
            log: dir.join("agent.log"),
            child: None,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = edge_agent::command(&edge_agent_binary(), &self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Fails the test if the agent exited by itself (a bad configuration,
    /// a crash): only this test may stop it.
    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "the {} agent exited by itself ({status}):\n{}",
                self.plant,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// SIGKILL (std's `Child::kill` on Unix), reaped.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small deterministic generator for the kill schedule.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Sends until the answer is not a 5xx or a refused connection, as a
/// client with retries does; the same request each time (the same
/// Idempotency-Key for orders).
async fn send_retrying(request: reqwest::RequestBuilder) -> reqwest::Response {
    for _ in 0..100 {
        match request.try_clone().unwrap().send().await {
            Ok(res) if !res.status().is_server_error() => return res,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("no answer but errors after 100 tries")
}

async fn upload(client: &Client, base: &str, key: &str, bytes: Vec<u8>) -> String {
    let res: Value = send_retrying(
        client
            .post(format!("{base}/v1/uploads"))
            .bearer_auth(key)
            .json(&json!({"content_type": "image/jpeg", "size_bytes": bytes.len()})),
    )
    .await
    .json()
    .await
    .unwrap();
    let put = send_retrying(
        client
            .put(res["upload"]["url"].as_str().unwrap())
            .header("Content-Type", "image/jpeg")
            .body(bytes),
    )
    .await;
    assert_eq!(put.status(), 200);
    res["upload_id"].as_str().unwrap().to_string()
}

fn order_body(spec: &Spec, upload_id: &str) -> Value {
    let (currency, postal) = match spec.country {
        CountryCode::CH => ("CHF", "8001"),
        CountryCode::AT => ("EUR", "1010"),
        CountryCode::NL => ("EUR", "1011 AB"),
        CountryCode::FR => ("EUR", "75001"),
        _ => ("EUR", "10115"),
    };
    json!({
        "locale": "de", "currency": currency,
        "customer": {"name": "Erika Muster", "email": "erika@example.com", "phone": "+4915112345678"},
        "shipping": {"method": "standard", "address": {
            "name": "Erika Muster", "line1": "Heidestr. 17", "postal_code": postal,
            "city": "Stadt", "country": spec.country}},
        "items": [{"sku": spec.sku, "quantity": spec.quantity, "images": [{"upload_id": upload_id}]}],
    })
}

fn chaos_tenant(webhook_url: String) -> Tenant {
    Tenant {
        id: TenantId::parse("chaos-b2b").unwrap(),
        name: "Chaos B2B BV".into(),
        kind: TenantKind::B2b,
        brand: "demo-b2b".into(),
        countries: vec![CountryCode::NL, CountryCode::FR],
        currencies: vec![Currency::Eur],
        default_locale: Locale::En,
        payment: PaymentSetup::Invoice,
        notifications: NotifySettings {
            email: Some(true),
            sms: None,
            webhook: Some(TenantWebhook {
                url: webhook_url,
                secret: printworks::domain::notify::mint_webhook_secret(),
            }),
        },
    }
}

fn is_final(order: &Order) -> bool {
    let state = serde_json::to_value(order.state).unwrap();
    ["shipped", "cancelled", "on_hold"].contains(&state.as_str().unwrap_or(""))
}

/// Places `specs` on a fresh platform (faults as given), drives them to
/// their end and checks the run's own guarantees; returns its ends.
async fn run(specs: &[Spec], faults: Faults, kill_agents: bool) -> Ends {
    let label = if faults.is_on() {
        "faults on"
    } else {
        "faults off"
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let options = Options {
        port: 0,
        visibility_timeout: Duration::from_secs(10),
        plants: PlantOptions {
            run: false,
            ..PlantOptions::default()
        },
        notify: NotifyOptions {
            allow_loopback_webhooks: true,
            backoff: Duration::from_secs(1),
            sweep_every: Duration::from_secs(1),
            ..NotifyOptions::default()
        },
        faults: faults.clone(),
        ..Options::new(data)
    };
    let running = platform::start(options).await.expect("the platform starts");
    let base = running.base_url();

    // The tenant webhook receiver, and a B2B tenant that uses it.
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = axum::Router::new()
        .route("/hook", axum::routing::post(receive_webhook))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let chaos = printworks_local::seed::add_tenant(&running.store, "local", chaos_tenant(hook_url))
        .await
        .unwrap();
    let key_of = |kind: Kind| match kind {
        Kind::Invoice | Kind::TooSmall | Kind::Reprinted | Kind::Stopped | Kind::Fixed => {
            printworks_tests::seeded_key(&running, "demo-b2b")
        }
        Kind::Webhooked => chaos.api_key.clone(),
        Kind::Paid | Kind::PaidTwice | Kind::Cancelled => {
            printworks_tests::seeded_key(&running, "demo-brand")
        }
    };

    // Customer service, reprinting and cancelling through the operator API.
    let operator = printworks_local::operators::add(
        &running.store,
        "chaos-cs",
        "support",
        "local",
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap()
    .1
    .full;

    // The machines (in this process: never killed) and the agents (not).
    let (stop, stopped) = watch::channel(false);
    for plant in PLANTS {
        let dir = platform::plant_dir(data, plant);
        let machine = SimulatedMachine::new(
            Folders::under(&dir),
            dir.join("printed.log"),
            Duration::from_millis(20),
            0.0,
        )
        .unwrap();
        tokio::spawn(machine.run(stopped.clone()));
    }
    let agents: Arc<Mutex<Vec<Agent>>> = Arc::new(Mutex::new(
        PLANTS.iter().map(|p| Agent::new(data, &base, p)).collect(),
    ));
    let kills = Arc::new(Mutex::new(BTreeMap::<&str, u32>::new()));
    let killer = kill_agents.then(|| {
        let (agents, kills, mut stopped) = (agents.clone(), kills.clone(), stopped.clone());
        tokio::spawn(async move {
            let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
            loop {
                let wait = Duration::from_millis(1000 + rng.below(3000));
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let i = rng.below(PLANTS.len() as u64) as usize;
                let plant = {
                    let mut agents = agents.lock().unwrap();
                    agents[i].kill();
                    agents[i].plant
                };
                *kills.lock().unwrap().entry(plant).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50 + rng.below(400))).await;
                agents.lock().unwrap()[i].spawn();
            }
        })
    });

    // The poison goes first: it takes five deliveries a visibility timeout
    // apart (about 50 s) to reach its dead-letter queue, time that overlaps
    // the orders' instead of following it. The test's own calls on the bus
    // meet the queue outages too: retried.
    for (queue, body) in POISON {
        let mut tries = 0;
        while let Err(e) = running
            .bus
            .send(queue, "message", &[body.to_string()])
            .await
        {
            tries += 1;
            assert!(tries < 100, "{label}: poisoning {queue}: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Uploads: one printable photo per tenant, one far too small.
    let client = Client::new();
    let mut uploads = BTreeMap::new();
    for kind in [Kind::Invoice, Kind::Webhooked, Kind::Paid] {
        let id = upload(&client, &base, &key_of(kind), photo(1200, 1800)).await;
        uploads.insert(key_of(kind), id);
    }
    let tiny = upload(&client, &base, &key_of(Kind::TooSmall), photo(300, 200)).await;
    // An upload asked for and never sent: the orders that name it are held.
    let never_sent = send_retrying(
        client
            .post(format!("{base}/v1/uploads"))
            .bearer_auth(key_of(Kind::Fixed))
            .json(&json!({"content_type": "image/jpeg", "size_bytes": 1000})),
    )
    .await
    .json::<Value>()
    .await
    .unwrap()["upload_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The orders; the B2C ones paid by signed webhook or cancelled.
    let secrets = payments::load_or_create_secrets(data).unwrap();
    let mut ids = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let key = key_of(spec.kind);
        let upload_id = match spec.kind {
            Kind::TooSmall => &tiny,
            Kind::Fixed => &never_sent,
            _ => &uploads[&key],
        };
        let res = send_retrying(
            client
                .post(format!("{base}/v1/orders"))
                .bearer_auth(&key)
                .header("Idempotency-Key", format!("chaos-{i}"))
                .json(&order_body(spec, upload_id)),
        )
        .await;
        assert_eq!(
            res.status(),
            201,
            "order {i}: {}",
            res.text().await.unwrap()
        );
        let order: Value = res.json().await.unwrap();
        let id = OrderId::parse(order["id"].as_str().unwrap()).unwrap();
        match spec.kind {
            Kind::Paid | Kind::PaidTwice => {
                let placed = running.store.find_order(&id).await.unwrap().unwrap();
                let now = time::OffsetDateTime::now_utc();
                let second = format!("pi_second_{i}");
                let payments_made: &[Option<&str>] = if spec.kind == Kind::PaidTwice {
                    &[None, Some(second.as_str())]
                } else {
                    &[None]
                };
                for payment in payments_made {
                    let paid = payments::signed_event_of(
                        &secrets,
                        &placed,
                        "stripe",
                        PayEvent::Succeeded,
                        None,
                        *payment,
                        now,
                    )
                    .unwrap();
                    let (status, body) = payments::send(&base, &paid).await.unwrap();
                    assert_eq!(status, 200, "order {i}'s payment {payment:?}: {body}");
                }
            }
            Kind::Cancelled => {
                let res = send_retrying(
                    client
                        .post(format!("{base}/v1/orders/{id}/cancel"))
                        .bearer_auth(&key)
                        .json(&json!({"reason": "changed my mind"})),
                )
                .await;
                assert_eq!(res.status(), 200, "order {i}'s cancel");
            }
            _ => {}
        }
        ids.push(id);
    }
    let placed_in = started.elapsed();

    // Wait for every order to end, then stop killing and wait for quiet.
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut orders: Vec<Option<Order>> = vec![None; ids.len()];
    // What the operator did to each order it acts on.
    let mut acted: BTreeMap<usize, Acted> = BTreeMap::new();
    let done = |i: usize, o: &Order, acted: &BTreeMap<usize, Acted>| match specs[i].kind {
        Kind::Reprinted | Kind::Fixed => acted.contains_key(&i) && o.attempt == 2 && is_final(o),
        Kind::Stopped => is_final(o) && (acted.contains_key(&i) || o.state == OrderState::Shipped),
        _ => is_final(o),
    };
    loop {
        for (i, id) in ids.iter().enumerate() {
            if orders[i].as_ref().is_none_or(|o| !done(i, o, &acted)) {
                orders[i] = running.store.find_order(id).await.unwrap();
            }
            let Some(order) = &orders[i] else { continue };
            if acted.contains_key(&i) {
                continue;
            }
            // The customer replaces the photo the order is held for.
            if (specs[i].kind, order.state) == (Kind::Fixed, OrderState::OnHold) {
                let key = key_of(Kind::Fixed);
                let res = send_retrying(
                    client
                        .put(format!("{base}/v1/orders/{id}/items/1/images/0"))
                        .bearer_auth(&key)
                        .header("Idempotency-Key", format!("chaos-fix-{i}"))
                        .json(&json!({"upload_id": uploads[&key]})),
                )
                .await;
                let status = res.status().as_u16();
                let answer: Value = res.json().await.unwrap();
                assert_eq!(
                    status, 200,
                    "{label}: order {i}: the photo's replacement: {answer}"
                );
                acted.insert(i, Acted::Fixed);
                orders[i] = running.store.find_order(id).await.unwrap();
                continue;
            }
            let (action, body) = match (specs[i].kind, order.state) {
                (Kind::Reprinted, OrderState::Shipped) => {
                    let job = &order.production.as_ref().unwrap().jobs[0].job_id;
                    (
                        "reprint",
                        json!({"jobs": [job], "reason": "parcel damaged in transit"}),
                    )
                }
                (Kind::Stopped, OrderState::Shipped) => {
                    acted.insert(i, Acted::ShippedFirst);
                    continue;
                }
                (
                    Kind::Stopped,
                    OrderState::Dispatched
                    | OrderState::InProduction
                    | OrderState::Printed
                    | OrderState::Packed,
                ) => ("cancel", json!({"reason": "the customer called"})),
                _ => continue,
            };
            let res = send_retrying(
                client
                    .post(format!("{base}/v1/ops/orders/{id}/{action}"))
                    .bearer_auth(&operator)
                    .header("Idempotency-Key", format!("chaos-{action}-{i}"))
                    .json(&body),
            )
            .await;
            let status = res.status().as_u16();
            let answer: Value = res.json().await.unwrap();
            let outcome = match (action, status) {
                ("reprint", 200) => Acted::Reprinted,
                ("cancel", 200) => Acted::Cancelled,
                // Shipped while the request was on its way: what is
                // allowed now says so.
                ("cancel", 409) if answer["error"]["details"]["state"] == "shipped" => {
                    Acted::ShippedFirst
                }
                _ => panic!("{label}: order {i}: {action} answered {status}: {answer}"),
            };
            acted.insert(i, outcome);
            orders[i] = running.store.find_order(id).await.unwrap();
        }
        if orders
            .iter()
            .enumerate()
            .all(|(i, o)| o.as_ref().is_some_and(|o| done(i, o, &acted)))
        {
            break;
        }
        agents
            .lock()
            .unwrap()
            .iter_mut()
            .for_each(Agent::assert_running);
        if Instant::now() > deadline {
            let open: Vec<String> = orders
                .iter()
                .flatten()
                .filter(|o| !is_final(o) || o.attempt == 1)
                .take(10)
                .map(|o| format!("{} {:?}", o.id, o.state))
                .collect();
            panic!("{label}: orders still open after 15 min, e.g. {open:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(killer) = killer {
        killer.abort();
        let _ = killer.await;
        for agent in agents.lock().unwrap().iter_mut() {
            if agent.child.is_none() {
                agent.spawn();
            }
        }
    }
    let mut quiet_since: Option<Instant> = None;
    let mut last = None;
    loop {
        let mut depth = running.bus.outbox_len().await.unwrap();
        for queue in QUEUES {
            depth += running.bus.depth(queue).await.unwrap();
        }
        let seen = (
            depth,
            OutboxFolder::open(platform::outbox_dir(data), Arc::new(SystemClock))
                .unwrap()
                .sent_log()
                .unwrap()
                .len(),
            received.lock().unwrap().len(),
        );
        if depth == 0 && last == Some(seen) {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                break;
            }
        } else {
            quiet_since = None;
        }
        last = Some(seen);
        assert!(
            Instant::now() < deadline,
            "{label}: no quiet after 15 min: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The jobs of an order cancelled after dispatch are reported after
    // the order ended (taken off the floor, printed and stopped, or never
    // received): wait until each has its last report.
    loop {
        let mut open = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if acted.get(&i) != Some(&Acted::Cancelled) {
                continue;
            }
            let order = running.store.find_order(id).await.unwrap().unwrap();
            open.extend(
                order
                    .production
                    .iter()
                    .flat_map(|p| p.jobs.iter())
                    .filter(|j| !j.status.is_some_and(JobState::is_final))
                    .map(|j| (i, j.job_id.clone(), j.status)),
            );
        }
        if open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: jobs of cancelled orders without their last report: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled_in = started.elapsed();
    let _ = stop.send(true);
    agents.lock().unwrap().iter_mut().for_each(Agent::kill);

    // 1. End states, explained by the inputs (read again: the reports of
    // a cancelled order's jobs arrive after it ended).
    let mut ends = Ends::default();
    let mut orders: Vec<Order> = Vec::with_capacity(ids.len());
    for id in &ids {
        orders.push(running.store.find_order(id).await.unwrap().unwrap());
    }
    let mut by_state = BTreeMap::<String, usize>::new();
    for (i, (spec, order)) in specs.iter().zip(&orders).enumerate() {
        let state = serde_json::to_value(order.state)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let reason = order.hold.as_ref().map(|h| h.reason.clone());
        let expected = match (spec.kind, acted.get(&i)) {
            (
                Kind::Invoice
                | Kind::Webhooked
                | Kind::Paid
                | Kind::Reprinted
                | Kind::Fixed
                | Kind::PaidTwice,
                _,
            ) => "shipped",
            (Kind::Stopped, Some(Acted::ShippedFirst)) => "shipped",
            (Kind::Cancelled, _) | (Kind::Stopped, _) => "cancelled",
            (Kind::TooSmall, _) => "on_hold",
        };
        assert_eq!(state, expected, "{label}: order {i} ({spec:?}): {order:?}");
        let attempt = if matches!(spec.kind, Kind::Reprinted | Kind::Fixed) {
            2
        } else {
            1
        };
        assert_eq!(order.attempt, attempt, "{label}: order {i}: {order:?}");
        if spec.kind == Kind::TooSmall {
            let reason = reason.as_deref().unwrap_or("");
            assert!(
                reason.contains("resolution is too low"),
                "{label}: order {i}: {reason}"
            );
        }
        *by_state.entry(state.clone()).or_default() += 1;
        // An operator's cancel races the plant: which end is a race.
        let state = if spec.kind == Kind::Stopped {
            "stopped".to_string()
        } else {
            state
        };
        ends.states.insert(i, (state, reason));
    }

    // 1b. Money: every second payment flagged once and owed back once,
    // the order's own payment counted once; exactly those orders wait for
    // a person (the index operators read).
    let mut owed = BTreeSet::new();
    for (i, (spec, order)) in specs.iter().zip(&orders).enumerate() {
        let ledger = order.payment_status.clone().unwrap_or_default();
        let codes: Vec<&str> = ledger.flags.iter().map(|f| f.code.as_str()).collect();
        let open: Vec<_> = ledger.open_refunds().collect();
        if spec.kind == Kind::PaidTwice {
            let total = order.totals.total.amount;
            assert_eq!(
                codes,
                ["duplicate_payment"],
                "{label}: order {i}: {ledger:?}"
            );
            assert_eq!(ledger.captured, total, "{label}: order {i}: {ledger:?}");
            assert_eq!(open.len(), 1, "{label}: order {i}: {ledger:?}");
            assert_eq!(
                (open[0].amount, open[0].payment_id.clone()),
                (total, Some(format!("pi_second_{i}"))),
                "{label}: order {i}"
            );
            owed.insert(order.id.clone());
        } else {
            assert!(
                codes.is_empty() && open.is_empty(),
                "{label}: order {i} ({spec:?}): {ledger:?}"
            );
        }
    }
    use printworks::ports::OpsStore;
    let waiting: BTreeSet<_> = running
        .store
        .needing_attention(specs.len() + 1)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(
        waiting, owed,
        "{label}: the orders that need a person for money"
    );

    // 2. Every job in a hot folder exactly once, at its plant.
    let mut printed = BTreeMap::<&str, Vec<String>>::new();
    for plant in PLANTS {
        let log = platform::plant_dir(data, plant).join("printed.log");
        printed.insert(plant, SimulatedMachine::printed(&log).unwrap());
    }
    let mut jobs_at = BTreeMap::<&str, usize>::new();
    let mut all_jobs = BTreeSet::new();
    let mut printed_jobs = 0;
    // Jobs of orders cancelled after dispatch: never printed, printed and
    // stopped, shipped before the cancel reached the plant.
    let mut stopped_jobs = BTreeMap::<&str, usize>::new();
    for (i, order) in orders.iter().enumerate() {
        let Some(production) = &order.production else {
            ends.jobs.insert(i, 0);
            continue;
        };
        let cancelled_after_dispatch = acted.get(&i) == Some(&Acted::Cancelled);
        // Every job of every attempt: the current ones and those a reprint
        // replaced.
        let jobs: Vec<_> = production
            .jobs
            .iter()
            .chain(&production.superseded)
            .collect();
        for job in &jobs {
            let plant = production.plant_of(job);
            let plant = *PLANTS.iter().find(|p| **p == plant).unwrap();
            let here = printed[plant].iter().filter(|j| **j == job.job_id).count();
            let total: usize = printed
                .values()
                .map(|log| log.iter().filter(|j| **j == job.job_id).count())
                .sum();
            assert_eq!(here, total, "{label}: job {} printed elsewhere", job.job_id);
            if cancelled_after_dispatch {
                let reason = job.reason.as_deref().unwrap_or("");
                let (kind, prints) = match job.status {
                    Some(JobState::Shipped) => ("shipped before the cancel", 1),
                    Some(JobState::Cancelled) if reason.starts_with("printed") => {
                        ("printed, not shipped", 1)
                    }
                    Some(JobState::Cancelled) if reason.starts_with("never received") => {
                        ("never received", 0)
                    }
                    Some(JobState::Cancelled) => ("never printed", 0),
                    other => panic!("{label}: order {i}: job {} ended {other:?}", job.job_id),
                };
                assert_eq!(
                    total, prints,
                    "{label}: job {} ({kind}) printed {total} times",
                    job.job_id
                );
                *stopped_jobs.entry(kind).or_default() += 1;
            } else {
                assert_eq!(
                    total, 1,
                    "{label}: job {} printed {total} times",
                    job.job_id
                );
            }
            printed_jobs += total;
            all_jobs.insert(job.job_id.clone());
            *jobs_at.entry(plant).or_default() += 1;
        }
        ends.jobs.insert(i, jobs.len());
    }
    let printed_total: usize = printed.values().map(Vec::len).sum();
    assert_eq!(
        printed_total, printed_jobs,
        "{label}: a printed job no order knows"
    );
    assert!(
        PLANTS
            .iter()
            .all(|p| jobs_at.get(p).copied().unwrap_or(0) > 0),
        "{label}: both plants print: {jobs_at:?}"
    );
    let expected_jobs: u32 = specs
        .iter()
        .map(|s| match s.kind {
            Kind::Invoice
            | Kind::Webhooked
            | Kind::Paid
            | Kind::Stopped
            | Kind::Fixed
            | Kind::PaidTwice => s.quantity,
            // One job made anew.
            Kind::Reprinted => s.quantity + 1,
            Kind::Cancelled | Kind::TooSmall => 0,
        })
        .sum();
    assert_eq!(
        all_jobs.len(),
        expected_jobs as usize,
        "{label}: jobs of the dispatched orders, every attempt"
    );

    // 3. One notification per (order, event, channel), sent once.
    let mut channels = BTreeMap::<String, usize>::new();
    let mut sent_ids = BTreeSet::new();
    for (i, order) in orders.iter().enumerate() {
        let mut seen = BTreeMap::<(String, String), usize>::new();
        for record in running.store.notifications_of(&order.id).await.unwrap() {
            let key = (
                record.event_type.as_str().to_string(),
                record.channel().as_str().to_string(),
            );
            assert!(
                matches!(record.status, NotificationStatus::Sent { .. }),
                "{label}: order {i}: {key:?} is {:?}",
                record.status
            );
            *seen.entry(key.clone()).or_default() += 1;
            *channels.entry(key.1.clone()).or_default() += 1;
            sent_ids.insert(record.id.clone());
        }
        for (key, n) in &seen {
            // A reprinted order ships twice; everything else happens once.
            let allowed = if specs[i].kind == Kind::Reprinted && key.0 == "OrderShipped" {
                2
            } else {
                1
            };
            assert_eq!(*n, allowed, "{label}: order {i}: {key:?} {n} times");
        }
        if specs[i].kind != Kind::Stopped {
            ends.notifications.insert(i, seen);
        }
    }
    let outbox = OutboxFolder::open(platform::outbox_dir(data), Arc::new(SystemClock)).unwrap();
    let sent_log = outbox.sent_log().unwrap();
    let unique: BTreeSet<&String> = sent_log.iter().collect();
    assert_eq!(
        unique.len(),
        sent_log.len(),
        "{label}: a message in the outbox was sent twice"
    );
    let outboxed =
        channels.get("email").copied().unwrap_or(0) + channels.get("sms").copied().unwrap_or(0);
    assert_eq!(
        sent_log.len(),
        outboxed,
        "{label}: the send log and the ledger disagree"
    );
    let received = received.lock().unwrap().clone();
    for ((order, event), (ty, n)) in &received {
        assert_eq!(
            *n, 1,
            "{label}: webhook {ty} of {order} ({event}) received {n} times"
        );
    }
    assert_eq!(
        received.len(),
        channels.get("webhook").copied().unwrap_or(0),
        "{label}: webhooks received and webhooks in the ledger"
    );
    for want in ["email", "sms", "webhook"] {
        assert!(
            channels.get(want).copied().unwrap_or(0) > 0,
            "{label}: no {want} sent: {channels:?}"
        );
    }

    // 4. The dead-letter queues: the poison, and nothing else but messages
    // whose effect is in place.
    let mut dead = 0;
    let mut handled_dead = 0;
    for queue in QUEUES {
        let dlq = format!("{queue}-dlq");
        let mut bodies = Vec::new();
        let mut tries = 0;
        loop {
            let batch = match running.bus.receive(&dlq, 10).await {
                Ok(batch) => batch,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 100, "{label}: reading {dlq}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                break;
            }
            bodies.extend(batch.into_iter().map(|m| m.body));
        }
        let poison: Vec<&str> = POISON
            .iter()
            .filter(|(q, _)| *q == queue)
            .map(|p| p.1)
            .collect();
        for body in &bodies {
            if poison.contains(&body.as_str()) {
                continue;
            }
            // At-least-once with lost acknowledgements: a message handled
            // on each of its deliveries, every acknowledgement lost, is
            // dead-lettered like one that failed. Nothing is lost if its
            // effect is in place (a redrive would change nothing); anything
            // else in a dead-letter queue is lost work.
            assert!(
                faults.is_on() && effect_in_place(&running.store, queue, body).await,
                "{label}: {dlq} holds {body}, and its effect is not in place"
            );
            handled_dead += 1;
        }
        for p in &poison {
            assert!(
                bodies.iter().any(|b| b == p),
                "{label}: the poison sent to {queue} is not in {dlq}"
            );
        }
        dead += bodies.len();
    }
    dead -= handled_dead;

    let counts = faults.counts();
    let mut actions = BTreeMap::<String, usize>::new();
    for outcome in acted.values() {
        *actions.entry(format!("{outcome:?}")).or_default() += 1;
    }
    let report = format!(
        "chaos ({label}): {} orders placed in {:.1} s, quiet after {:.1} s: {by_state:?}; \
         {} jobs of every attempt ({jobs_at:?}), each printed exactly once but those of orders \
         cancelled after dispatch ({stopped_jobs:?}); operator actions: {actions:?}; \
         notifications each sent once: {channels:?} \
         ({} in the outbox's send log, {} webhooks received); dead-letter queues: {dead} poisoned \
         message(s), {handled_dead} handled but dead-lettered (every acknowledgement lost), and \
         nothing else; agents killed: {:?}; faults: {counts}",
        specs.len(),
        placed_in.as_secs_f64(),
        settled_in.as_secs_f64(),
        all_jobs.len(),
        sent_log.len(),
        received.len(),
        kills.lock().unwrap(),
    );
    // Straight to the process's stderr, past libtest's capture (which takes
    // only the print macros), so `scripts/test`'s log shows the counts of a
    // passing run too; one write, so no other line splits it.
    {
        use std::io::Write;
        let _ = std::io::stderr().write_all(format!("{report}\n").as_bytes());
    }
    if faults.is_on() {
        assert!(
            counts.duplicate_deliveries > 0,
            "{label}: no duplicate delivered: {counts}"
        );
        assert!(
            counts.lost_acks > 0,
            "{label}: no acknowledgement lost: {counts}"
        );
        assert!(
            counts.publisher_crashes > 0,
            "{label}: the publisher never crashed: {counts}"
        );
        assert!(
            counts.blob_outages > 0,
            "{label}: the blob store never refused: {counts}"
        );
        assert!(
            counts.queue_outages > 0,
            "{label}: the queues never refused: {counts}"
        );
    }
    if kill_agents {
        assert!(
            kills.lock().unwrap().len() == PLANTS.len(),
            "{label}: both agents killed"
        );
    }
    running.stop().await.unwrap();
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_every_effect_happens_once_under_faults_and_agent_kills() {
    let n: usize = std::env::var("PRINTWORKS_CHAOS_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let specs = scenario(n);
    // PRINTWORKS_CHAOS_LOG=1: the platform's warnings and errors on stderr
    // (every injected fault and retry), to see why a run failed.
    if std::env::var_os("PRINTWORKS_CHAOS_LOG").is_some() {
        printworks::telemetry::init_with_default("warn");
    }
    let calm = run(&specs, Faults::off(), false).await;
    let plan = FaultPlan {
        duplicate_deliveries: true,
        lost_acks: 0.1,
        publisher_crashes: 0.2,
        // Outages far shorter than the retry budget: render holds an order
        // whose photo it could not read on four deliveries (by design);
        // the consumers pause while their handler fails, so one outage
        // costs a few messages one delivery each.
        blobs_down: Some(Outage {
            lasting: Duration::from_secs(1),
            every: Duration::from_secs(20),
            phase: Duration::ZERO,
        }),
        queues_down: Some(Outage {
            lasting: Duration::from_secs(1),
            every: Duration::from_secs(15),
            phase: Duration::from_millis(7500),
        }),
        seed: 7,
    };
    let chaos = run(&specs, Faults::on(plan), true).await;
    assert_eq!(
        calm.states, chaos.states,
        "the same end states with and without faults"
    );
    assert_eq!(
        calm.jobs, chaos.jobs,
        "the same jobs with and without faults"
    );
    assert_eq!(
        calm.notifications, chaos.notifications,
        "the same notifications with and without faults"
    );
}

/// Whether the effect of `body`, a dead letter of `queue`, is in place:
/// for a job report, the job has that status or a later one; for render's
/// `OrderPaid` and dispatch's `OrderRendered`, the order has moved past the
/// state they act on. Other queues' dead letters are never taken as
/// handled.
async fn effect_in_place(
    store: &printworks::adapters::local::store::SqliteStore,
    queue: &str,
    body: &str,
) -> bool {
    use printworks::domain::events::EventEnvelope;
    use printworks::domain::production::{JobState, JobStatusReport};
    use printworks::domain::state::OrderState;
    let order_of = |id: &OrderId| {
        let id = id.clone();
        async move { store.find_order(&id).await.ok().flatten() }
    };
    match queue {
        "plant-events" => {
            let Ok(report) = JobStatusReport::parse(body) else {
                return false;
            };
            let Some(order) = order_of(&report.order_id).await else {
                return false;
            };
            order
                .production
                .iter()
                .flat_map(|p| p.jobs.iter())
                .find(|j| j.job_id == report.job_id)
                .and_then(|j| j.status)
                .is_some_and(|s| !JobState::advances(Some(s), report.status))
        }
        "render" | "dispatch" => {
            let Ok(event) = serde_json::from_str::<EventEnvelope>(body) else {
                return false;
            };
            let acts_on = if queue == "render" {
                OrderState::Paid
            } else {
                OrderState::Rendered
            };
            order_of(&event.order_id)
                .await
                .is_some_and(|o| o.state.rank() > acts_on.rank())
        }
        _ => false,
    }
}
