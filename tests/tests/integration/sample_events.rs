//! Every sample event in `events/` goes through its handler, on the local
//! adapters, and gets the response it is there to show.

use events_publisher::handle as publish_batch;
use printworks::adapters::local::bus::{LocalBus, QueueConfig};
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::store::SqliteStore;
use printworks::domain::catalog::Catalog;
use printworks::domain::events::EventType;
use printworks::domain::order::{Order, OrderId, OrderRequest};
use printworks::ports::{
    IdempotencyRecord, NewOrder, OrderStore, StoredResponse, SystemClock, TenantStore,
};
use printworks_tests::{SAMPLE_ORDER_ID, api_router, repo_root, sample_key};
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
    let router = api_router("local", store.clone(), store.clone(), blobs);

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
    db.close();
}

#[tokio::test]
async fn every_payment_webhook_sample_gets_its_expected_response() {
    use printworks::domain::payment::PaymentStatus;
    use printworks::domain::tenant::{PaymentSetup, TenantId};
    use printworks::ports::{FixedSecrets, ManualClock};
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
