//! Every sample event in `events/` goes through its handler, on the local
//! adapters, and gets the response it is there to show.

use events_publisher::handle as publish_batch;
use printworks::adapters::local::blobs::FsBlobStore;
use printworks::adapters::local::bus::{LocalBus, QueueConfig};
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::store::SqliteStore;
use printworks::clock::SystemClock;
use printworks::domain::catalog::Catalog;
use printworks::domain::events::EventType;
use printworks::domain::order::{Order, OrderId, OrderRequest};
use printworks::domain::tenant::TenantId;
use printworks::ports::{IdempotencyRecord, NewOrder, OrderStore, StoredResponse, TenantStore};
use printworks::testing::LocalEnv;
use printworks_tests::{SAMPLE_ORDER_ID, api_router, photo, repo_root, sample_key};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn files(dir: &str) -> BTreeMap<String, String> {
    std::fs::read_dir(repo_root().join("events").join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// The folders under `path`, sorted.
fn folders(path: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn every_function_has_sample_events_and_every_sample_folder_a_function() {
    assert_eq!(
        folders(&repo_root().join("events")),
        folders(&repo_root().join("functions"))
    );
}

#[tokio::test]
async fn every_order_api_sample_gets_its_expected_response() {
    let expected: BTreeMap<&str, (u16, &str)> = BTreeMap::from([
        ("list-products", (200, "products")),
        ("create-upload", (201, "upload_id")),
        ("place-order", (201, "id")),
        (
            "place-order-without-idempotency-key",
            (400, "idempotency_key_required"),
        ),
        (
            "place-order-with-client-price",
            (422, "server_computed_field"),
        ),
        ("get-order", (200, "id")),
        ("change-order-address", (200, "change_address")),
        ("replace-image", (200, "replace_image")),
        ("cancel-order", (200, "cancelled")),
    ]);
    let samples = files("order-api");
    assert_eq!(
        samples.keys().map(String::as_str).collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>()
    );

    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path().join("db.sqlite"), Durability::Normal).unwrap());
    let store = Arc::new(SqliteStore::new(db.clone()));
    let tenant = printworks_local::seed::demo_tenants()
        .into_iter()
        .find(|t| t.id.as_str() == "demo-b2b")
        .unwrap();
    store.put_tenant(&tenant).await.unwrap();
    store.put_api_key(&sample_key(&tenant.id)).await.unwrap();
    // The order the GET and cancel samples name.
    let event: serde_json::Value = serde_json::from_str(&samples["place-order"]).unwrap();
    let request: OrderRequest = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    let (mut order, events) = Order::place(
        Catalog::builtin(),
        &tenant,
        &request,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    order.id = OrderId::parse(SAMPLE_ORDER_ID).unwrap();
    let idempotency = IdempotencyRecord {
        key: "fixture".into(),
        request_hash: "x".into(),
        response: StoredResponse {
            status: 201,
            body: "{}".into(),
        },
    };
    store
        .place(NewOrder {
            order,
            events,
            idempotency,
        })
        .await
        .unwrap();

    let blobs = Arc::new(
        printworks::adapters::local::blobs::FsBlobStore::open(
            dir.path().join("blobs"),
            "http://127.0.0.1:3000",
            Arc::new(SystemClock),
        )
        .unwrap(),
    );
    let router = api_router("local", store.clone(), store.clone(), store.clone(), blobs);

    // get-order runs before cancel-order: BTreeMap order is alphabetical, so sort explicitly.
    let order_of = |name: &str| if name == "cancel-order" { 1 } else { 0 };
    let mut names: Vec<&String> = samples.keys().collect();
    names.sort_by_key(|n| order_of(n));
    for name in names {
        let request = lambda_http::request::from_str(&samples[name])
            .unwrap_or_else(|e| panic!("{name}: not an API Gateway v2 event: {e}"));
        let response = order_api::handle(&router, request).await;
        let status = response.status().as_u16();
        let body = body_bytes(response).await;
        let json: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{name}: body is not JSON"));
        let (want_status, marker) = expected[name.as_str()];
        assert_eq!(status, want_status, "{name}: {json}");
        let text = json.to_string();
        assert!(text.contains(marker), "{name}: {marker} not in {text}");
        if status >= 400 {
            assert_eq!(json["error"]["code"], marker, "{name}");
        }
    }
    db.close();
}

/// The operator API's samples, in the order they tell a story: a held
/// order shown, refused for a tenant's key and without a reason, released
/// (in a new attempt), refused a second release (409 with what is allowed),
/// cancelled.
#[tokio::test]
async fn every_ops_api_sample_gets_its_expected_response() {
    use printworks::domain::state::OrderState;
    use printworks::ports::OperatorStore;
    let expected: [(&str, u16, &str); 6] = [
        (
            "show-held-order",
            200,
            "\"allowed_actions\":[\"show\",\"release\",\"cancel\"]",
        ),
        ("release-with-a-tenant-key", 401, "tenant"),
        ("release-without-a-reason", 422, "reason"),
        ("release-held-order", 200, "\"attempt\":2"),
        ("release-again", 409, "action_not_allowed"),
        ("cancel-released-order", 200, "\"state\":\"cancelled\""),
    ];
    let samples = files("ops-api");
    let mut names: Vec<&str> = expected.iter().map(|e| e.0).collect();
    names.sort();
    assert_eq!(
        samples.keys().map(String::as_str).collect::<Vec<_>>(),
        names
    );

    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path().join("db.sqlite"), Durability::Normal).unwrap());
    let store = Arc::new(SqliteStore::new(db));
    let (operator, key) = printworks_tests::sample_operator();
    store.add_operator(&operator, &key).await.unwrap();
    // The order they name, paid and held before rendering.
    let now = time::OffsetDateTime::now_utc();
    let mut new = printworks::testing::paid_order(&[("poster-30x40", 1)], "DE", now);
    new.order.id = OrderId::parse(SAMPLE_ORDER_ID).unwrap();
    let placed = new.order.clone();
    store.place(new).await.unwrap();
    let (held, event) = placed
        .hold(
            "The photo is too small.",
            serde_json::json!({"code": "too_small"}),
            now,
        )
        .unwrap();
    store.transition(&held, &placed, vec![event]).await.unwrap();

    let app = ops_api::App::new(
        ops_api::Config::for_env("local").unwrap(),
        ops_api::Ops::new(
            Arc::new(Catalog::builtin().clone()),
            store.clone(),
            Arc::new(SystemClock),
        ),
        store.clone(),
    );
    let router = ops_api::lambda_router(Arc::new(app));
    for (name, want_status, marker) in expected {
        let request = lambda_http::request::from_str(&samples[name])
            .unwrap_or_else(|e| panic!("{name}: not an API Gateway v2 event: {e}"));
        let response = ops_api::handle(&router, request).await;
        let status = response.status().as_u16();
        let body = String::from_utf8(body_bytes(response).await).unwrap();
        assert_eq!(status, want_status, "{name}: {body}");
        assert!(body.contains(marker), "{name}: {marker} not in {body}");
    }
    let order = store.get(&held.tenant, &held.id).await.unwrap().unwrap();
    assert_eq!((order.state, order.attempt), (OrderState::Cancelled, 2));
    let actions: Vec<&str> = order.actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["release", "cancel"]);
}

async fn body_bytes(response: axum::response::Response) -> Vec<u8> {
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn every_stream_batch_sample_is_relayed_to_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path().join("db.sqlite"), Durability::Normal).unwrap());
    let bus = LocalBus::new(db.clone(), Arc::new(SystemClock));
    bus.declare_queue(
        "notify",
        QueueConfig {
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 3,
            dead_letter: None,
        },
    )
    .await
    .unwrap();
    bus.subscribe("notify", Some(&[EventType::OrderPlaced]))
        .await
        .unwrap();
    let samples = files("events-publisher");
    assert_eq!(samples.len(), 2);

    let batch: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_str(&samples["stream-batch"]).unwrap();
    let outcome = publish_batch(batch, &bus).await.unwrap();
    assert_eq!(
        (outcome.published, outcome.skipped, outcome.failed.len()),
        (1, 1, 0)
    );
    let got = bus.receive("notify", 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event_type, "OrderPlaced");
    assert!(got[0].body.contains("evt_0192f1f0a0b07c3e9d2a4b5c6d7e8f91"));

    // A corrupt outbox record is reported by its sequence number, the good one still goes out.
    let batch: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_str(&samples["stream-batch-with-corrupt-record"]).unwrap();
    let outcome = publish_batch(batch, &bus).await.unwrap();
    assert_eq!(outcome.published, 1);
    assert_eq!(outcome.failed, vec!["111100000000000000000003".to_string()]);
    let response = serde_json::to_value(outcome.response()).unwrap();
    assert_eq!(
        response["batchItemFailures"][0]["itemIdentifier"],
        "111100000000000000000003"
    );

    // With the fault switch's publisher crash: the batch is published and
    // then the invocation fails, so the stream delivers it again and the
    // same event (same id) is published twice.
    let faults = printworks::faults::Faults::on(printworks::faults::FaultPlan {
        publisher_crashes: 1.0,
        ..Default::default()
    });
    let batch: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_str(&samples["stream-batch"]).unwrap();
    bus.receive("notify", 10).await.unwrap();
    let before = bus.depth("notify").await.unwrap();
    let crashed = events_publisher::handle_with(batch, &bus, &faults).await;
    assert!(
        matches!(
            crashed,
            Err(events_publisher::PublisherError::InjectedCrash(1))
        ),
        "{crashed:?}"
    );
    assert_eq!(
        bus.depth("notify").await.unwrap(),
        before + 1,
        "published before the crash"
    );
    assert_eq!(faults.counts().publisher_crashes, 1);
    db.close();
}

#[tokio::test]
async fn every_payment_webhook_sample_gets_its_expected_response() {
    use printworks::clock::ManualClock;
    use printworks::domain::payment::PaymentStatus;
    use printworks::domain::tenant::{PaymentSetup, TenantId};
    use printworks::ports::FixedSecrets;
    use printworks::webhooks::WebhookSecrets;

    let expected: BTreeMap<&str, (u16, &str)> = BTreeMap::from([
        ("adyen-authorisation-and-capture", (200, "[accepted]")),
        ("stripe-payment-succeeded", (200, r#"{"received":true}"#)),
        ("stripe-wrong-secret", (401, "signature_mismatch")),
        ("unknown-provider", (404, "unknown_provider")),
    ]);
    let samples = files("payment-webhook");
    assert_eq!(
        samples.keys().map(String::as_str).collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>()
    );
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path().join("db.sqlite"), Durability::Normal).unwrap());
    let store = Arc::new(SqliteStore::new(db.clone()));
    // The orders the samples name: the place-order sample's request, for a
    // Stripe brand and for an Adyen one.
    let place: serde_json::Value =
        serde_json::from_str(&files("order-api")["place-order"]).unwrap();
    let request: OrderRequest = serde_json::from_str(place["body"].as_str().unwrap()).unwrap();
    let signed_at = time::OffsetDateTime::from_unix_timestamp(1_795_341_600).unwrap();
    let mut orders = Vec::new();
    for (tenant, provider, id) in [
        ("demo-brand", "stripe", SAMPLE_ORDER_ID),
        (
            "demo-cards",
            "adyen",
            "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f91",
        ),
    ] {
        let mut brand = printworks_local::seed::demo_tenants().remove(0);
        brand.id = TenantId::parse(tenant).unwrap();
        brand.payment = PaymentSetup::Provider {
            provider: provider.into(),
            merchant_account: None,
        };
        let (mut order, events) =
            Order::place(Catalog::builtin(), &brand, &request, signed_at).unwrap();
        order.id = OrderId::parse(id).unwrap();
        assert_eq!(
            order.totals.total.amount, 2356,
            "the samples' amount: run python3 events/payment-webhook/generate.py {}",
            order.totals.total.amount
        );
        let idempotency = IdempotencyRecord {
            key: id.into(),
            request_hash: "x".into(),
            response: StoredResponse {
                status: 201,
                body: "{}".into(),
            },
        };
        store
            .place(NewOrder {
                order: order.clone(),
                events,
                idempotency,
            })
            .await
            .unwrap();
        orders.push(order);
    }
    let secrets = WebhookSecrets::from_json(
        r#"{"stripe": ["whsec_sample_events"], "adyen": ["44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"]}"#,
    )
    .unwrap();
    let webhooks = payment_webhook::Webhooks::new(
        store.clone(),
        store.clone(),
        Arc::new(FixedSecrets(secrets)),
        Arc::new(ManualClock::new(signed_at + Duration::from_secs(5))),
    );
    let router = payment_webhook::router(Arc::new(webhooks));
    for (name, raw) in &samples {
        let request = lambda_http::request::from_str(raw)
            .unwrap_or_else(|e| panic!("{name}: not an API Gateway v2 event: {e}"));
        let response = payment_webhook::handle(&router, request).await;
        let status = response.status().as_u16();
        let body = String::from_utf8(body_bytes(response).await).unwrap();
        let (want_status, marker) = expected[name.as_str()];
        assert_eq!(status, want_status, "{name}: {body}");
        assert!(body.contains(marker), "{name}: {marker} not in {body}");
    }
    for order in &orders {
        let paid = store.get(&order.tenant, &order.id).await.unwrap().unwrap();
        assert_eq!(paid.state.as_str(), "paid", "{}", order.tenant);
        assert_eq!(paid.payment_status.unwrap().status, PaymentStatus::Captured);
    }
    db.close();
}

/// The shared local environment of the SQS-triggered samples (its clock
/// at the samples' time), with the plants' job queues and the uploads and
/// prints stores.
struct Plants {
    local: LocalEnv,
    uploads: Arc<FsBlobStore>,
    prints: Arc<FsBlobStore>,
}

impl std::ops::Deref for Plants {
    type Target = LocalEnv;
    fn deref(&self) -> &LocalEnv {
        &self.local
    }
}

/// When the orders the samples name were placed (and paid).
const SAMPLES_AT: time::OffsetDateTime = time::macros::datetime!(2026-11-22 10:00:00 UTC);

impl Plants {
    async fn new() -> Plants {
        let local = LocalEnv::starting_at(SAMPLES_AT).await;
        for plant in Catalog::builtin().plants.keys() {
            local.declare_queue(&format!("plant-{plant}-jobs")).await;
        }
        let uploads = local.blobs("uploads", "http://127.0.0.1:3000/uploads");
        let prints = local.blobs("prints", "http://127.0.0.1:3000/prints");
        Plants {
            local,
            uploads,
            prints,
        }
    }

    /// The `paid_order` fixture with the id a sample names (not yet placed).
    fn paid_order(&self, id: &str, items: &[(&str, u32)], country: &str) -> NewOrder {
        let mut new = self.local.paid_order(items, country);
        new.order.id = OrderId::parse(id).unwrap();
        for event in &mut new.events {
            event.order_id = new.order.id.clone();
        }
        new
    }

    /// The `paid_order` fixture with the id a sample names, rendered by the
    /// `rendered` fixture (its stand-in print files stored); returns the
    /// rendered order and its `OrderRendered` event.
    async fn rendered(
        &self,
        id: &str,
        items: &[(&str, u32)],
        country: &str,
    ) -> (Order, printworks::domain::events::EventEnvelope) {
        let paid = self.place(self.paid_order(id, items, country)).await;
        self.render(&paid, Some(self.prints.as_ref())).await
    }

    /// A rendered order dispatched to its plant, as dispatch writes it.
    async fn dispatched(&self, id: &str, items: &[(&str, u32)], country: &str) -> Order {
        use printworks::domain::production::Dispatch;
        use printworks::ports::ProductionStore;
        let (rendered, _) = self.rendered(id, items, country).await;
        let Dispatch::ToPlant { next, event } = rendered
            .dispatch(Catalog::builtin(), &BTreeMap::new(), rendered.updated_at)
            .unwrap()
        else {
            panic!("{id}: held");
        };
        let production = next.production.clone().unwrap();
        self.store
            .transition_counted(
                &next,
                &rendered,
                vec![event],
                &production.plant,
                production.open_jobs(),
            )
            .await
            .unwrap();
        next
    }

    async fn order(&self, tenant: &TenantId, id: &str) -> Order {
        self.store
            .get(tenant, &OrderId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    /// The order's timeline (the outbox relayed first).
    async fn events_of(&self, order: &Order) -> Vec<EventType> {
        self.bus.relay_outbox(10_000).await.unwrap();
        self.bus
            .events_of(&order.tenant, &order.id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// Every job on a plant's queue (taken off it).
    async fn jobs(&self, plant: &str) -> Vec<printworks::domain::production::Job> {
        let queue = format!("plant-{plant}-jobs");
        let mut jobs = Vec::new();
        loop {
            let batch = self.bus.receive(&queue, 10).await.unwrap();
            if batch.is_empty() {
                return jobs;
            }
            for m in batch {
                self.bus.delete(&m.receipt).await.unwrap();
                jobs.push(printworks::domain::production::Job::parse(&m.body).unwrap());
            }
        }
    }
}

fn sqs_event(name: &str, raw: &str) -> aws_lambda_events::event::sqs::SqsEvent {
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("{name}: not an SQS event: {e}"))
}

/// The record bodies of an SQS sample, parsed.
fn bodies(event: &aws_lambda_events::event::sqs::SqsEvent) -> Vec<serde_json::Value> {
    event
        .records
        .iter()
        .map(|r| serde_json::from_str(r.body.as_deref().unwrap()).unwrap())
        .collect()
}

const RENDERED_ORDER_ID: &str = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f92";
const PAID_ORDER_ID: &str = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f96";
const PAID_UPLOAD_ID: &str = "upl_0192f1f0a0b07c3e9d2a4b5c6d7e8fc1";
const SHIPPED_ORDER_ID: &str = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f93";
const FAILED_ORDER_ID: &str = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f94";

#[tokio::test]
async fn every_dispatch_sample_sends_its_orders_jobs_to_the_plant() {
    use printworks::domain::state::OrderState;
    let samples = files("dispatch");
    assert_eq!(
        samples.keys().map(String::as_str).collect::<Vec<_>>(),
        ["order-rendered"]
    );
    let env = Plants::new().await;
    // The order the sample names: posters and a card to AT, which only muc serves.
    let items = [("poster-30x40", 2), ("card-a6-folded", 1)];
    let (rendered, fixture_event) = env.rendered(RENDERED_ORDER_ID, &items, "AT").await;
    let event = sqs_event("order-rendered", &samples["order-rendered"]);
    let envelope = &bodies(&event)[0];
    assert_eq!(
        (
            &envelope["type"],
            &envelope["tenant"],
            &envelope["order_id"]
        ),
        (
            &"OrderRendered".into(),
            &rendered.tenant.as_str().into(),
            &RENDERED_ORDER_ID.into()
        )
    );
    assert_eq!(
        envelope["data"], fixture_event.data,
        "the sample's renders are the fixture's: run python3 events/dispatch/generate.py"
    );
    assert_eq!(
        event.records[0].message_attributes["type"]
            .string_value
            .as_deref(),
        Some("OrderRendered"),
        "raw SNS delivery carries the type attribute the subscription filters on"
    );

    let dispatcher = dispatch::Dispatcher {
        catalog: Arc::new(Catalog::builtin().clone()),
        orders: env.store.clone(),
        production: env.store.clone(),
        prints: env.prints.clone(),
        plants: dispatch::PlantQueues::for_plants(Catalog::builtin().plants.keys(), |plant| {
            Arc::new(env.bus.queue(&format!("plant-{plant}-jobs")))
        }),
        clock: Arc::new(SystemClock),
        url_ttl: Duration::from_secs(3600),
    };
    let response = dispatcher.handle_sqs(event).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );

    let order = env.order(&rendered.tenant, RENDERED_ORDER_ID).await;
    assert_eq!(order.state, OrderState::Dispatched);
    let production = order.production.clone().unwrap();
    assert_eq!(production.plant, "muc");
    let hex = RENDERED_ORDER_ID.trim_start_matches("ord_");
    let stored: Vec<&str> = production.jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(
        stored,
        [
            format!("job_{hex}-1-1"),
            format!("job_{hex}-1-2"),
            format!("job_{hex}-2-1")
        ]
    );
    let jobs = env.jobs("muc").await;
    let sent: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(sent, stored);
    assert!(env.jobs("btf").await.is_empty());
    for job in &jobs {
        let item = &order.items[job.line as usize - 1];
        assert_eq!(job.order_id, order.id);
        assert_eq!(job.packing_ref, production.packing_ref);
        let file = &job.files[0];
        assert_eq!(file.sha256, item.renders[0].print.sha256);
        assert!(file.url.starts_with("http://127.0.0.1:3000/prints/blobs/"));
    }
    assert_eq!(
        env.events_of(&order).await,
        [
            EventType::OrderPlaced,
            EventType::OrderPaid,
            EventType::OrderRendered,
            EventType::OrderDispatched
        ]
    );
    env.db.close();
}

#[tokio::test]
async fn every_render_sample_renders_its_order_into_files() {
    use printworks::domain::order::ImageSource;
    use printworks::domain::print::PrintFileKeys;
    use printworks::domain::state::OrderState;
    use printworks::domain::upload::upload_key;
    use printworks::ports::BlobStore;
    use sha2::{Digest, Sha256};
    let samples = files("render");
    assert_eq!(
        samples.keys().map(String::as_str).collect::<Vec<_>>(),
        ["order-paid"]
    );
    let env = Plants::new().await;
    // The order the sample names: a poster to DE, its photo (landscape, on
    // a portrait poster: turned and cropped) an upload of the tenant's.
    let mut new = env.paid_order(PAID_ORDER_ID, &[("poster-20x30", 1)], "DE");
    let key = upload_key(&new.order.tenant, PAID_UPLOAD_ID);
    new.order.items[0].images[0].source = ImageSource::Upload {
        upload_id: PAID_UPLOAD_ID.into(),
        key: key.clone(),
    };
    let fixture_event = new
        .events
        .iter()
        .find(|e| e.event_type == EventType::OrderPaid)
        .expect("a B2B order is paid on placement")
        .clone();
    let paid = env.place(new).await;
    env.uploads
        .put(&key, photo(2400, 1600), "image/jpeg")
        .await
        .unwrap();

    let event = sqs_event("order-paid", &samples["order-paid"]);
    let envelope = &bodies(&event)[0];
    assert_eq!(
        (
            &envelope["type"],
            &envelope["tenant"],
            &envelope["order_id"]
        ),
        (
            &"OrderPaid".into(),
            &paid.tenant.as_str().into(),
            &PAID_ORDER_ID.into()
        )
    );
    assert_eq!(
        envelope["data"], fixture_event.data,
        "the sample's amount is the fixture's: run python3 events/render/generate.py"
    );
    assert_eq!(
        event.records[0].message_attributes["type"]
            .string_value
            .as_deref(),
        Some("OrderPaid"),
        "raw SNS delivery carries the type attribute the subscription filters on"
    );

    let renderer = render::Renderer {
        catalog: Arc::new(Catalog::builtin().clone()),
        orders: env.store.clone(),
        uploads: env.uploads.clone(),
        prints: env.prints.clone(),
        urls: Arc::new(
            printworks::fetch::UrlFetcher::new(printworks::fetch::FetchPolicy::default()).unwrap(),
        ),
        clock: env.clock.clone(),
        limits: printworks::render::Limits::default(),
        max_attempts: 4,
    };
    let response = renderer.handle_sqs(event.clone()).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );

    // Rendered: the print file and the preview stored, as recorded.
    let order = env.order(&paid.tenant, PAID_ORDER_ID).await;
    assert_eq!(order.state, OrderState::Rendered);
    let renders = &order.items[0].renders;
    assert_eq!(renders.len(), 1, "one render for the one photo");
    let PrintFileKeys {
        print: print_key,
        preview: preview_key,
    } = PrintFileKeys::of(&order, 1, 0);
    assert_eq!(
        (&renders[0].print.key, &renders[0].preview.key),
        (&print_key, &preview_key)
    );
    for file in [&renders[0].print, &renders[0].preview] {
        let bytes = env.prints.get(&file.key).await.unwrap().expect(&file.key);
        assert_eq!(bytes.len() as u64, file.bytes, "{}", file.key);
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            file.sha256,
            "{}",
            file.key
        );
        assert!(
            bytes.starts_with(&[0xFF, 0xD8, 0xFF]),
            "{}: a JPEG",
            file.key
        );
    }
    let (print, preview) = (&renders[0].print, &renders[0].preview);
    assert!(print.height > print.width, "a portrait poster: {print:?}");
    assert!(
        preview.width < print.width && preview.height < print.height,
        "the preview is smaller than the print: {preview:?}"
    );
    assert_eq!(
        env.events_of(&order).await,
        [
            EventType::OrderPlaced,
            EventType::OrderPaid,
            EventType::OrderRendered
        ]
    );

    // The same record delivered again: skipped, nothing rendered twice.
    let response = renderer.handle_sqs(event).await;
    assert!(response.batch_item_failures.is_empty());
    let again = env.order(&paid.tenant, PAID_ORDER_ID).await;
    assert_eq!(again.version, order.version);
    assert_eq!(again.items[0].renders, order.items[0].renders);
    env.db.close();
}

#[tokio::test]
async fn every_production_events_sample_moves_its_order() {
    use printworks::domain::production::JobState;
    use printworks::domain::state::OrderState;
    use printworks::ports::ProductionStore;
    let samples = files("production-events");
    assert_eq!(
        samples.keys().map(String::as_str).collect::<Vec<_>>(),
        ["job-accepted", "job-failed", "job-shipped"]
    );
    let env = Plants::new().await;
    // The orders the samples name, one poster each to AT: dispatched to muc.
    let shipped = env
        .dispatched(SHIPPED_ORDER_ID, &[("poster-30x40", 1)], "AT")
        .await;
    let failed = env
        .dispatched(FAILED_ORDER_ID, &[("poster-30x40", 1)], "AT")
        .await;
    for order in [&shipped, &failed] {
        assert_eq!(order.production.as_ref().unwrap().plant, "muc");
    }
    let handler = production_events::ProductionEvents {
        orders: env.store.clone(),
        production: env.store.clone(),
        clock: Arc::new(SystemClock),
    };
    let open = || async { env.store.open_jobs(&["muc".into()]).await.unwrap()["muc"] };
    assert_eq!(open().await, 2);

    // Accepted, then shipped, for one order; the other's job fails.
    let steps = [
        (
            "job-accepted",
            &shipped,
            OrderState::InProduction,
            JobState::Accepted,
        ),
        (
            "job-shipped",
            &shipped,
            OrderState::Shipped,
            JobState::Shipped,
        ),
        ("job-failed", &failed, OrderState::OnHold, JobState::Failed),
    ];
    for (name, order, state, status) in steps {
        let event = sqs_event(name, &samples[name]);
        let report = &bodies(&event)[0];
        let job = &order.production.as_ref().unwrap().jobs[0];
        assert_eq!(report["job_id"], job.job_id.as_str(), "{name}");
        assert_eq!(report["order_id"], order.id.as_str(), "{name}");
        assert_eq!(report["tenant"], order.tenant.as_str(), "{name}");
        let response = handler.handle_sqs(event).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "{name}: {:?}",
            response.batch_item_failures
        );
        let now = env.order(&order.tenant, order.id.as_str()).await;
        assert_eq!(now.state, state, "{name}");
        assert_eq!(
            now.production.unwrap().jobs[0].status,
            Some(status),
            "{name}"
        );
    }
    assert_eq!(open().await, 0, "shipped and failed jobs are closed");

    let done = env.order(&shipped.tenant, SHIPPED_ORDER_ID).await;
    let job = &done.production.as_ref().unwrap().jobs[0];
    assert_eq!(
        (job.carrier.as_deref(), job.tracking.as_deref()),
        (Some("DHL"), Some("00340434161094042557"))
    );
    let timeline = env.events_of(&done).await;
    assert_eq!(
        timeline[timeline.len() - 2..],
        [EventType::OrderInProduction, EventType::OrderShipped]
    );
    let held = env.order(&failed.tenant, FAILED_ORDER_ID).await;
    assert!(
        held.hold
            .as_ref()
            .unwrap()
            .reason
            .contains("print head 3 clogged"),
        "the plant's reason reaches the hold"
    );
    let timeline = env.events_of(&held).await;
    assert_eq!(
        timeline[timeline.len() - 2..],
        [EventType::ProductionFailed, EventType::OrderOnHold]
    );
    env.db.close();
}

const NOTIFY_ORDER_ID: &str = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f95";

#[tokio::test]
async fn every_notify_sample_tells_the_customer_once() {
    use printworks::adapters::local::outbox::OutboxFolder;
    use printworks::ports::{NotificationStatus, NotificationStore};
    let samples = files("notify");
    assert_eq!(
        samples.keys().map(String::as_str).collect::<Vec<_>>(),
        ["order-events", "sweep"]
    );
    let env = Plants::new().await;
    // The order and tenant the samples name; the tenant mails its customers.
    let mut new = env.paid_order(NOTIFY_ORDER_ID, &[("poster-30x40", 1)], "DE");
    new.order.customer.phone = Some("+4915112345678".into());
    let order = env.place(new).await;
    let mut tenant = printworks::testing::b2b_tenant();
    tenant.notifications.email = Some(true);
    tenant.notifications.sms = Some(true);
    env.store.put_tenant(&tenant).await.unwrap();

    let event = sqs_event("order-events", &samples["order-events"]);
    let types: Vec<_> = bodies(&event)
        .iter()
        .map(|b| b["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderShipped", "OrderPlaced"]);
    for (record, body) in event.records.iter().zip(bodies(&event)) {
        assert_eq!(body["order_id"], NOTIFY_ORDER_ID);
        assert_eq!(
            record.message_attributes["type"].string_value.as_deref(),
            body["type"].as_str()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let outbox = OutboxFolder::open(dir.path(), Arc::new(SystemClock)).unwrap();
    let notifier = notify::Notifier {
        orders: env.store.clone(),
        tenants: env.store.clone(),
        ledger: env.store.clone(),
        channels: notify::Channels {
            mail: Arc::new(outbox.clone()),
            sms: Arc::new(outbox.clone()),
            webhooks: Arc::new(printworks::webhook_out::HttpWebhooks::new(
                printworks::fetch::UrlFetcher::new(Default::default()).unwrap(),
            )),
        },
        templates: Arc::new(notify::templates::Templates::builtin().unwrap().strict()),
        caps: Default::default(),
        clock: Arc::new(SystemClock),
        lease: Duration::from_secs(120),
        backoff: Duration::from_secs(30),
    };
    let response = notifier.handle_sqs(event, None).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    // Placed and shipped, each mailed once (the third record repeats the
    // first); the shipment also texted.
    assert_eq!(outbox.emails().unwrap().len(), 2);
    assert_eq!(outbox.texts().unwrap().len(), 1);
    let shipped = outbox
        .emails()
        .unwrap()
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .filter(|eml| eml.contains("00340434161094042557"))
        .count();
    assert_eq!(shipped, 1, "the shipment mail carries the tracking number");
    let records = env.store.notifications_of(&order.id).await.unwrap();
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| matches!(r.status, NotificationStatus::Sent { .. }))
    );

    // The schedule's input is what main.rs reads as a sweep; nothing is due.
    let sweep: serde_json::Value = serde_json::from_str(&samples["sweep"]).unwrap();
    assert_eq!(sweep, serde_json::json!({"sweep": "deferred"}));
    assert!(notifier.sweep(500).await.unwrap().is_empty());
    assert!(
        env.store
            .due_deferred(time::OffsetDateTime::now_utc(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    env.db.close();
}

/// The reconciler's schedule sends `{"reconcile": "all"}` (the template's
/// `Input`); the function runs one pass whatever the payload: here an
/// order paid 16 minutes ago and never rendered is handed to render.
#[tokio::test]
async fn the_reconciler_sample_runs_one_pass() {
    let samples = files("reconciler");
    assert_eq!(samples.keys().collect::<Vec<_>>(), ["schedule"]);
    let input: serde_json::Value = serde_json::from_str(&samples["schedule"]).unwrap();
    let template: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(repo_root().join("infra/template.yaml")).unwrap(),
    )
    .unwrap();
    let sent = template["Resources"]["ReconcilerFunction"]["Properties"]["Events"]["Every5Minutes"]
        ["Properties"]["Input"]
        .as_str()
        .expect("the schedule's input");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(sent).unwrap(),
        input,
        "the sample is what the template's schedule sends"
    );
    let env = LocalEnv::new().await;
    env.place_paid(&[("poster-30x40", 1)], "DE").await;
    env.bus.relay_outbox(100).await.unwrap();
    env.clock.advance(Duration::from_secs(16 * 60));
    let reconciler = reconciler::Reconciler::new(
        &reconciler::Config::default(),
        env.store.clone(),
        env.store.clone(),
        Arc::new(env.bus.clone()),
        env.clock.clone(),
    );
    let report = reconciler.run().await.unwrap();
    assert_eq!(report.rendered_again, 1, "{report:?}");
}

/// The stats sample: the batch counted once however often it comes, each
/// event under its UTC day, the lead time from `placed_at` to the shipment.
#[tokio::test]
async fn the_stats_sample_is_counted_once() {
    use printworks::domain::stats::{Report, StatsQuery};
    use printworks::ports::StatsStore;
    let samples = files("stats");
    assert_eq!(
        samples.keys().map(String::as_str).collect::<Vec<_>>(),
        ["counted-events"]
    );
    let dir = tempfile::tempdir().unwrap();
    let store = printworks_tests::sqlite_store(dir.path());
    let handler = stats::Stats::new(store.clone());
    for _ in 0..2 {
        let batch: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_str(&samples["counted-events"]).unwrap();
        assert_eq!(batch.records.len(), 4);
        let response = handler.handle_sqs(batch).await;
        assert!(response.batch_item_failures.is_empty());
    }
    let query = StatsQuery::new(
        time::macros::date!(2026 - 11 - 21),
        time::macros::date!(2026 - 11 - 22),
        None,
        None,
    )
    .unwrap();
    let report = Report::from_counts(&query, store.counts(&query).await.unwrap());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["revenue"],
        serde_json::json!([
            {"day": "2026-11-21", "tenant": "acme-prints", "currency": "EUR", "orders": 1,
             "net": 1480, "vat": 281, "gross": 1761, "refunded": 0, "average_order_value": 1480},
            {"day": "2026-11-22", "tenant": "acme-prints", "currency": "CHF", "orders": 0,
             "net": 0, "vat": 0, "gross": 0, "refunded": 500, "average_order_value": 0},
        ])
    );
    assert_eq!(
        json["holds"],
        serde_json::json!([{"day": "2026-11-21", "tenant": "acme-prints",
            "code": "unprintable_resolution", "holds": 1}])
    );
    assert_eq!(
        json["lead_times"],
        serde_json::json!([{"plant": "muc", "sku": "poster-20x30", "orders": 1,
            "p50_minutes": 1560, "p95_minutes": 1560}])
    );
}
