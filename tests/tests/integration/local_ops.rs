//! Operators on `printworks up`, through the HTTP operator API (with the
//! code `printworks ops` runs): a hold released after each kind of stop, a
//! reprint that ships again, a release racing a late report of the old
//! attempt; each job of each attempt printed exactly once by the plants'
//! simulated machines.

use printworks::domain::events::EventType;
use printworks::domain::order::OrderId;
use printworks::domain::production::{JobState, JobStatusReport};
use printworks::domain::tenant::TenantId;
use printworks::ports::OrderStore;
use printworks::topology;
use printworks_local::ops_cmd::{self, OpsAnswer, OpsRequest, Target};
use printworks_local::payments::{self, PayEvent};
use printworks_local::platform::{self, Options, PlantOptions, Running};
use printworks_tests::{
    OrderForm, get_order, photo, poll_order, put_upload, request_upload, seeded_key, upload,
};
use reqwest::Client;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

struct Shop {
    _dir: tempfile::TempDir,
    app: Running,
    base: String,
    client: Client,
    /// demo-b2b's key (invoice: paid when placed).
    b2b: String,
    /// A `support` operator's key.
    support: String,
    /// Plant muc's operator.
    muc: String,
}

async fn shop(plants: PlantOptions) -> Shop {
    shop_with(|options| Options { plants, ..options }).await
}

/// A shop whose options `change` changes.
async fn shop_with(change: impl FnOnce(Options) -> Options) -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let options = change(Options {
        port: 0,
        ..Options::new(dir.path())
    });
    let app = platform::start(options).await.expect("the platform starts");
    let now = time::OffsetDateTime::now_utc();
    let add = |id: &'static str, role: &'static str| {
        let store = app.store.clone();
        async move {
            printworks_local::operators::add(&store, id, role, "local", now)
                .await
                .unwrap()
                .1
                .full
        }
    };
    let (support, muc) = (add("cs", "support").await, add("pia", "plant:muc").await);
    Shop {
        base: app.base_url(),
        b2b: seeded_key(&app, "demo-b2b"),
        client: Client::new(),
        _dir: dir,
        app,
        support,
        muc,
    }
}

impl Shop {
    async fn ops(&self, key: &str, request: &OpsRequest) -> OpsAnswer {
        ops_cmd::send(&Target::Http(self.base.clone()), key, request)
            .await
            .unwrap()
    }

    async fn act(&self, order: &str, action: &str, body: Value) -> Value {
        let key = format!("{action}-{}", uuid::Uuid::new_v4());
        let request = OpsRequest::act(order, action, body, key);
        let answer = self.ops(&self.support, &request).await;
        assert_eq!(answer.status, 200, "{action}: {}", answer.body);
        // Sent again, the same answer: the action happened once.
        let again = self.ops(&self.support, &request).await;
        assert!(
            again.replayed && again.body == answer.body,
            "{}",
            again.body
        );
        answer.body
    }

    async fn place(&self, form: &OrderForm) -> String {
        printworks_tests::place(&self.client, &self.base, &self.b2b, form).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn until(&self, id: &str, done: impl Fn(&str) -> bool) -> Value {
        poll_order(
            &self.client,
            &self.base,
            &self.b2b,
            id,
            Duration::from_secs(90),
            done,
        )
        .await
    }

    /// `GET /v1/ops/stats?{query}` with `key`: status and body.
    async fn stats(&self, key: &str, query: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}/v1/ops/stats?{query}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The order as operators see it.
    async fn shown(&self, id: &str) -> Value {
        let answer = self.ops(&self.support, &OpsRequest::show(id)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }

    /// Every job id either plant's machine printed, with how often.
    fn printed(&self) -> BTreeMap<String, usize> {
        let mut count = BTreeMap::new();
        for plant in ["muc", "btf"] {
            let log = platform::plant_dir(self.app.data_dir.as_path(), plant).join("printed.log");
            for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
                *count.entry(line.to_string()).or_insert(0) += 1;
            }
        }
        count
    }
}

fn poster(upload_id: &str, quantity: u32) -> OrderForm {
    OrderForm::items(json!([{
        "sku": "poster-30x40", "quantity": quantity, "images": [{"upload_id": upload_id}]
    }]))
}

/// The jobs of the operator view, by attempt: (job id, status, current).
fn jobs_by_attempt(shown: &Value) -> BTreeMap<u64, Vec<(String, String, bool)>> {
    shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let jobs = a["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| {
                    (
                        j["job_id"].as_str().unwrap().to_string(),
                        j["status"].as_str().unwrap_or("-").to_string(),
                        j["current"].as_bool().unwrap(),
                    )
                })
                .collect();
            (a["attempt"].as_u64().unwrap(), jobs)
        })
        .collect()
}

fn jam(data_dir: &Path, plant: &str) {
    let dir = platform::plant_dir(data_dir, plant);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(edge_agent::driver::JAM_FILE), b"").unwrap();
}

#[tokio::test]
async fn a_reprint_ships_again_and_every_job_is_printed_once() {
    let shop = shop(PlantOptions::default()).await;
    let upload_id = upload(&shop.client, &shop.base, &shop.b2b, photo(1800, 2400), true).await;
    let id = shop.place(&poster(&upload_id, 2)).await;
    let first = shop.until(&id, |s| s == "shipped").await;
    let jobs: Vec<String> = first["production"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs.len(), 2, "{first}");
    let plant = first["production"]["plant"].as_str().unwrap().to_string();

    // Refusals first, over HTTP: a shipped order cannot be released (409,
    // with what may be done), another plant's operator may not reprint
    // (403) unless the order is theirs, an unknown order is a 404.
    let release = OpsRequest::act(&id, "release", json!({"reason": "x"}), "r1".into());
    let refused = shop.ops(&shop.support, &release).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(
        refused.body["error"]["details"]["allowed_actions"],
        json!(["show", "reprint"])
    );
    let by_muc = OpsRequest::act(
        &id,
        "reprint",
        json!({"jobs": [jobs[0]], "reason": "damaged"}),
        "m1".into(),
    );
    let answer = shop.ops(&shop.muc, &by_muc).await;
    assert_eq!(
        answer.status,
        if plant == "muc" { 200 } else { 403 },
        "{}",
        answer.body
    );
    let reprinted = if plant == "muc" {
        answer.body
    } else {
        shop.act(
            &id,
            "reprint",
            json!({"jobs": [jobs[0]], "reason": "parcel damaged in transit"}),
        )
        .await
    };
    let unknown = OpsRequest::show("ord_00000000000000000000000000000000");
    assert_eq!(shop.ops(&shop.support, &unknown).await.status, 404);
    assert_eq!(reprinted["order"]["attempt"], 2);
    assert_eq!(reprinted["order"]["state"], "dispatched", "{reprinted}");

    // It ships again; the first job superseded, the second untouched.
    let again = shop.until(&id, |s| s == "shipped").await;
    assert_eq!(again["attempt"], 2, "{again}");
    let shown = shop.shown(&id).await;
    let by_attempt = jobs_by_attempt(&shown);
    assert_eq!(by_attempt[&1].len(), 2, "{by_attempt:?}");
    assert!(by_attempt[&1].contains(&(jobs[0].clone(), "shipped".into(), false)));
    assert!(by_attempt[&1].contains(&(jobs[1].clone(), "shipped".into(), true)));
    let new_job = &by_attempt[&2][0];
    assert_eq!((new_job.1.as_str(), new_job.2), ("shipped", true));
    assert_eq!(new_job.0, format!("{}-2", jobs[0]));

    // Each job, original and reprint, printed exactly once.
    let printed = shop.printed();
    for job in [&jobs[0], &jobs[1], &new_job.0] {
        assert_eq!(printed.get(job), Some(&1), "{job}: {printed:?}");
    }
    assert_eq!(printed.len(), 3, "{printed:?}");

    // The customer hears of it: OrderResumed, then a second OrderShipped
    // with the new tracking beside the first.
    // (The relay publishes what the outbox holds: wait for it to catch up.)
    let (tenant, order) = (
        TenantId::parse("demo-b2b").unwrap(),
        OrderId::parse(&id).unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = shop.app.bus.events_of(&tenant, &order).await.unwrap();
        let shipped = events
            .iter()
            .filter(|e| e.event_type == EventType::OrderShipped);
        if shipped.count() >= 2 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<EventType> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventType::OrderShipped)
            .count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&EventType::OrderResumed), "{kinds:?}");
    let last = events
        .iter()
        .rev()
        .find(|e| e.event_type == EventType::OrderShipped)
        .unwrap();
    assert_eq!(last.data["attempt"], 2, "{}", last.data);
    assert!(
        !last.data["earlier_shipments"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{}",
        last.data
    );

    // The statistics counted it as it happened: one order paid, and its
    // lead time once (the reprint's shipment is not a second order's).
    let today = time::OffsetDateTime::now_utc().date();
    let query = format!("from={today}&to={today}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        let (status, report) = shop.stats(&shop.support, &query).await;
        assert_eq!(status, 200, "{report}");
        if !report["lead_times"].as_array().unwrap().is_empty()
            || std::time::Instant::now() > deadline
        {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lead = report["lead_times"].as_array().unwrap();
    assert_eq!(lead.len(), 1, "{report}");
    assert_eq!(
        (&lead[0]["plant"], &lead[0]["sku"], &lead[0]["orders"]),
        (&json!(plant), &json!("poster-30x40"), &json!(1)),
        "{report}"
    );
    let revenue = &report["revenue"][0];
    assert_eq!(
        (&revenue["tenant"], &revenue["orders"]),
        (&json!("demo-b2b"), &json!(1)),
        "{report}"
    );
    assert_eq!(
        revenue["net"].as_i64().unwrap() + revenue["vat"].as_i64().unwrap(),
        revenue["gross"].as_i64().unwrap()
    );
    // A plant's operator sees that plant's lead times only; a tenant's
    // figures are refused with what the role may see; a bad day is a 400.
    let (status, mine) = shop.stats(&shop.muc, &query).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["revenue"], json!([]));
    assert_eq!(
        mine["lead_times"].as_array().unwrap().len(),
        usize::from(plant == "muc")
    );
    let (status, refused) = shop.stats(&shop.muc, "tenant=demo-b2b").await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lead times only"),
        "{refused}"
    );
    for (bad, status_and_code) in [
        ("from=2026-13-01", (400, "invalid_query")),
        ("tenant=", (400, "invalid_query")),
        ("day=1", (400, "invalid_query")),
        ("from=2026-11-02&to=2026-11-01", (422, "invalid_range")),
        ("to=2026-11-30&from=2024-01-01", (422, "invalid_range")),
    ] {
        let (status, error) = shop.stats(&shop.support, bad).await;
        assert_eq!(
            (status, error["error"]["code"].as_str().unwrap()),
            status_and_code,
            "{bad}: {error}"
        );
    }
    shop.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_print_is_released_the_new_job_ships_and_a_late_report_of_the_old_changes_nothing()
{
    let shop = shop(PlantOptions::default()).await;
    // Both machines jam once: whichever plant makes the order fails its
    // first job.
    for plant in ["muc", "btf"] {
        jam(&shop.app.data_dir, plant);
    }
    let upload_id = upload(&shop.client, &shop.base, &shop.b2b, photo(1800, 2400), true).await;
    let id = shop.place(&poster(&upload_id, 1)).await;
    let held = shop.until(&id, |s| s == "on_hold").await;
    let failed = held["production"]["jobs"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let plant = held["production"]["plant"].as_str().unwrap().to_string();

    // The release and a late (duplicate) report of the failed job race.
    let late = JobStatusReport {
        job_id: failed.clone(),
        plant: plant.clone(),
        tenant: TenantId::parse("demo-b2b").unwrap(),
        order_id: OrderId::parse(&id).unwrap(),
        status: JobState::Failed,
        at: time::OffsetDateTime::now_utc(),
        carrier: None,
        tracking: None,
        reason: Some("simulated machine fault: paper jam".into()),
    };
    let late = [serde_json::to_string(&late).unwrap()];
    let (released, sent) = tokio::join!(
        shop.act(
            &id,
            "release",
            json!({"reason": "jam cleared, print it again"})
        ),
        shop.app
            .bus
            .send(topology::PLANT_EVENTS.name, "job_status", &late)
    );
    sent.unwrap();
    assert_eq!(
        released["action"]["details"]["stage"], "dispatch",
        "{released}"
    );
    let shipped = shop.until(&id, |s| s == "shipped").await;
    assert_eq!(shipped["attempt"], 2);
    let by_attempt = jobs_by_attempt(&shop.shown(&id).await);
    assert_eq!(
        by_attempt[&1],
        vec![(failed.clone(), "failed".into(), false)]
    );
    assert_eq!(by_attempt[&2][0].1, "shipped");
    let printed = shop.printed();
    assert_eq!(
        printed.get(&failed),
        None,
        "the jammed job was never printed"
    );
    assert_eq!(printed.get(&by_attempt[&2][0].0), Some(&1), "{printed:?}");
    // The late report came and went without a dead letter.
    let dlq = shop
        .app
        .bus
        .depth(&topology::PLANT_EVENTS.dead_letter_name())
        .await;
    assert_eq!(dlq.unwrap_or(0), 0);
    shop.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_render_hold_is_released_at_the_plant_the_operator_chooses() {
    let shop = shop(PlantOptions::default()).await;
    // The order names an upload whose photo has not arrived: render holds it.
    let photo_bytes = photo(1800, 2400);
    let created = request_upload(&shop.client, &shop.base, &shop.b2b, photo_bytes.len()).await;
    let upload_id = created["upload_id"].as_str().unwrap();
    // To Switzerland: muc serves CH, so dispatch would choose muc.
    let id = shop
        .place(&poster(upload_id, 1).ship_to("CH", "8001", "Zürich"))
        .await;
    let held = shop.until(&id, |s| s == "on_hold").await;
    assert_eq!(held["hold"]["from"], "paid", "{held}");

    // The customer sends the photo; the operator releases it to btf.
    put_upload(&shop.client, &created, photo_bytes).await;
    let released = shop
        .act(
            &id,
            "release",
            json!({"reason": "photo arrived; muc is busy", "plant": "btf"}),
        )
        .await;
    assert_eq!(released["order"]["state"], "paid");
    assert_eq!(released["action"]["details"]["stage"], "render");
    let shipped = shop.until(&id, |s| s == "shipped").await;
    assert_eq!(shipped["production"]["plant"], "btf", "{shipped}");
    assert_eq!(shipped["attempt"], 2);
    let job = shipped["production"]["jobs"][0]["job_id"].as_str().unwrap();
    assert_eq!(shop.printed().get(job), Some(&1));
    shop.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_refund_in_production_holds_the_order_and_a_release_lets_it_ship() {
    // Slow machines: the refund arrives while the job is being made.
    let shop = shop(PlantOptions {
        print_delay: Duration::from_secs(3),
        ..PlantOptions::default()
    })
    .await;
    let b2c = seeded_key(&shop.app, "demo-brand");
    let upload_id = upload(&shop.client, &shop.base, &b2c, photo(1800, 2400), true).await;
    let placed =
        printworks_tests::place(&shop.client, &shop.base, &b2c, &poster(&upload_id, 1)).await;
    let id = OrderId::parse(placed["id"].as_str().unwrap()).unwrap();
    let tenant = TenantId::parse("demo-brand").unwrap();
    let secrets = payments::load_or_create_secrets(&shop.app.data_dir).unwrap();
    let pay = |event: PayEvent| {
        let (store, secrets, base, tenant, id) = (
            shop.app.store.clone(),
            secrets.clone(),
            shop.base.clone(),
            tenant.clone(),
            id.clone(),
        );
        async move {
            let order = store.get(&tenant, &id).await.unwrap().unwrap();
            let provider = match &order.payment {
                printworks::domain::tenant::PaymentSetup::Provider { provider, .. } => {
                    provider.clone()
                }
                other => panic!("{other:?}"),
            };
            let webhook = payments::signed_event(
                &secrets,
                &order,
                &provider,
                event,
                None,
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
            let (status, body) = payments::send(&base, &webhook).await.unwrap();
            assert_eq!(status, 200, "{body}");
        }
    };
    pay(PayEvent::Succeeded).await;
    poll_order(
        &shop.client,
        &shop.base,
        &b2c,
        id.as_str(),
        Duration::from_secs(60),
        |s| s == "dispatched" || s == "in_production",
    )
    .await;
    pay(PayEvent::Refund).await;
    let held = poll_order(
        &shop.client,
        &shop.base,
        &b2c,
        id.as_str(),
        Duration::from_secs(30),
        |s| s == "on_hold",
    )
    .await;
    assert!(
        held["hold"]["reason"].as_str().unwrap().contains("refund"),
        "{held}"
    );

    // The bank reversed the refund: customer service lets production go on.
    let released = shop
        .act(
            id.as_str(),
            "release",
            json!({"reason": "the refund was reversed by the bank"}),
        )
        .await;
    assert_eq!(
        released["action"]["details"]["stage"], "production",
        "{released}"
    );
    let shipped = poll_order(
        &shop.client,
        &shop.base,
        &b2c,
        id.as_str(),
        Duration::from_secs(60),
        |s| s == "shipped",
    )
    .await;
    // The customer hears that the order goes on, in the order's language
    // (German), and not the operator's note.
    let outbox = platform::outbox_dir(&shop.app.data_dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        let found = std::fs::read_dir(&outbox)
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .find(|eml| eml.contains("geht weiter"));
        if let Some(eml) = found {
            break eml;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no OrderResumed e-mail in {outbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(resumed.contains("Subject: Ihre Bestellung"), "{resumed}");
    assert!(!resumed.contains("reversed by the bank"), "{resumed}");
    // Nothing was made anew: the one job, printed once.
    let jobs = shipped["production"]["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{shipped}");
    let job = jobs[0]["job_id"].as_str().unwrap();
    assert_eq!(shop.printed().get(job), Some(&1));
    shop.app.stop().await.unwrap();
}

/// The tickets of the order's jobs in `plant`'s hot folder.
fn hot_tickets(data_dir: &Path, plant: &str, jobs: &[String]) -> usize {
    let hot = platform::plant_dir(data_dir, plant).join("hot");
    jobs.iter()
        .filter(|j| hot.join(format!("{j}.ticket.json")).exists())
        .count()
}

fn job_ids(order: &Value) -> Vec<String> {
    order["production"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until every job of the order reports `cancelled`; the jobs.
async fn until_jobs_cancelled(shop: &Shop, id: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shown = shop.shown(id).await;
        let jobs = shown["order"]["production"]["jobs"]
            .as_array()
            .unwrap()
            .clone();
        if jobs.iter().all(|j| j["status"] == "cancelled") {
            return jobs;
        }
        assert!(std::time::Instant::now() < deadline, "{jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_cancel_after_dispatch_takes_unprinted_jobs_out_of_the_hot_folder() {
    // The machine waits 30 s before it takes a job: long enough to cancel.
    let shop = shop(PlantOptions {
        print_delay: Duration::from_secs(30),
        ..PlantOptions::default()
    })
    .await;
    let upload_id = upload(&shop.client, &shop.base, &shop.b2b, photo(1800, 2400), true).await;
    let id = shop.place(&poster(&upload_id, 2)).await;
    let order = shop.until(&id, |s| s == "in_production").await;
    let (jobs, plant) = (
        job_ids(&order),
        order["production"]["plant"].as_str().unwrap().to_string(),
    );
    // Both jobs handed to the machine: their tickets in the hot folder.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hot_tickets(&shop.app.data_dir, &plant, &jobs) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the jobs never reached the hot folder"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cancelled = shop
        .act(
            &id,
            "cancel",
            json!({"reason": "the customer called: wrong photo"}),
        )
        .await;
    assert_eq!(cancelled["order"]["state"], "cancelled");
    let details = &cancelled["action"]["details"];
    assert_eq!(details["jobs_to_stop_count"], 2, "{cancelled}");
    let run = &details["jobs_to_stop"][0];
    assert_eq!(
        (&run["first"], &run["last"]),
        (&json!(1), &json!(2)),
        "{cancelled}"
    );

    // The agent takes both back and reports them; nothing is printed.
    let records = until_jobs_cancelled(&shop, &id).await;
    for job in &records {
        let reason = job["reason"].as_str().unwrap();
        assert!(reason.contains("taken off the hot folder"), "{reason}");
    }
    assert_eq!(hot_tickets(&shop.app.data_dir, &plant, &jobs), 0);
    let hot = platform::plant_dir(&shop.app.data_dir, &plant).join("hot");
    let left: Vec<String> = std::fs::read_dir(&hot)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| jobs.iter().any(|j| n.contains(j.as_str())))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(shop.printed().is_empty(), "{:?}", shop.printed());
    let stored = shop.until(&id, |s| s == "cancelled").await;
    assert_eq!(stored["state"], "cancelled");
    shop.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancel_after_printing_stops_the_parcel_and_keeps_what_was_printed() {
    // Printed at once, shipped only after a minute: cancelled in between.
    let shop = shop(PlantOptions {
        ship_delay: Duration::from_secs(60),
        ..PlantOptions::default()
    })
    .await;
    let upload_id = upload(&shop.client, &shop.base, &shop.b2b, photo(1800, 2400), true).await;
    let id = shop.place(&poster(&upload_id, 1)).await;
    let packed = shop.until(&id, |s| s == "packed").await;
    let jobs = job_ids(&packed);
    shop.act(
        &id,
        "cancel",
        json!({"reason": "address turned out to be fraud"}),
    )
    .await;
    let records = until_jobs_cancelled(&shop, &id).await;
    let reason = records[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("printed, not shipped"), "{reason}");
    // What was printed stays on record: printed once, never shipped.
    assert_eq!(shop.printed().get(&jobs[0]), Some(&1));
    let shown = shop.shown(&id).await;
    let events: Vec<&str> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"operator_cancel") && events.contains(&"job_cancelled"),
        "{events:?}"
    );
    assert!(!events.contains(&"job_shipped"), "{events:?}");
    shop.app.stop().await.unwrap();
}

/// A double click at the storefront: a second PaymentIntent is captured
/// for a paid order. Operators find it in `GET /v1/ops/flags` (what
/// `printworks ops flags` shows) with its refund request, resolve the flag
/// with a note (once per key), and the provider's refund of the second
/// payment settles the request: the order leaves the list and ships.
#[tokio::test]
async fn a_second_payment_reaches_operators_who_resolve_it_and_its_refund_settles_it() {
    let shop = shop(PlantOptions::default()).await;
    let b2c = seeded_key(&shop.app, "demo-brand");
    let upload_id = upload(&shop.client, &shop.base, &b2c, photo(1800, 2400), true).await;
    let placed =
        printworks_tests::place(&shop.client, &shop.base, &b2c, &poster(&upload_id, 1)).await;
    let id = OrderId::parse(placed["id"].as_str().unwrap()).unwrap();
    let tenant = TenantId::parse("demo-brand").unwrap();
    let secrets = payments::load_or_create_secrets(&shop.app.data_dir).unwrap();
    let pay = |event: PayEvent, payment: Option<&'static str>| {
        let (store, secrets, base, tenant, id) = (
            shop.app.store.clone(),
            secrets.clone(),
            shop.base.clone(),
            tenant.clone(),
            id.clone(),
        );
        async move {
            let order = store.get(&tenant, &id).await.unwrap().unwrap();
            let webhook = payments::signed_event_of(
                &secrets,
                &order,
                "stripe",
                event,
                None,
                payment,
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
            let (status, body) = payments::send(&base, &webhook).await.unwrap();
            assert_eq!(status, 200, "{body}");
        }
    };
    pay(PayEvent::Succeeded, None).await;
    pay(PayEvent::Succeeded, Some("pi_double_click")).await;

    let listed = shop.ops(&shop.support, &OpsRequest::flags()).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let ours = |body: &Value| -> Option<Value> {
        body["orders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["order_id"] == id.as_str())
            .cloned()
    };
    let entry = ours(&listed.body).expect("the order is listed");
    assert_eq!(entry["flags"][0]["flag"], 1, "{entry}");
    assert_eq!(entry["flags"][0]["code"], "duplicate_payment");
    assert_eq!(entry["refund_requests"][0]["payment_id"], "pi_double_click");
    assert_eq!(entry["refund_requests"][0]["reason"], "duplicate_payment");
    assert!(ops_cmd::flags_summary(&listed.body).contains("duplicate_payment"));
    // A plant's operator does not see the shop's money.
    let plant = shop.ops(&shop.muc, &OpsRequest::flags()).await;
    assert_eq!(plant.status, 403, "{}", plant.body);
    // The customer's order shows the request too.
    let seen = get_order(&shop.client, &shop.base, &b2c, id.as_str()).await;
    assert_eq!(
        seen["payment_status"]["refund_requests"][0]["reason"],
        "duplicate_payment"
    );

    // Resolved with a note, once per key; again with another key: 409.
    let resolved = shop
        .act(
            id.as_str(),
            "resolve",
            json!({"flag": 1, "note": "refunded pi_double_click in the Stripe dashboard"}),
        )
        .await;
    assert_eq!(resolved["action"]["action"], "resolve", "{resolved}");
    let again = shop
        .ops(
            &shop.support,
            &OpsRequest::act(
                id.as_str(),
                "resolve",
                json!({"flag": 1, "note": "again"}),
                "resolve-again".into(),
            ),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    let missing = shop
        .ops(
            &shop.support,
            &OpsRequest::act(
                id.as_str(),
                "resolve",
                json!({"flag": 7, "note": "no such flag"}),
                "resolve-7".into(),
            ),
        )
        .await;
    assert_eq!(missing.status, 422, "{}", missing.body);
    let listed = shop.ops(&shop.support, &OpsRequest::flags()).await;
    let entry = ours(&listed.body).expect("still listed: the refund is open");
    assert!(entry["flags"].as_array().unwrap().is_empty(), "{entry}");

    // Stripe's refund of the second payment settles the request.
    pay(PayEvent::Refund, Some("pi_double_click")).await;
    let listed = shop.ops(&shop.support, &OpsRequest::flags()).await;
    assert!(ours(&listed.body).is_none(), "{}", listed.body);
    let shipped = poll_order(
        &shop.client,
        &shop.base,
        &b2c,
        id.as_str(),
        Duration::from_secs(90),
        |s| s == "shipped",
    )
    .await;
    let ledger = &shipped["payment_status"];
    assert_eq!(ledger["refunded"], 0, "{ledger}");
    assert!(
        ledger["refund_requests"][0]["settled_at"].is_string(),
        "{ledger}"
    );
    let shown = shop.shown(id.as_str()).await;
    let timeline: Vec<&str> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["event"].as_str())
        .collect();
    assert!(timeline.contains(&"operator_resolve"), "{timeline:?}");
    shop.app.stop().await.unwrap();
}

/// A plant whose agent never runs: the reconciler of `printworks up` (its
/// deadlines shortened here) sends the untaken jobs again with fresh links
/// under the same job ids, and announces the order stuck in `dispatched`
/// once. Operators find it in `GET /v1/ops/stuck` (`printworks ops stuck`)
/// with what they may do; the other plant's operator does not see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_its_plant_never_takes_gets_fresh_links_and_is_announced_stuck() {
    use printworks::domain::reconcile::Deadlines;
    let shop = shop_with(|options| Options {
        plants: PlantOptions {
            run: false,
            ..PlantOptions::default()
        },
        reconcile: reconciler::Config {
            deadlines: Deadlines {
                job_url_ttl: Duration::from_secs(3),
                refresh_before: Duration::from_secs(1),
                ..Deadlines::default().with_stuck("dispatched=4s").unwrap()
            },
            batch: 200,
        },
        reconcile_every: Duration::from_millis(300),
        ..options
    })
    .await;
    let upload_id = upload(&shop.client, &shop.base, &shop.b2b, photo(1800, 2400), true).await;
    let id = shop.place(&poster(&upload_id, 2)).await;
    let dispatched = shop.until(&id, |s| s == "dispatched").await;
    let plant = dispatched["production"]["plant"]
        .as_str()
        .unwrap()
        .to_string();
    let queue = topology::plant_jobs_queue(&plant);

    // Listed once announced.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let answer = shop.ops(&shop.support, &OpsRequest::stuck()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        if let Some(order) = answer.body["orders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["order_id"] == id.as_str())
        {
            break order.clone();
        }
        assert!(std::time::Instant::now() < deadline, "never listed stuck");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed["state"], "dispatched");
    assert_eq!(listed["plant"], plant.as_str());
    let actions: Vec<&str> = listed["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(actions.contains(&"cancel"), "{listed}");
    assert!(
        ops_cmd::stuck_summary(&json!({"orders": [listed.clone()]})).contains(&id),
        "the command's line names the order"
    );
    // A plant's operator sees only their plant's stuck orders.
    let other = if plant == "muc" { "btf" } else { "muc" };
    let now = time::OffsetDateTime::now_utc();
    let other_key = printworks_local::operators::add(
        &shop.app.store,
        "olaf",
        &format!("plant:{other}"),
        "local",
        now,
    )
    .await
    .unwrap()
    .1
    .full;
    let theirs = shop.ops(&other_key, &OpsRequest::stuck()).await;
    assert_eq!(theirs.status, 200, "{}", theirs.body);
    assert!(
        !theirs.body["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["order_id"] == id.as_str()),
        "{}",
        theirs.body
    );

    // The links were refreshed: the plant's queue holds the same two job
    // ids again, each sent more than once, the newest with a later expiry.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if shop.app.bus.depth(&queue).await.unwrap() >= 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no fresh links sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut expiries: BTreeMap<String, Vec<time::OffsetDateTime>> = BTreeMap::new();
    loop {
        let batch = shop.app.bus.receive(&queue, 10).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let job = printworks::domain::production::Job::parse(&m.body).unwrap();
            expiries
                .entry(job.job_id)
                .or_default()
                .push(job.files_expire_at);
        }
    }
    let jobs: Vec<String> = dispatched["production"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expiries.keys().cloned().collect::<Vec<_>>(), {
        let mut j = jobs.clone();
        j.sort();
        j
    });
    for sent in expiries.values() {
        assert!(sent.len() >= 2, "{expiries:?}");
        assert!(
            sent.iter().max() > sent.iter().min(),
            "fresh links: {expiries:?}"
        );
    }
    // Announced once, however many runs saw it.
    let shown = shop.shown(&id).await;
    let stuck: Vec<&Value> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["event"] == "reconciler_stuck")
        .collect();
    assert_eq!(stuck.len(), 1, "{}", shown["timeline"]);
    assert_eq!(stuck[0]["state"], "dispatched");
    let tenant = TenantId::parse("demo-b2b").unwrap();
    let stuck_events = shop
        .app
        .bus
        .events_of(&tenant, &OrderId::parse(&id).unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == EventType::OrderStuck)
        .count();
    assert_eq!(stuck_events, 1, "OrderStuck published once");
}

/// Dead letters on `printworks up`, through the operator API (with the code
/// `printworks ops dlq` runs): a shipped order's `OrderRendered` and an
/// unreadable message sit in dispatch's dead-letter queue. Operators list
/// the queues, look at the letters (what each is, never its body), and
/// redrive them once per key: the old event is handled again and changes
/// nothing (the order and its prints stay as they were); the unreadable one
/// fails again and comes back to the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_once_and_a_handled_one_changes_nothing() {
    let shop = shop_with(|options| Options {
        visibility_timeout: Duration::from_millis(500),
        ..options
    })
    .await;
    let upload_id = upload(&shop.client, &shop.base, &shop.b2b, photo(1800, 2400), true).await;
    let id = shop.place(&poster(&upload_id, 1)).await;
    shop.until(&id, |s| s == "shipped").await;
    let before = shop.shown(&id).await;
    let printed = shop.printed();
    let tenant = TenantId::parse("demo-b2b").unwrap();
    let order_id = OrderId::parse(&id).unwrap();
    let rendered = shop
        .app
        .bus
        .events_of(&tenant, &order_id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == EventType::OrderRendered)
        .unwrap();
    let dlq = format!("{}-dlq", topology::DISPATCH.name);
    shop.app
        .bus
        .send(
            &dlq,
            "OrderRendered",
            &[
                serde_json::to_string(&rendered).unwrap(),
                "{not json".into(),
            ],
        )
        .await
        .unwrap();

    let listed = shop
        .ops(&shop.support, &OpsRequest::dead_letter_queues())
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let dispatch = listed.body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "dispatch")
        .unwrap()
        .clone();
    assert_eq!(dispatch["depth"], 2, "{}", listed.body);
    assert_eq!(dispatch["dead_letter_queue"], dlq.as_str());
    assert!(ops_cmd::dlq_summary(&listed.body).contains("dispatch"));

    let shown = shop
        .ops(&shop.support, &OpsRequest::dead_letters("dispatch"))
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let messages = shown.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{}", shown.body);
    assert_eq!(messages[0]["message"]["kind"], "event");
    assert_eq!(messages[0]["message"]["type"], "OrderRendered");
    assert_eq!(messages[0]["message"]["order_id"], id.as_str());
    assert_eq!(messages[1]["message"]["kind"], "unreadable");
    assert!(
        !shown.body.to_string().contains("not json"),
        "no body is shown: {}",
        shown.body
    );

    // Refusals say what is allowed instead.
    let muc = shop.ops(&shop.muc, &OpsRequest::dead_letter_queues()).await;
    assert_eq!(muc.status, 403, "{}", muc.body);
    assert!(muc.body["error"]["details"]["role_allows"].is_array());
    let unknown = shop
        .ops(&shop.support, &OpsRequest::dead_letters("nope"))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(
        unknown.body["error"]["details"]["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q == "dispatch"),
        "{}",
        unknown.body
    );

    // Redriven once per key.
    let redrive = OpsRequest::redrive("dispatch", "redrive-dispatch-1".into());
    let first = shop.ops(&shop.support, &redrive).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["redrive"]["moved"], 2);
    assert_eq!(first.body["action"]["operator"], "cs");
    let again = shop.ops(&shop.support, &redrive).await;
    assert!(again.replayed);
    assert_eq!(again.body, first.body);
    let reused = shop
        .ops(
            &shop.support,
            &OpsRequest::redrive("render", "redrive-dispatch-1".into()),
        )
        .await;
    assert_eq!(reused.status, 422, "{}", reused.body);

    // The old event is handled and skipped; the unreadable one dies again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (queue, dead) = (
            shop.app.bus.depth(topology::DISPATCH.name).await.unwrap(),
            shop.app.bus.depth(&dlq).await.unwrap(),
        );
        if queue == 0 && dead == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dispatch {queue}, its dead letters {dead}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = shop.shown(&id).await;
    assert_eq!(after["order"]["version"], before["order"]["version"]);
    assert_eq!(after["order"]["state"], "shipped");
    assert_eq!(shop.printed(), printed, "nothing printed again");
    let left = shop
        .ops(&shop.support, &OpsRequest::dead_letters("dispatch"))
        .await;
    assert_eq!(left.body["messages"][0]["message"]["kind"], "unreadable");
}
