//! The AWS adapters against the emulators: DynamoDB (and its stream) on
//! AWS's DynamoDB Local, everything else on moto server. `scripts/test`
//! starts both and sets `AWS_ENDPOINT_URL` (moto) and
//! `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local); without them these tests
//! say so and return. The concurrency tests here (claims, duplicate
//! payment deliveries) run truly concurrently: DynamoDB Local isolates
//! transactions as DynamoDB does.

use printworks::adapters::aws::dynamodb::DynamoStore;
use printworks::adapters::aws::load_sdk_config;
use printworks::adapters::aws::s3::S3Blobs;
use printworks::adapters::aws::sns::SnsPublisher;
use printworks::adapters::aws::sqs::SqsQueue;
use printworks::domain::events::EventEnvelope;
use printworks::domain::tenant::mint_api_key;
use printworks::ports::{BlobStore, TenantStore};
use printworks::testing::emulator::{
    create_bucket, create_orders_table, create_queue as create_sqs_queue, dynamodb_endpoint,
    queue_arn, run_id,
};
use printworks_tests::{api_router, emulator, openapi, request_example};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    sdk: aws_config::SdkConfig,
    table: String,
    bucket: String,
    topic_arn: String,
    /// Subscribed with a filter on OrderPaid only.
    paid_queue: String,
    /// Subscribed to every event.
    all_queue: String,
}

/// Creates the queue `name` and subscribes it to `topic` (raw delivery,
/// with `filter` as its filter policy); returns its URL.
async fn create_queue(
    sdk: &aws_config::SdkConfig,
    topic: &str,
    name: &str,
    filter: Option<Value>,
) -> String {
    let url = create_sqs_queue(sdk, name).await;
    let arn = queue_arn(sdk, &url).await;
    let mut sub = aws_sdk_sns::Client::new(sdk)
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(arn)
        .attributes("RawMessageDelivery", "true");
    if let Some(filter) = filter {
        sub = sub.attributes("FilterPolicy", filter.to_string());
    }
    sub.send().await.unwrap();
    url
}

async fn fixture() -> Fixture {
    let sdk = load_sdk_config().await;
    let run = run_id();
    let (table, bucket) = (format!("orders-{run}"), format!("uploads-{run}"));
    create_orders_table(&sdk, &table).await;
    create_bucket(&sdk, &bucket).await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let topic_arn = sns
        .create_topic()
        .name(format!("order-events-{run}"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let paid_queue = create_queue(
        &sdk,
        &topic_arn,
        &format!("render-{run}"),
        Some(json!({"type": ["OrderPaid"]})),
    )
    .await;
    let all_queue = create_queue(&sdk, &topic_arn, &format!("audit-{run}"), None).await;
    Fixture {
        sdk,
        table,
        bucket,
        topic_arn,
        paid_queue,
        all_queue,
    }
}

/// Reads the table's stream as Lambda would receive it: the DynamoDB
/// Streams API answers records in exactly the event's shape.
async fn stream_batch(f: &Fixture) -> Value {
    let ddb = aws_sdk_dynamodb::Client::new(&f.sdk);
    let arn = ddb
        .describe_table()
        .table_name(&f.table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
        .latest_stream_arn
        .unwrap();
    let client = reqwest::Client::new();
    // DynamoDB Local serves the Streams API at its DynamoDB endpoint.
    let streams = dynamodb_endpoint().expect("the DynamoDB endpoint");
    let call = |target: &'static str, body: Value| {
        let client = client.clone();
        let endpoint = streams.clone();
        async move {
            let res = client
                .post(&endpoint)
                .header("X-Amz-Target", format!("DynamoDBStreams_20120810.{target}"))
                .header("Content-Type", "application/x-amz-json-1.0")
                .header("Authorization", "AWS4-HMAC-SHA256 Credential=test/20261122/eu-central-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{target}: {}", res.status());
            res.json::<Value>().await.unwrap()
        }
    };
    let desc = call("DescribeStream", json!({"StreamArn": arn})).await;
    let mut records = Vec::new();
    for shard in desc["StreamDescription"]["Shards"].as_array().unwrap() {
        let it = call("GetShardIterator", json!({"StreamArn": arn, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"})).await;
        let got = call("GetRecords", json!({"ShardIterator": it["ShardIterator"]})).await;
        for mut r in got["Records"].as_array().unwrap().clone() {
            r["eventSourceARN"] = json!(arn);
            records.push(r);
        }
    }
    json!({ "Records": records })
}

async fn drain(queue: &SqsQueue, want: usize) -> Vec<EventEnvelope> {
    let mut got = Vec::new();
    for _ in 0..10 {
        for m in queue.receive(10, 1).await.unwrap() {
            got.push(
                serde_json::from_str::<EventEnvelope>(&m.body)
                    .expect("raw delivery carries the envelope"),
            );
            queue.delete(&m.receipt_handle).await.unwrap();
        }
        if got.len() >= want {
            break;
        }
    }
    got
}

#[tokio::test]
async fn emulator_order_through_dynamodb_stream_sns_and_sqs() {
    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let blobs = Arc::new(S3Blobs::from_sdk(&f.sdk, &f.bucket, true));
    let tenants = printworks_local::seed::demo_tenants();
    let mut keys = Vec::new();
    for tenant in &tenants {
        store.put_tenant(tenant).await.unwrap();
        let key = mint_api_key("test", &tenant.id);
        store.put_api_key(&key.record).await.unwrap();
        keys.push(key.full);
    }
    let (brand_key, b2b_key) = (keys[0].clone(), keys[1].clone());
    let router = api_router("test", store.clone(), store.clone(), store.clone(), blobs);

    let request = |method: &str, path: &str, key: &str, idem: Option<&str>, body: Option<Value>| {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"));
        if let Some(idem) = idem {
            b = b.header("idempotency-key", idem);
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                lambda_http::Body::Text(v.to_string())
            }
            None => lambda_http::Body::Empty,
        };
        b.body(body).unwrap()
    };
    let call = |req| {
        let router = router.clone();
        async move {
            let res = order_api::handle(&router, req).await;
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };

    // B2C: OrderPlaced only. B2B: OrderPlaced and OrderPaid.
    let example = request_example(&openapi(), "/v1/orders");
    let (status, b2c) = call(request(
        "POST",
        "/v1/orders",
        &brand_key,
        Some("k-1"),
        Some(example.clone()),
    ))
    .await;
    assert_eq!(status, 201, "{b2c}");
    let (status, replay) = call(request(
        "POST",
        "/v1/orders",
        &brand_key,
        Some("k-1"),
        Some(example.clone()),
    ))
    .await;
    assert_eq!(
        (status, &replay),
        (201, &b2c),
        "replayed from the DynamoDB idempotency record"
    );
    let mut other = example.clone();
    other["items"][0]["quantity"] = json!(5);
    let (status, err) = call(request(
        "POST",
        "/v1/orders",
        &brand_key,
        Some("k-1"),
        Some(other),
    ))
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let (status, b2b) = call(request(
        "POST",
        "/v1/orders",
        &b2b_key,
        Some("k-1"),
        Some(example.clone()),
    ))
    .await;
    assert_eq!(
        (status, b2b["state"].as_str()),
        (201, Some("paid")),
        "{b2b}"
    );
    let b2b_id = b2b["id"].as_str().unwrap();

    let (status, read) = call(request(
        "GET",
        &format!("/v1/orders/{b2b_id}"),
        &b2b_key,
        None,
        None,
    ))
    .await;
    assert_eq!((status, &read), (200, &b2b));
    let (status, _) = call(request(
        "GET",
        &format!("/v1/orders/{b2b_id}"),
        &brand_key,
        None,
        None,
    ))
    .await;
    assert_eq!(status, 404, "another tenant's order");
    let (status, cancelled) = call(request(
        "POST",
        &format!("/v1/orders/{}/cancel", b2c["id"].as_str().unwrap()),
        &brand_key,
        None,
        None,
    ))
    .await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled")),
        "conditional write on the rank"
    );

    // Relay the stream with events-publisher, on SNS.
    let batch: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_value(stream_batch(&f).await).unwrap();
    let outcome = events_publisher::handle(batch, &SnsPublisher::from_sdk(&f.sdk, &f.topic_arn))
        .await
        .unwrap();
    assert_eq!(
        outcome.published, 4,
        "OrderPlaced x2, OrderPaid, OrderCancelled"
    );
    assert!(outcome.failed.is_empty());
    assert!(
        outcome.skipped >= 3,
        "order and idempotency items are not events"
    );

    let all = drain(&SqsQueue::from_sdk(&f.sdk, &f.all_queue), 4).await;
    let mut types: Vec<&str> = all.iter().map(|e| e.event_type.as_str()).collect();
    types.sort();
    assert_eq!(
        types,
        vec!["OrderCancelled", "OrderPaid", "OrderPlaced", "OrderPlaced"]
    );
    let placed = all
        .iter()
        .find(|e| e.order_id.as_str() == b2b_id && e.event_type.as_str() == "OrderPlaced")
        .unwrap();
    assert_eq!(placed.tenant.as_str(), "demo-b2b");
    let paid = drain(&SqsQueue::from_sdk(&f.sdk, &f.paid_queue), 1).await;
    assert_eq!(
        paid.len(),
        1,
        "the filter policy lets only OrderPaid through"
    );
    assert_eq!(paid[0].order_id.as_str(), b2b_id);
}

#[tokio::test]
async fn emulator_presigned_upload_and_download_over_http() {
    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let blobs = S3Blobs::from_sdk(&f.sdk, &f.bucket, true);
    let photo: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let key = "uploads/demo-brand/upl_0123456789abcdef0123456789abcdef";
    let put = blobs
        .presign_put(
            key,
            "image/jpeg",
            photo.len() as u64,
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    assert_eq!(put.method, "PUT");
    assert!(put.url.contains("X-Amz-Signature="));
    let client = reqwest::Client::new();
    let mut req = client.put(&put.url).body(photo.clone());
    for (name, value) in &put.headers {
        req = req.header(name, value);
    }
    let res = req.send().await.unwrap();
    assert!(
        res.status().is_success(),
        "{}: {}",
        res.status(),
        res.text().await.unwrap()
    );
    assert_eq!(blobs.get(key).await.unwrap().unwrap(), photo);

    let get = blobs
        .presign_get(key, Duration::from_secs(300))
        .await
        .unwrap();
    let res = client.get(&get.url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().to_vec(), photo);
    assert!(
        blobs
            .get("uploads/demo-brand/missing")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn emulator_render_from_s3_through_the_topic() {
    use printworks::domain::order::OrderId;
    use printworks::ports::OrderStore;
    use sha2::Digest;

    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let uploads = Arc::new(S3Blobs::from_sdk(&f.sdk, &f.bucket, true));
    let prints_bucket = format!("{}-prints", f.bucket);
    create_bucket(&f.sdk, &prints_bucket).await;
    let prints = Arc::new(S3Blobs::from_sdk(&f.sdk, &prints_bucket, true));
    let b2b = printworks_local::seed::demo_tenants().remove(1);
    store.put_tenant(&b2b).await.unwrap();
    let key = mint_api_key("test", &b2b.id);
    store.put_api_key(&key.record).await.unwrap();

    // The photo, in the uploads bucket under the tenant.
    let raster = printworks::render::Raster {
        width: 1800,
        height: 1200,
        channels: 3,
        data: (0..1800 * 1200)
            .flat_map(|i| [(i % 1800 / 8) as u8, (i / 1800 / 5) as u8, 90])
            .collect(),
    };
    let photo = printworks::render::encode_jpeg(
        &raster,
        printworks::render::JpegOut {
            quality: 90,
            full_chroma: false,
            dpi: 72,
        },
        &[],
    )
    .unwrap();
    let upload_id = format!("upl_{}", uuid::Uuid::new_v4().simple());
    uploads
        .put(
            &format!("uploads/demo-b2b/{upload_id}"),
            photo,
            "image/jpeg",
        )
        .await
        .unwrap();

    // A B2B order for it, placed through the API handler on DynamoDB.
    let router = api_router(
        "test",
        store.clone(),
        store.clone(),
        store.clone(),
        uploads.clone(),
    );
    let mut body = request_example(&openapi(), "/v1/orders");
    body["items"] =
        json!([{"sku": "photo-13x18", "quantity": 3, "images": [{"upload_id": upload_id}]}]);
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/orders")
        .header("authorization", format!("Bearer {}", key.full))
        .header("idempotency-key", "render-1")
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(body.to_string()))
        .unwrap();
    let res = order_api::handle(&router, req).await;
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let order: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(order["state"], "paid", "{order}");
    let order_id = OrderId::parse(order["id"].as_str().unwrap()).unwrap();

    // Stream -> events-publisher -> SNS -> the OrderPaid-filtered queue.
    let batch: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_value(stream_batch(&f).await).unwrap();
    events_publisher::handle(batch, &SnsPublisher::from_sdk(&f.sdk, &f.topic_arn))
        .await
        .unwrap();
    let sqs = aws_sdk_sqs::Client::new(&f.sdk);
    let received = sqs
        .receive_message()
        .queue_url(&f.paid_queue)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .send()
        .await
        .unwrap();
    let messages = received.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1, "only OrderPaid passes the filter");
    // The batch exactly as Lambda's SQS event source hands it over.
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let count = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
                .cloned()
                .unwrap_or_else(|| "1".into());
            json!({"messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                   "attributes": {"ApproximateReceiveCount": count}, "messageAttributes": {},
                   "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-central-1:123456789012:render", "awsRegion": "eu-central-1"})
        })
        .collect();
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_value(json!({ "Records": records })).unwrap();

    let renderer = render::Renderer {
        catalog: Arc::new(printworks::domain::catalog::Catalog::builtin().clone()),
        orders: store.clone(),
        uploads,
        prints: prints.clone(),
        urls: Arc::new(printworks::fetch::UrlFetcher::new(Default::default()).unwrap()),
        clock: Arc::new(printworks::clock::SystemClock),
        limits: Default::default(),
        max_attempts: 4,
    };
    let response = renderer.handle_sqs(event.clone()).await;
    assert!(response.batch_item_failures.is_empty());

    let rendered = store.get(&b2b.id, &order_id).await.unwrap().unwrap();
    assert_eq!(rendered.state.as_str(), "rendered");
    let record = &rendered.items[0].renders[0];
    // 13x18 cm with 2 mm bleed at 300 dpi, turned to portrait.
    assert_eq!((record.print.width, record.print.height), (1583, 2173));
    for file in [&record.print, &record.preview] {
        let bytes = prints
            .get(&file.key)
            .await
            .unwrap()
            .expect("stored in the prints bucket");
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            file.sha256,
            "{}",
            file.key
        );
        assert_eq!(bytes.len() as u64, file.bytes);
    }

    // Redelivered: nothing rendered or emitted again.
    let again = renderer.handle_sqs(event).await;
    assert!(again.batch_item_failures.is_empty());
    let stream = stream_batch(&f).await.to_string();
    assert_eq!(
        stream.matches(r#""type":{"S":"OrderRendered"}"#).count(),
        1,
        "one OrderRendered in the outbox"
    );
}

#[tokio::test]
async fn emulator_signed_webhooks_pay_the_order_and_reach_the_topic() {
    use printworks::adapters::aws::secrets::SecretsManagerSource;
    use printworks::domain::order::OrderId;
    use printworks::ports::{OrderStore, PaymentStore};
    use printworks::webhooks::stripe;

    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let uploads = Arc::new(S3Blobs::from_sdk(&f.sdk, &f.bucket, true));
    let brand = printworks_local::seed::demo_tenants().remove(0);
    assert_eq!(brand.id.as_str(), "demo-brand");
    store.put_tenant(&brand).await.unwrap();
    let key = mint_api_key("test", &brand.id);
    store.put_api_key(&key.record).await.unwrap();

    // The secret as the template's PaymentWebhookSecrets holds it, mid-rotation.
    let secret_arn = aws_sdk_secretsmanager::Client::new(&f.sdk)
        .create_secret()
        .name(format!("payment-webhooks-{}", f.table))
        .secret_string(r#"{"stripe": ["whsec_emulator_old", "whsec_emulator_new"], "adyen": []}"#)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let webhooks = payment_webhook::Webhooks::new(
        store.clone(),
        store.clone(),
        Arc::new(SecretsManagerSource::from_sdk(&f.sdk, &secret_arn)),
        Arc::new(printworks::clock::SystemClock),
    );
    let webhook_router = payment_webhook::router(Arc::new(webhooks));

    // A B2C order: placed, with what the storefront needs to start the payment.
    let router = api_router("test", store.clone(), store.clone(), store.clone(), uploads);
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/orders")
        .header("authorization", format!("Bearer {}", key.full))
        .header("idempotency-key", "pay-1")
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(
            request_example(&openapi(), "/v1/orders").to_string(),
        ))
        .unwrap();
    let res = order_api::handle(&router, req).await;
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let order: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(order["state"], "placed", "{order}");
    let checkout = &order["checkout"];
    assert_eq!(checkout["provider"], "stripe");
    assert_eq!(checkout["amount"], order["totals"]["total"]["amount"]);
    assert_eq!(checkout["currency"], "EUR");
    let order_id = OrderId::parse(order["id"].as_str().unwrap()).unwrap();
    assert_eq!(
        checkout["reference"],
        format!("demo-brand:{order_id}"),
        "{checkout}"
    );

    let body = serde_json::to_vec(&json!({
        "id": "evt_emulator_1", "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_emulator", "object": "payment_intent",
            "amount_received": checkout["amount"], "currency": "eur",
            "metadata": {"order_reference": checkout["reference"]}}}
    }))
    .unwrap();
    let send = |header: String| {
        let router = webhook_router.clone();
        let body = body.clone();
        async move {
            let req = http::Request::builder()
                .method("POST")
                .uri("/v1/payments/stripe/webhook")
                .header("stripe-signature", header)
                .header("content-type", "application/json")
                .body(lambda_http::Body::Binary(body))
                .unwrap();
            let res = payment_webhook::handle(&router, req).await;
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // Signed with a secret the stack does not hold: refused, nothing stored.
    let (status, text) = send(stripe::signature_header(&[b"whsec_other"], now, &body)).await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(
        store
            .get(&brand.id, &order_id)
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "placed"
    );

    // Stripe signs with old and new during the rotation; delivered four
    // times at once (DynamoDB Local isolates the transactions as DynamoDB
    // does): one delivery applies, the others change nothing.
    let header =
        stripe::signature_header(&[b"whsec_emulator_old", b"whsec_emulator_new"], now, &body);
    let deliveries = tokio::join!(
        send(header.clone()),
        send(header.clone()),
        send(header.clone()),
        send(header.clone())
    );
    for (status, text) in [deliveries.0, deliveries.1, deliveries.2, deliveries.3] {
        assert_eq!((status, text.as_str()), (200, r#"{"received":true}"#));
    }
    let paid = store.get(&brand.id, &order_id).await.unwrap().unwrap();
    assert_eq!(paid.state.as_str(), "paid");
    assert_eq!(paid.version, 1, "one write of the order");
    let record = store
        .payment_record("stripe", "evt_emulator_1")
        .await
        .unwrap()
        .expect("the event is recorded");
    assert_eq!(record.outcome, "applied");

    // Stream -> events-publisher -> SNS -> the OrderPaid-filtered queue.
    let stream = stream_batch(&f).await;
    assert_eq!(
        stream
            .to_string()
            .matches(r#""type":{"S":"OrderPaid"}"#)
            .count(),
        1,
        "one OrderPaid in the outbox"
    );
    let batch: aws_lambda_events::event::dynamodb::Event = serde_json::from_value(stream).unwrap();
    events_publisher::handle(batch, &SnsPublisher::from_sdk(&f.sdk, &f.topic_arn))
        .await
        .unwrap();
    let paid_events = drain(&SqsQueue::from_sdk(&f.sdk, &f.paid_queue), 1).await;
    assert_eq!(paid_events.len(), 1, "{paid_events:?}");
    assert_eq!(paid_events[0].event_type.as_str(), "OrderPaid");
    assert_eq!(paid_events[0].order_id, order_id);
    assert_eq!(paid_events[0].data["provider"], "stripe");
}

/// A text message notification of `tenant` (the store does not care what
/// it carries).
fn sms_record(
    tenant: &printworks::domain::tenant::TenantId,
    n: usize,
    at: time::OffsetDateTime,
) -> printworks::ports::NotificationRecord {
    use printworks::ports::{NotificationRecord, NotificationStatus, Outgoing, SmsMessage};
    let id = format!("ntf_{}", uuid::Uuid::new_v4().simple());
    NotificationRecord {
        id: id.clone(),
        tenant: tenant.clone(),
        order_id: printworks::domain::order::OrderId::new(),
        event_id: format!("evt_{n}"),
        event_type: printworks::domain::events::EventType::OrderShipped,
        message: Outgoing::Sms(SmsMessage {
            id,
            to: "+4915112345678".into(),
            sender_id: None,
            text: format!("Shipped {n}"),
        }),
        status: NotificationStatus::Retry,
        attempts: 0,
        created_at: at,
    }
}

/// Claims `records` all at once, each with `limit`, at `now`.
async fn claim_all(
    store: &Arc<DynamoStore>,
    records: &[printworks::ports::NotificationRecord],
    limit: u32,
    now: time::OffsetDateTime,
) -> Vec<printworks::ports::Claim> {
    use printworks::ports::NotificationStore;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, record) in records.iter().enumerate() {
        let (store, record) = (store.clone(), record.clone());
        tasks.spawn(async move {
            let claim = store
                .claim(&record, limit, now, Duration::from_secs(120))
                .await;
            (i, claim.unwrap())
        });
    }
    let mut claims: Vec<_> = tasks.join_all().await;
    claims.sort_by_key(|(i, _)| *i);
    claims.into_iter().map(|(_, c)| c).collect()
}

#[tokio::test]
async fn emulator_notify_store_claims_once_and_caps_with_deferral() {
    use printworks::domain::notify::{Channel, cap_day, next_day};
    use printworks::domain::tenant::TenantId;
    use printworks::ports::{Claim, NotificationStatus, NotificationStore};

    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    // The claims below run truly concurrently, each its own TransactWriteItems
    // on DynamoDB Local.
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let day1 = time::macros::datetime!(2026-11-22 21:00:00 UTC);
    let lease = Duration::from_secs(120);
    let sent = |tenant: &TenantId, day| {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move { store.sent_on(&tenant, Channel::Sms, day).await.unwrap() }
    };

    // One notification, claimed by eight senders at once: one gets it.
    // Five rounds, a new notification each: with a guard missing, a round
    // now and then still comes out right by the requests' timing alone.
    let brand = TenantId::parse("demo-brand").unwrap();
    let rounds: Vec<_> = (0..5).map(|n| sms_record(&brand, n, day1)).collect();
    for (round, record) in rounds.iter().enumerate() {
        let eight: Vec<_> = std::iter::repeat_n(record.clone(), 8).collect();
        let claims = claim_all(&store, &eight, 100, day1).await;
        let acquired = claims
            .iter()
            .filter(|c| matches!(c, Claim::Acquired(_)))
            .count();
        assert_eq!(acquired, 1, "round {round}: {claims:?}");
        assert!(
            claims
                .iter()
                .all(|c| matches!(c, Claim::Acquired(_)) || *c == Claim::InFlight(day1 + lease)),
            "round {round}: {claims:?}"
        );
        let counted = sent(&brand, cap_day(day1)).await as usize;
        assert_eq!(counted, round + 1, "round {round}: counted once");
    }
    let one = rounds.last().unwrap().clone();
    let stored = store.notification(&one.id).await.unwrap().unwrap();
    assert_eq!(stored.attempts, 1);
    assert_eq!(
        stored.status,
        NotificationStatus::Sending {
            lease_until: day1 + lease,
            counted_day: cap_day(day1)
        }
    );
    let done = NotificationStatus::Sent {
        at: day1,
        provider_id: "sns-1".into(),
    };
    store.finish(&one.id, done.clone(), day1).await.unwrap();
    assert_eq!(
        store.claim(&one, 100, day1, lease).await.unwrap(),
        Claim::AlreadySent
    );
    assert_eq!(
        store.notification(&one.id).await.unwrap().unwrap().status,
        done
    );
    assert_eq!(sent(&brand, cap_day(day1)).await as usize, rounds.len());

    // A cap of 3 and five messages at once: three go, two wait for the
    // next UTC midnight; the counter stops at the cap.
    let b2b = TenantId::parse("demo-b2b").unwrap();
    let day2 = next_day(day1);
    let five: Vec<_> = (1..=5).map(|n| sms_record(&b2b, n, day1)).collect();
    let claims = claim_all(&store, &five, 3, day1).await;
    let (mut went, mut waiting) = (Vec::new(), Vec::new());
    for (record, claim) in five.iter().zip(&claims) {
        match claim {
            Claim::Acquired(_) => went.push(record.clone()),
            Claim::Deferred(until) => {
                assert_eq!(*until, day2);
                waiting.push(record.clone());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((went.len(), waiting.len()), (3, 2), "{claims:?}");
    assert_eq!(sent(&b2b, cap_day(day1)).await, 3);
    assert_eq!(
        store.claim(&waiting[0], 3, day1, lease).await.unwrap(),
        Claim::Deferred(day2),
        "still deferred, nothing changed"
    );

    // A failed send gives its count back; a claim takes it again.
    store.release(&went[0].id).await.unwrap();
    assert_eq!(sent(&b2b, cap_day(day1)).await, 2);
    assert_eq!(
        store
            .notification(&went[0].id)
            .await
            .unwrap()
            .unwrap()
            .status,
        NotificationStatus::Retry
    );
    assert!(matches!(
        store.claim(&went[0], 3, day1, lease).await.unwrap(),
        Claim::Acquired(r) if r.attempts == 2
    ));
    assert_eq!(sent(&b2b, cap_day(day1)).await, 3);
    // A refusal for good does not count either.
    let refused = NotificationStatus::Failed {
        reason: "invalid number".into(),
    };
    store.finish(&went[1].id, refused, day1).await.unwrap();
    assert_eq!(sent(&b2b, cap_day(day1)).await, 2);
    assert_eq!(
        store.claim(&went[1], 3, day1, lease).await.unwrap(),
        Claim::AlreadyFailed
    );

    // The sweep finds the deferred ones once their day has come.
    assert!(store.due_deferred(day1, 10).await.unwrap().is_empty());
    assert!(
        store
            .due_deferred(day2 - time::Duration::seconds(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after = day2 + time::Duration::seconds(5);
    let mut due: Vec<String> = store
        .due_deferred(after, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    due.sort();
    let mut expected: Vec<String> = waiting.iter().map(|r| r.id.clone()).collect();
    expected.sort();
    assert_eq!(due, expected);
    assert_eq!(store.due_deferred(after, 1).await.unwrap().len(), 1, "max");

    // On the new day, on the new day's counter: with a cap of 1, one goes
    // and the other moves on to the day after.
    let first = store.claim(&waiting[0], 1, after, lease).await.unwrap();
    assert!(
        matches!(&first, Claim::Acquired(r) if r.attempts == 1),
        "{first:?}"
    );
    let day3 = next_day(after);
    assert_eq!(
        store.claim(&waiting[1], 1, after, lease).await.unwrap(),
        Claim::Deferred(day3)
    );
    assert_eq!(sent(&b2b, cap_day(after)).await, 1);
    assert_eq!(sent(&b2b, cap_day(day1)).await, 2, "the old day unchanged");
    assert!(store.due_deferred(after, 10).await.unwrap().is_empty());
    let later = day3 + time::Duration::minutes(15);
    let due = store.due_deferred(later, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [waiting[1].id.as_str()]
    );
    assert!(matches!(
        store.claim(&waiting[1], 1, later, lease).await.unwrap(),
        Claim::Acquired(_)
    ));
    assert!(store.due_deferred(later, 10).await.unwrap().is_empty());
    assert_eq!(sent(&b2b, cap_day(later)).await, 1);

    // A lease that ran out (its sender died) is taken over.
    let taken = store
        .claim(&waiting[1], 5, later + lease, lease)
        .await
        .unwrap();
    assert!(
        matches!(&taken, Claim::Acquired(r) if r.attempts == 2),
        "{taken:?}"
    );

    // The statistics' counters, changed in the same transactions: per day
    // the sends counted (a release and a refusal gave theirs back; a lease
    // taken over counts again) and the deferrals by the cap (a claim that
    // finds a record still deferred defers nothing more).
    use printworks::ports::SendCount;
    let row = |day, tenant: &TenantId, sent, deferred| SendCount {
        day,
        tenant: tenant.clone(),
        channel: Channel::Sms,
        sent,
        deferred,
    };
    let (d1, d2, d3) = (cap_day(day1), cap_day(after), cap_day(later));
    assert_eq!(
        store.send_counts(d1, d3, None).await.unwrap(),
        [
            row(d1, &b2b, 2, 2),
            row(d1, &brand, 5, 0),
            row(d2, &b2b, 1, 1),
            row(d3, &b2b, 2, 0),
        ]
    );
    assert_eq!(
        store.send_counts(d2, d2, Some(&b2b)).await.unwrap(),
        [row(d2, &b2b, 1, 1)]
    );
    assert!(
        store
            .send_counts(d1, d1, Some(&TenantId::parse("nobody").unwrap()))
            .await
            .unwrap()
            .is_empty()
    );

    // An order's notifications, oldest first, whatever their status.
    let mut first = sms_record(&b2b, 7, day1);
    let mut second = sms_record(&b2b, 8, day1 + time::Duration::minutes(1));
    second.order_id = first.order_id.clone();
    first.created_at = day1 - time::Duration::minutes(1);
    for record in [&second, &first] {
        assert!(matches!(
            store.claim(record, 100, day1, lease).await.unwrap(),
            Claim::Acquired(_)
        ));
    }
    let listed = store.for_order(&b2b, &first.order_id).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [first.id.as_str(), second.id.as_str()]
    );
    let deferred_one = store.for_order(&b2b, &waiting[1].order_id).await.unwrap();
    assert_eq!(deferred_one.len(), 1);
    assert_eq!(deferred_one[0].attempts, 2);
    assert!(
        store
            .for_order(&brand, &first.order_id)
            .await
            .unwrap()
            .is_empty(),
        "another tenant's"
    );
}

/// The moto server's state (`/moto-api/data.json`): `service` -> `model`
/// -> instances. moto serializes every model of every service for it and
/// answers 500 when another test's request changes one meanwhile (a
/// DynamoDB stream record, say), so a failed read is tried again.
async fn moto_models(endpoint: &str, service: &str, model: &str) -> Vec<Value> {
    for _ in 0..20 {
        let res = reqwest::get(format!("{endpoint}/moto-api/data.json"))
            .await
            .unwrap();
        if res.status().is_success()
            && let Ok(data) = res.json::<Value>().await
        {
            return data[service][model].as_array().cloned().unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("moto's data.json did not answer");
}

/// A header of a MIME message, unfolded (as it was written, still encoded).
fn mime_header(message: &str, name: &str) -> Option<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let mut lines = message.split("\r\n").map(|l| l.trim_end_matches('\n'));
    let first = lines.find(|l| l.to_ascii_lowercase().starts_with(&prefix))?;
    let mut value = first[prefix.len()..].trim().to_string();
    for line in lines {
        if !line.starts_with([' ', '\t']) {
            break;
        }
        value.push(' ');
        value.push_str(line.trim());
    }
    Some(value)
}

#[tokio::test]
async fn emulator_notify_sends_one_email_per_event_through_the_topic() {
    use aws_lambda_events::event::sqs::SqsEvent;
    use notify::context::MessageContext;
    use notify::templates::Templates;
    use notify::{Channels, Notifier};
    use printworks::adapters::aws::ses::SesMailer;
    use printworks::adapters::aws::sms::SnsSms;
    use printworks::clock::SystemClock;
    use printworks::domain::events::EventType;
    use printworks::domain::locale::Locale;
    use printworks::domain::notify::{Channel, NOTIFY_EVENTS, Template, notification_id};
    use printworks::domain::order::OrderId;
    use printworks::ports::{
        EventPublisher, NotificationStatus, NotificationStore, OrderStore, Outgoing,
    };

    let Some(endpoint) = emulator() else { return };
    let f = fixture().await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let uploads = Arc::new(S3Blobs::from_sdk(&f.sdk, &f.bucket, true));

    // The notify queue, subscribed as the template subscribes it: to
    // exactly the events of NOTIFY_EVENTS.
    let template: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(printworks_tests::repo_root().join("infra/template.yaml"))
            .unwrap(),
    )
    .unwrap();
    let types: Vec<&str> =
        template["Resources"]["NotifySubscription"]["Properties"]["FilterPolicy"]["type"]
            .as_sequence()
            .expect("the template filters the notify subscription on type")
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
    assert_eq!(
        types,
        NOTIFY_EVENTS.iter().map(|t| t.as_str()).collect::<Vec<_>>()
    );
    let sqs = aws_sdk_sqs::Client::new(&f.sdk);
    let queue_url = create_queue(
        &f.sdk,
        &f.topic_arn,
        &format!("notify-{}", &run[..10]),
        Some(json!({ "type": types })),
    )
    .await;

    // A B2C brand, its sender domain verified in SES.
    let templates = Arc::new(Templates::builtin().unwrap());
    let brand = printworks_local::seed::demo_tenants().remove(0);
    assert_eq!(brand.id.as_str(), "demo-brand");
    let sender = templates.brands().get(&brand.brand).clone();
    let domain = sender.from_address.rsplit_once('@').unwrap().1;
    aws_sdk_sesv2::Client::new(&f.sdk)
        .create_email_identity()
        .email_identity(domain)
        .send()
        .await
        .unwrap();
    store.put_tenant(&brand).await.unwrap();
    let key = mint_api_key("test", &brand.id);
    store.put_api_key(&key.record).await.unwrap();

    // Its customer's order, placed through the API (German, with a phone).
    let email = format!("erika.{run}@example.com");
    let phone = format!(
        "+49151{}",
        &run.bytes()
            .map(|b| (b % 10).to_string())
            .collect::<String>()[..8]
    );
    let mut body = request_example(&openapi(), "/v1/orders");
    body["customer"]["email"] = json!(email);
    body["customer"]["phone"] = json!(phone);
    let router = api_router("test", store.clone(), store.clone(), store.clone(), uploads);
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/orders")
        .header("authorization", format!("Bearer {}", key.full))
        .header("idempotency-key", "notify-1")
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(body.to_string()))
        .unwrap();
    let res = order_api::handle(&router, req).await;
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let placed: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(placed["state"], "placed", "{placed}");
    let order_id = OrderId::parse(placed["id"].as_str().unwrap()).unwrap();
    let order = store.get(&brand.id, &order_id).await.unwrap().unwrap();
    assert_eq!(order.locale, Locale::De);

    // Its events through the topic; OrderShipped delivered twice.
    let now = time::OffsetDateTime::now_utc();
    let event =
        |t: EventType, data: Value| EventEnvelope::new(t, &order.id, &order.tenant, now, data);
    let events = [
        event(EventType::OrderPlaced, json!({})),
        event(EventType::OrderPaid, json!({"provider": "stripe"})),
        event(EventType::OrderDispatched, json!({"plant": "muc"})),
        event(
            EventType::OrderShipped,
            json!({"plant": "muc", "packing_ref": "MUC-1",
                   "shipments": [{"carrier": "DHL", "tracking": "00340434161094042557"}]}),
        ),
    ];
    let mut published = events.to_vec();
    published.push(events[3].clone());
    SnsPublisher::from_sdk(&f.sdk, &f.topic_arn)
        .publish(&published)
        .await
        .unwrap();

    // The batch as Lambda's SQS event source hands it over.
    let mut records = Vec::new();
    for _ in 0..10 {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .unwrap();
        for m in received.messages.unwrap_or_default() {
            let count = m
                .attributes
                .as_ref()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                })
                .cloned()
                .unwrap_or_else(|| "1".into());
            records.push(json!({"messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                "attributes": {"ApproximateReceiveCount": count}, "messageAttributes": {},
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-central-1:123456789012:notify", "awsRegion": "eu-central-1"}));
        }
        if records.len() >= published.len() {
            break;
        }
    }
    assert_eq!(records.len(), 5, "every notify event passes the filter");
    let batch: SqsEvent = serde_json::from_value(json!({ "Records": records })).unwrap();

    let clock = Arc::new(SystemClock);
    let notifier = Notifier {
        orders: store.clone(),
        tenants: store.clone(),
        ledger: store.clone(),
        channels: Channels {
            mail: Arc::new(SesMailer::from_sdk(&f.sdk, None, clock.clone())),
            sms: Arc::new(SnsSms::from_sdk(&f.sdk)),
            webhooks: Arc::new(printworks::webhook_out::HttpWebhooks::new(
                printworks::fetch::UrlFetcher::new(Default::default()).unwrap(),
            )),
        },
        templates: templates.clone(),
        caps: Default::default(),
        clock,
        lease: Duration::from_secs(120),
        backoff: Duration::from_secs(30),
    };
    let queue = SqsQueue::from_sdk(&f.sdk, &queue_url);
    let response = notifier.handle_sqs(batch.clone(), Some(&queue)).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    // The whole batch again (a redelivery): nothing is sent twice.
    let again = notifier.handle_sqs(batch, Some(&queue)).await;
    assert!(again.batch_item_failures.is_empty());

    // In moto's SES: exactly one e-mail per mailed event, none for
    // OrderDispatched, each the message the ledger recorded.
    let ours: Vec<Value> = moto_models(&endpoint, "ses", "RawMessage")
        .await
        .into_iter()
        .filter(|m| {
            m["raw_data"]
                .as_str()
                .is_some_and(|raw| raw.contains(&email))
        })
        .collect();
    assert_eq!(ours.len(), 3, "placed, paid, shipped: {ours:#?}");
    let mailed = [
        (&events[0], Template::OrderPlaced),
        (&events[1], Template::OrderPaid),
        (&events[3], Template::OrderShipped),
    ];
    for (event, template) in mailed {
        let id = notification_id(event, Channel::Email, &email);
        let record = store.notification(&id).await.unwrap().expect("recorded");
        let NotificationStatus::Sent { provider_id, .. } = &record.status else {
            panic!("{:?} not sent: {:?}", event.event_type, record.status);
        };
        let Outgoing::Email(mail) = &record.message else {
            panic!("not an e-mail: {:?}", record.message);
        };
        let raw = ours
            .iter()
            .find(|m| m["id"].as_str() == Some(provider_id.as_str()))
            .and_then(|m| m["raw_data"].as_str())
            .unwrap_or_else(|| panic!("SES has no message {provider_id}"));
        assert!(
            mime_header(raw, "Content-Type")
                .is_some_and(|v| v.starts_with("multipart/alternative")),
            "{raw}"
        );
        assert_eq!(mime_header(raw, "Content-Language").as_deref(), Some("de"));
        assert_eq!(
            mime_header(raw, "From"),
            mime_header(
                &String::from_utf8(mail.to_mime(now).unwrap()).unwrap(),
                "From"
            )
        );
        // The subject in German, as rendered for the order.
        let ctx = |language| MessageContext {
            brand: &sender,
            language,
            fallback: brand.default_locale,
            order: &order,
            event,
        };
        let german = templates.email(template, &ctx(Locale::De)).unwrap().subject;
        let english = templates.email(template, &ctx(Locale::En)).unwrap().subject;
        assert_ne!(german, english);
        assert_eq!(mail.subject, german);
        let expected = String::from_utf8(mail.to_mime(now).unwrap()).unwrap();
        assert_eq!(
            mime_header(raw, "Subject"),
            mime_header(&expected, "Subject"),
            "{raw}"
        );
    }
    let dispatched = notification_id(&events[2], Channel::Email, &email);
    assert!(store.notification(&dispatched).await.unwrap().is_none());

    // The text message of OrderShipped, once, through SNS.
    let sms_id = notification_id(&events[3], Channel::Sms, &phone);
    let sms = store
        .notification(&sms_id)
        .await
        .unwrap()
        .expect("recorded");
    let NotificationStatus::Sent { provider_id, .. } = &sms.status else {
        panic!("text not sent: {:?}", sms.status);
    };
    let texts: Vec<Value> = moto_models(&endpoint, "sns", "SMS")
        .await
        .into_iter()
        .filter(|m| m["phone_number"].as_str() == Some(phone.as_str()))
        .collect();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0]["message_id"].as_str(), Some(provider_id.as_str()));
}

#[tokio::test]
async fn emulator_operators_are_added_once_with_their_key() {
    use printworks::domain::operator::{Operator, OperatorId, Role, mint_operator_key};
    use printworks::domain::tenant::PresentedKey;
    use printworks::ports::{OperatorStore, StoreError};

    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = DynamoStore::from_sdk(&f.sdk, &f.table);
    let id = OperatorId::parse("muc-night").unwrap();
    let operator = Operator {
        id: id.clone(),
        role: Role::Plant("muc".into()),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    let key = mint_operator_key("prod", &id);
    store.add_operator(&operator, &key.record).await.unwrap();
    let presented = PresentedKey::parse(&key.full).unwrap();
    let record = store
        .operator_key(&presented.key_id)
        .await
        .unwrap()
        .unwrap();
    assert!(presented.matches_operator(&record));
    assert_eq!(store.operator(&id).await.unwrap(), Some(operator.clone()));
    assert!(
        store.api_key(&presented.key_id).await.unwrap().is_none(),
        "an operator key is not a tenant's"
    );

    // The id again: refused as a whole, the second key not written.
    let again = mint_operator_key("prod", &id);
    let admin = Operator {
        role: Role::Admin,
        ..operator.clone()
    };
    assert!(matches!(
        store.add_operator(&admin, &again.record).await,
        Err(StoreError::Conflict)
    ));
    assert!(
        store
            .operator_key(&again.record.key_id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.operator(&id).await.unwrap(), Some(operator));
}

/// The operator API on DynamoDB (Local), through its router as the Lambda
/// runs it: any tenant's order found by id (`ORDERID#`), an action written
/// once per key with the order in one transaction, and two operators
/// releasing the same hold at once: one wins, the other hears 409.
#[tokio::test]
async fn emulator_operator_actions_happen_once_per_key_and_once_per_hold() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use printworks::domain::operator::{Operator, OperatorId, Role, mint_operator_key};
    use printworks::domain::state::OrderState;
    use printworks::ports::{OperatorStore, OpsStore, OrderStore};
    use tower::ServiceExt;

    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let now = time::OffsetDateTime::now_utc();
    let mut keys = Vec::new();
    for name in ["anna", "ben"] {
        let id = OperatorId::parse(name).unwrap();
        let key = mint_operator_key("prod", &id);
        let operator = Operator {
            id,
            role: Role::Support,
            created_at: now,
        };
        store.add_operator(&operator, &key.record).await.unwrap();
        keys.push(key.full);
    }
    let new = printworks::testing::paid_order(&[("poster-30x40", 1)], "DE", now);
    let placed = new.order.clone();
    store.place(new).await.unwrap();
    let (held, event) = placed
        .hold("The photo is too small.", json!({"code": "too_small"}), now)
        .unwrap();
    store.transition(&held, &placed, vec![event]).await.unwrap();
    assert_eq!(
        store.find_order(&held.id).await.unwrap(),
        Some(held.clone())
    );

    let app = ops_api::App::new(
        ops_api::Config::for_env("prod").unwrap(),
        ops_api::Ops::new(
            Arc::new(printworks::domain::catalog::Catalog::builtin().clone()),
            store.clone(),
            Arc::new(printworks::clock::SystemClock),
        ),
        store.clone(),
    );
    let router = ops_api::lambda_router(Arc::new(app));
    let release = |key: String, idem: &'static str, reason: &'static str| {
        let router = router.clone();
        let path = format!("/v1/ops/orders/{}/release", held.id);
        async move {
            let request = http::Request::post(path)
                .header("authorization", format!("Bearer {key}"))
                .header("idempotency-key", idem)
                .header("content-type", "application/json")
                .body(Body::from(json!({ "reason": reason }).to_string()))
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                replayed,
                serde_json::from_slice::<Value>(&body).unwrap(),
            )
        }
    };

    // Two operators release the same hold at once: one release.
    let (a, b) = tokio::join!(
        release(keys[0].clone(), "a-1", "photo replaced"),
        release(keys[1].clone(), "b-1", "photo replaced too"),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (winner_key, winner) = if a.0 == 200 {
        (&keys[0], a)
    } else {
        (&keys[1], b)
    };
    let stored = store.find_order(&held.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.attempt, stored.actions.len()),
        (OrderState::Paid, 2, 1)
    );
    assert_eq!(
        winner.2["action"]["operator"],
        stored.actions[0].operator.as_str()
    );

    // The winner's request again: its first answer, nothing written; the
    // key with another request: refused.
    let idem = if winner_key == &keys[0] { "a-1" } else { "b-1" };
    let reason = if winner_key == &keys[0] {
        "photo replaced"
    } else {
        "photo replaced too"
    };
    let again = release(winner_key.clone(), idem, reason).await;
    assert_eq!((again.0, again.1), (200, true));
    assert_eq!(again.2, winner.2);
    let reused = release(winner_key.clone(), idem, "something else").await;
    assert_eq!(reused.0, 422, "{:?}", reused.2);
    let after = store.find_order(&held.id).await.unwrap().unwrap();
    assert_eq!(after.version, stored.version, "nothing written again");

    // An order no tenant has: 404.
    let unknown = http::Request::get("/v1/ops/orders/ord_00000000000000000000000000000000")
        .header("authorization", format!("Bearer {}", keys[0]))
        .body(Body::empty())
        .unwrap();
    assert_eq!(router.clone().oneshot(unknown).await.unwrap().status(), 404);
}

/// `paid` rendered with stand-in print files, put on S3, and the order
/// moved to `rendered` on DynamoDB; its `OrderRendered`.
async fn rendered_on_s3(
    store: &DynamoStore,
    blobs: &S3Blobs,
    paid: &printworks::domain::order::Order,
    now: time::OffsetDateTime,
) -> EventEnvelope {
    use printworks::ports::OrderStore;
    let (rendered, event, files) = printworks::testing::rendered(paid, now);
    for (key, bytes) in files {
        blobs.put(&key, bytes, "image/jpeg").await.unwrap();
    }
    store
        .transition(&rendered, paid, vec![event.clone()])
        .await
        .unwrap();
    event
}

/// The dispatch function on DynamoDB and S3, sending to `queues` (one per
/// plant of the built-in catalog).
fn dispatcher_on<Q: printworks::ports::MessageQueue + 'static>(
    store: &Arc<DynamoStore>,
    blobs: &Arc<S3Blobs>,
    queues: &std::collections::BTreeMap<String, Arc<Q>>,
) -> dispatch::Dispatcher {
    let plants = queues
        .iter()
        .map(|(p, q)| {
            (
                p.clone(),
                q.clone() as Arc<dyn printworks::ports::MessageQueue>,
            )
        })
        .collect();
    dispatch::Dispatcher::new(
        dispatch::Config::default(),
        dispatch::Ports {
            catalog: Arc::new(printworks::domain::catalog::Catalog::builtin().clone()),
            orders: store.clone(),
            production: store.clone(),
            prints: blobs.clone(),
            plants: dispatch::PlantQueues(plants),
            clock: Arc::new(printworks::clock::SystemClock),
        },
    )
}

/// An order of 50 lines of 100 copies (5,000 jobs) from placement to
/// shipped on DynamoDB (DynamoDB Local) with its print files on S3 and its
/// jobs on an SQS queue (moto): placed through the order API, dispatched by
/// the dispatch function, every job reported shipped to production-events.
/// Stored whole, the shipped order would be one item of about a megabyte,
/// which DynamoDB refuses; stored as the order, its production record and
/// one record per job, every item stays small.
#[tokio::test]
async fn emulator_an_order_of_5000_copies_ships_in_small_items() {
    use printworks::adapters::aws::dynamodb::{item_size, whole_order_item_size};
    use printworks::domain::catalog::Catalog;
    use printworks::domain::production::{Job, JobState, JobStatusReport};
    use printworks::domain::state::OrderState;
    use printworks::ports::{MessageQueue, OrderStore};
    use std::collections::{BTreeMap, BTreeSet};

    if emulator().is_none() {
        return;
    }
    let started = std::time::Instant::now();
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let blobs = Arc::new(S3Blobs::from_sdk(&f.sdk, &f.bucket, true));
    let tenant = printworks_local::seed::demo_tenants()
        .into_iter()
        .find(|t| t.id.as_str() == "demo-b2b")
        .unwrap();
    store.put_tenant(&tenant).await.unwrap();
    let key = mint_api_key("test", &tenant.id);
    store.put_api_key(&key.record).await.unwrap();

    // Placed through the order API: paid by invoice at once.
    let router = api_router(
        "test",
        store.clone(),
        store.clone(),
        store.clone(),
        blobs.clone(),
    );
    let mut body = request_example(&openapi(), "/v1/orders");
    body["items"] = (0..50)
        .map(|line| {
            json!({
                "sku": "poster-30x40", "quantity": 100,
                "images": [{"url": format!("https://photos.example.com/{line}.jpg")}],
            })
        })
        .collect();
    let request = http::Request::post("/v1/orders")
        .header("authorization", format!("Bearer {}", key.full))
        .header("idempotency-key", "five-thousand")
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(body.to_string()))
        .unwrap();
    let response = order_api::handle(&router, request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let placed: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 201, "{placed}");
    let id = printworks::domain::order::OrderId::parse(placed["id"].as_str().unwrap()).unwrap();
    let paid = store.get(&tenant.id, &id).await.unwrap().unwrap();
    assert_eq!(paid.state, OrderState::Paid);

    // Rendered: one print file per line, on S3.
    let now = time::OffsetDateTime::now_utc();
    let event = rendered_on_s3(&store, &blobs, &paid, now).await;

    // Dispatched: 5,000 job messages on the plant's queue. The queues are
    // the local bus's, not moto's: moto's SQS spends time in proportion
    // to the messages a queue holds on every call, and 5,000 of them took
    // it over ten minutes. (Dispatch to SQS on moto is shown with 25 jobs
    // below; what is new at 5,000 copies is the store's.)
    let catalog = Arc::new(Catalog::builtin().clone());
    let local = printworks::testing::local_env::LocalEnv::new().await;
    let mut queues = BTreeMap::new();
    for plant in catalog.plants.keys() {
        let name = format!("plant-{plant}-jobs");
        local.declare_queue(&name).await;
        queues.insert(plant.clone(), Arc::new(local.bus.queue(&name)));
    }
    let dispatcher = dispatcher_on(&store, &blobs, &queues);
    let outcome = dispatcher.handle(&event).await.unwrap();
    let dispatched = store.get(&tenant.id, &id).await.unwrap().unwrap();
    assert_eq!(dispatched.state, OrderState::Dispatched);
    let plant = dispatched.production.as_ref().unwrap().plant.clone();
    assert_eq!(
        outcome,
        dispatch::Outcome::Dispatched {
            plant: plant.clone(),
            jobs: 5_000
        }
    );
    let mut received: BTreeMap<String, Job> = BTreeMap::new();
    loop {
        let got = queues[&plant].receive(10, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        for m in got {
            let job: Job = serde_json::from_str(&m.body).unwrap();
            received.insert(job.job_id.clone(), job);
            queues[&plant].delete(&m.receipt).await.unwrap();
        }
    }
    assert_eq!(received.len(), 5_000);
    println!(
        "5,000 copies dispatched and received after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // One presigned URL per print file, not one per copy, and each one
    // fetches its file from S3.
    let urls: BTreeSet<&str> = received
        .values()
        .flat_map(|j| j.files.iter().map(|f| f.url.as_str()))
        .collect();
    assert_eq!(urls.len(), 50);
    let first = received.values().next().unwrap();
    let fetched = reqwest::get(&first.files[0].url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(
        fetched.bytes().await.unwrap().len() as u64,
        first.files[0].bytes
    );
    let stored: BTreeSet<&str> = dispatched
        .production
        .as_ref()
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.job_id.as_str())
        .collect();
    assert!(
        received
            .keys()
            .map(String::as_str)
            .eq(stored.iter().copied())
    );
    let jobs: Vec<(String, String)> = received
        .values()
        .map(|j| (j.job_id.clone(), j.packing_ref.clone()))
        .collect();

    // Every job reported shipped, as the plant's agent reports them.
    let events = production_events::ProductionEvents::new(
        store.clone(),
        store.clone(),
        Arc::new(printworks::clock::SystemClock),
    );
    let reporting = std::time::Instant::now();
    for (job_id, packing_ref) in &jobs {
        let report = JobStatusReport {
            job_id: job_id.clone(),
            plant: plant.clone(),
            tenant: tenant.id.clone(),
            order_id: id.clone(),
            status: JobState::Shipped,
            at: time::OffsetDateTime::now_utc(),
            carrier: Some("DHL".into()),
            tracking: Some(format!("JJD{packing_ref}")),
            reason: None,
        };
        events.apply(&report).await.unwrap();
    }
    let reporting = reporting.elapsed();
    let shipped = store.get(&tenant.id, &id).await.unwrap().unwrap();
    assert_eq!(shipped.state, OrderState::Shipped);
    let production = shipped.production.as_ref().unwrap();
    assert_eq!(production.jobs.len(), 5_000);
    assert!(
        production
            .jobs
            .iter()
            .all(|j| j.status == Some(JobState::Shipped))
    );

    // The items it is stored as, read back from the table.
    let ddb = aws_sdk_dynamodb::Client::new(&f.sdk);
    let pk = format!("ORDER#{}#{}", tenant.id, id);
    let mut sizes: Vec<(usize, String)> = Vec::new();
    let mut start = None;
    loop {
        let page = ddb
            .query()
            .table_name(&f.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(pk.clone()),
            )
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let sk = item["sk"].as_s().unwrap().clone();
            sizes.push((item_size(item), sk));
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    sizes.sort();
    assert_eq!(
        sizes.len(),
        2 + 5_000,
        "the order, its production, 5,000 jobs"
    );
    let (largest, largest_sk) = sizes.last().unwrap().clone();
    let whole = whole_order_item_size(&shipped).unwrap();
    println!(
        "5,000 copies shipped on DynamoDB: largest item {largest} B ({largest_sk}); \
         stored whole it would be {whole} B; {} items; 5,000 reports in {:.1} s, the test in {:.1} s",
        sizes.len(),
        reporting.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(largest < 64 * 1024, "{largest} B ({largest_sk})");
    assert!(whole > 400 * 1024, "{whole} B");
}

/// Dispatch on AWS: the order on DynamoDB, its files presigned on S3, its
/// 25 jobs sent to the plant's SQS queue in batches of ten (three
/// `SendMessageBatch` calls), each copy of a line with its line's URL.
#[tokio::test]
async fn emulator_dispatch_sends_the_jobs_to_the_plants_sqs_queue_in_batches() {
    use printworks::domain::catalog::Catalog;
    use printworks::domain::production::Job;
    use printworks::domain::state::OrderState;
    use printworks::ports::{MessageQueue, OrderStore};
    use std::collections::{BTreeMap, BTreeSet};

    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let blobs = Arc::new(S3Blobs::from_sdk(&f.sdk, &f.bucket, true));
    let now = time::OffsetDateTime::now_utc();
    let new =
        printworks::testing::paid_order(&[("poster-30x40", 12), ("poster-50x70", 13)], "DE", now);
    let paid = new.order.clone();
    store.place(new).await.unwrap();
    let event = rendered_on_s3(&store, &blobs, &paid, now).await;
    let catalog = Arc::new(Catalog::builtin().clone());
    let mut queues: BTreeMap<String, Arc<SqsQueue>> = BTreeMap::new();
    for plant in catalog.plants.keys() {
        let url = create_sqs_queue(&f.sdk, &format!("plant-{plant}-jobs-{}", run_id())).await;
        queues.insert(plant.clone(), Arc::new(SqsQueue::from_sdk(&f.sdk, url)));
    }
    let dispatcher = dispatcher_on(&store, &blobs, &queues);
    dispatcher.handle(&event).await.unwrap();
    let dispatched = store.get(&paid.tenant, &paid.id).await.unwrap().unwrap();
    assert_eq!(dispatched.state, OrderState::Dispatched);
    let plant = dispatched.production.as_ref().unwrap().plant.clone();
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    for _ in 0..20 {
        for m in MessageQueue::receive(queues[&plant].as_ref(), 10, Duration::from_secs(1))
            .await
            .unwrap()
        {
            let job: Job = serde_json::from_str(&m.body).unwrap();
            jobs.insert(job.job_id.clone(), job);
            MessageQueue::delete(queues[&plant].as_ref(), &m.receipt)
                .await
                .unwrap();
        }
        if jobs.len() == 25 {
            break;
        }
    }
    let stored: BTreeSet<&String> = dispatched
        .production
        .as_ref()
        .unwrap()
        .jobs
        .iter()
        .map(|j| &j.job_id)
        .collect();
    assert!(jobs.keys().eq(stored.iter().copied()), "the 25 stored jobs");
    let lines: BTreeSet<u32> = jobs.values().map(|j| j.line).collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        let urls: BTreeSet<&str> = jobs
            .values()
            .filter(|j| j.line == line)
            .flat_map(|j| j.files.iter().map(|f| f.url.as_str()))
            .collect();
        assert_eq!(urls.len(), 1, "line {line}: one URL for its copies");
    }
}

/// Orders stored on DynamoDB before jobs were records of their own (the
/// order item with every job inside): a small one is reported on through
/// production-events and moves out on that write; one with more reported
/// jobs than a transaction takes keeps them inside, and a write of it is
/// refused once a production record is stored apart.
#[tokio::test]
async fn emulator_orders_stored_with_their_jobs_inside_are_still_written() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use printworks::domain::order::Order;
    use printworks::domain::production::{JobState, JobStatusReport};
    use printworks::domain::state::OrderState;
    use printworks::ports::{OrderStore, ProductionStore, StoreError};

    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let ddb = aws_sdk_dynamodb::Client::new(&f.sdk);
    let now = time::OffsetDateTime::now_utc();
    // Dispatched, then rewritten as the earlier layout kept it: one item.
    let legacy = |copies: u32, reported: bool| {
        let store = store.clone();
        let ddb = ddb.clone();
        let table = f.table.clone();
        async move {
            let mut order: Order =
                printworks::testing::stored_dispatched(&*store, &[("poster-30x40", copies)], now)
                    .await;
            if reported {
                for job in order.production.as_mut().unwrap().jobs.iter_mut() {
                    job.status = Some(JobState::Accepted);
                }
            }
            let pk = format!("ORDER#{}#{}", order.tenant, order.id);
            ddb.delete_item()
                .table_name(&table)
                .key("pk", AttributeValue::S(pk.clone()))
                .key("sk", AttributeValue::S("PRODUCTION".into()))
                .send()
                .await
                .unwrap();
            ddb.update_item()
                .table_name(&table)
                .key("pk", AttributeValue::S(pk))
                .key("sk", AttributeValue::S("ORDER".into()))
                .update_expression("SET #doc = :doc")
                .expression_attribute_names("#doc", "doc")
                .expression_attribute_values(
                    ":doc",
                    AttributeValue::S(serde_json::to_string(&order).unwrap()),
                )
                .send()
                .await
                .unwrap();
            let stored = store.get(&order.tenant, &order.id).await.unwrap().unwrap();
            assert_eq!(stored, order);
            order
        }
    };

    // Small: a report goes to the whole order and moves it out.
    let small = legacy(3, false).await;
    let job = small.production.as_ref().unwrap().jobs[0].clone();
    assert!(
        store
            .job_view(&small.tenant, &small.id, &job.job_id)
            .await
            .unwrap()
            .is_none()
    );
    let events = production_events::ProductionEvents::new(
        store.clone(),
        store.clone(),
        Arc::new(printworks::clock::SystemClock),
    );
    let report = JobStatusReport {
        job_id: job.job_id.clone(),
        plant: small.production.as_ref().unwrap().plant.clone(),
        tenant: small.tenant.clone(),
        order_id: small.id.clone(),
        status: JobState::Printing,
        at: now,
        carrier: None,
        tracking: None,
        reason: None,
    };
    events.apply(&report).await.unwrap();
    let view = store
        .job_view(&small.tenant, &small.id, &job.job_id)
        .await
        .unwrap()
        .expect("moved out");
    assert_eq!(view.record.revision, 1);
    assert_eq!(view.job.unwrap().status, Some(JobState::Printing));
    let after = store.get(&small.tenant, &small.id).await.unwrap().unwrap();
    assert_eq!(after.state, OrderState::InProduction);

    // Large: 100 reported jobs stay inside the order's item.
    let large = legacy(100, true).await;
    let mut next = large.successor(now);
    next.reference = Some("po-1".into());
    store.transition(&next, &large, vec![]).await.unwrap();
    let after = store.get(&large.tenant, &large.id).await.unwrap().unwrap();
    assert_eq!(after.reference.as_deref(), Some("po-1"));
    assert_eq!(after.production, large.production);
    let job = &large.production.as_ref().unwrap().jobs[0];
    assert!(
        store
            .job_view(&large.tenant, &large.id, &job.job_id)
            .await
            .unwrap()
            .is_none(),
        "no production record apart"
    );
    // A production record apart (written by another writer meanwhile):
    // the write from before it is refused.
    ddb.put_item()
        .table_name(&f.table)
        .item(
            "pk",
            AttributeValue::S(format!("ORDER#{}#{}", large.tenant, large.id)),
        )
        .item("sk", AttributeValue::S("PRODUCTION".into()))
        .item("revision", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let mut late = after.successor(now);
    late.reference = Some("po-2".into());
    let refused = store.transition(&late, &after, vec![]).await;
    assert!(matches!(refused, Err(StoreError::Conflict)), "{refused:?}");
}

/// A customer's changes through order-api's router on DynamoDB Local and
/// moto's S3: the upload named is sniffed with a ranged `GetObject` (a
/// PDF is refused, a JPEG taken), the change is written once per key
/// (replayed, and refused with the key of the placement: one key scope
/// per tenant), and the order keeps each change.
#[tokio::test]
async fn emulator_a_customer_changes_an_order_once_per_key() {
    use printworks::ports::OrderStore;
    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let blobs = Arc::new(S3Blobs::from_sdk(&f.sdk, &f.bucket, true));
    let tenant = printworks_local::seed::demo_tenants()
        .into_iter()
        .find(|t| t.id.as_str() == "demo-b2b")
        .unwrap();
    store.put_tenant(&tenant).await.unwrap();
    let key = mint_api_key("test", &tenant.id);
    store.put_api_key(&key.record).await.unwrap();
    let router = api_router(
        "test",
        store.clone(),
        store.clone(),
        store.clone(),
        blobs.clone(),
    );
    let call = |method: &str, path: String, idem: &str, body: Value| {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", key.full))
            .header("idempotency-key", idem)
            .header("content-type", "application/json")
            .body(lambda_http::Body::Text(body.to_string()))
            .unwrap();
        let router = router.clone();
        async move {
            let res = order_api::handle(&router, request).await;
            let status = res.status().as_u16();
            let replayed = res.headers().contains_key("idempotent-replayed");
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                replayed,
                serde_json::from_slice::<Value>(&bytes).unwrap(),
            )
        }
    };
    let (pdf, jpeg) = (
        printworks::domain::upload::UploadId::new(),
        printworks::domain::upload::UploadId::new(),
    );
    blobs
        .put(
            &pdf.key(&tenant.id),
            b"%PDF-1.7\n%...".to_vec(),
            "image/jpeg",
        )
        .await
        .unwrap();
    blobs
        .put(
            &jpeg.key(&tenant.id),
            printworks_tests::photo(64, 48),
            "image/jpeg",
        )
        .await
        .unwrap();

    let example = request_example(&openapi(), "/v1/orders");
    let (status, _, placed) = call("POST", "/v1/orders".into(), "k-1", example).await;
    assert_eq!(status, 201, "{placed}");
    let id = placed["id"].as_str().unwrap().to_string();
    assert_eq!(placed["state"], "paid");
    let photo = format!("/v1/orders/{id}/items/1/images/0");

    let (status, _, refused) = call(
        "PUT",
        photo.clone(),
        "k-2",
        json!({"upload_id": pdf.as_str()}),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("unsupported_image")),
        "{refused}"
    );
    let body = json!({"upload_id": jpeg.as_str()});
    let (status, replayed, replaced) = call("PUT", photo.clone(), "k-2", body.clone()).await;
    assert_eq!((status, replayed), (200, false), "{replaced}");
    assert_eq!(
        replaced["items"][0]["images"][0]["upload_id"],
        jpeg.as_str()
    );
    let (status, replayed, again) = call("PUT", photo.clone(), "k-2", body.clone()).await;
    assert_eq!((status, replayed, &again), (200, true, &replaced));
    let (status, _, reused) = call("PUT", photo, "k-1", body).await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "the placement's key: {reused}"
    );
    let (status, _, changed) = call(
        "PATCH",
        format!("/v1/orders/{id}"),
        "k-3",
        json!({"customer": {"email": "buyer@example.com", "phone": "+4930123456"}}),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let stored = store
        .get(
            &tenant.id,
            &printworks::domain::order::OrderId::parse(&id).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.customer.email, "buyer@example.com");
    assert_eq!(stored.version, 2, "two changes, each written once");
    let kinds: Vec<&str> = stored.changes.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(kinds, ["replace_image", "change_address"]);
    assert!(stored.changes.iter().all(|c| c.by == key.record.key_id));
}

/// The index of orders whose money needs a person, on DynamoDB Local: a
/// flag raised puts the order's marker in the order's transaction, a
/// write of a flagged order keeps it, resolving the flag deletes it; and
/// an order flagged before the index existed joins it on its next write.
#[tokio::test]
async fn emulator_orders_needing_a_person_are_indexed_with_their_writes() {
    use printworks::domain::operator::OperatorId;
    use printworks::domain::payment::{PaymentFlag, PaymentLedger};
    use printworks::ports::{OpsStore, OpsWrite, OrderStore, PlaceOutcome, ops_scope};
    if emulator().is_none() {
        return;
    }
    let sdk = load_sdk_config().await;
    let table = format!("orders-{}", printworks::testing::emulator::run_id());
    printworks::testing::emulator::create_orders_table(&sdk, &table).await;
    let store = DynamoStore::from_sdk(&sdk, &table);
    let now = time::OffsetDateTime::now_utc();
    let flag = |order: &printworks::domain::order::Order| {
        let mut next = order.successor(now);
        next.payment_status
            .get_or_insert_with(PaymentLedger::default)
            .flags
            .push(PaymentFlag {
                event_id: "evt_1".into(),
                code: "amount_mismatch".into(),
                message: "1 EUR is not the total".into(),
                at: now,
                resolved: None,
            });
        next
    };
    let placed = printworks::testing::paid_order(&[("poster-30x40", 1)], "DE", now);
    let order = placed.order.clone();
    store.place(placed).await.unwrap();
    assert!(store.needing_attention(10).await.unwrap().is_empty());

    let flagged = flag(&order);
    store
        .transition(&flagged, &order, Vec::new())
        .await
        .unwrap();
    let listed = store.needing_attention(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, order.id);
    // Another write of the flagged order keeps it listed.
    let mut phoned = flagged.successor(now);
    phoned.customer.phone = Some("+4930123456".into());
    store
        .transition(&phoned, &flagged, Vec::new())
        .await
        .unwrap();
    assert_eq!(store.needing_attention(10).await.unwrap().len(), 1);

    // Resolved (the operator's action with its key): off the list.
    let anna = OperatorId::parse("anna").unwrap();
    let acted = phoned
        .resolve_flag(&anna, 1, "the bank confirmed", now)
        .unwrap();
    let idempotency = printworks::ports::IdempotencyRecord {
        key: "resolve-1".into(),
        request_hash: "h".into(),
        response: printworks::ports::StoredResponse {
            status: 200,
            body: "{}".into(),
        },
    };
    let outcome = store
        .act(OpsWrite {
            scope: ops_scope(&anna),
            next: acted.next.clone(),
            observed: phoned.clone(),
            events: acted.events,
            open_jobs: Default::default(),
            idempotency,
        })
        .await
        .unwrap();
    assert_eq!(outcome, PlaceOutcome::Created);
    assert!(store.needing_attention(10).await.unwrap().is_empty());

    // A second order flagged by an older build (no marker): its next write
    // lists it.
    let placed = printworks::testing::paid_order(&[("poster-30x40", 1)], "DE", now);
    let old = placed.order.clone();
    store.place(placed).await.unwrap();
    let flagged = flag(&old);
    let item = aws_sdk_dynamodb::types::AttributeValue::S(serde_json::to_string(&flagged).unwrap());
    aws_sdk_dynamodb::Client::new(&sdk)
        .update_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("ORDER#{}#{}", old.tenant, old.id)),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("ORDER".into()),
        )
        .update_expression("SET doc = :doc, version = :v")
        .expression_attribute_values(":doc", item)
        .expression_attribute_values(
            ":v",
            aws_sdk_dynamodb::types::AttributeValue::N(flagged.version.to_string()),
        )
        .send()
        .await
        .unwrap();
    assert!(store.needing_attention(10).await.unwrap().is_empty());
    let stored = store.get(&old.tenant, &old.id).await.unwrap().unwrap();
    assert!(stored.needs_attention());
    let touched = stored.successor(now);
    store
        .transition(&touched, &stored, Vec::new())
        .await
        .unwrap();
    assert_eq!(store.needing_attention(10).await.unwrap()[0].id, old.id);
}

/// The reconciler on DynamoDB Local (its `idle` index, the outbox items
/// events-publisher deletes once published) and SNS/SQS on moto: events
/// the stream never carried are published after five minutes, an idle paid
/// order is handed to render once by two runs at once, then announced
/// stuck once and listed for operators, a rendered one handed to dispatch,
/// and a dispatched order's untaken jobs get fresh URLs before theirs
/// expire.
#[tokio::test]
async fn emulator_the_reconciler_repairs_on_dynamodb_and_publishes_what_the_stream_missed() {
    use printworks::clock::ManualClock;
    use printworks::domain::events::EventType;
    use printworks::domain::ops::{Stage, stage_of};
    use printworks::ports::{Clock, OpsStore, OrderStore, ReconcileStore};
    use reconciler::{Config, Reconciler};
    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let t0 = time::OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(t0));
    let reconciler = || {
        Reconciler::new(
            &Config::default(),
            store.clone(),
            store.clone(),
            Arc::new(SnsPublisher::from_sdk(&f.sdk, &f.topic_arn)),
            clock.clone(),
        )
    };
    let all = SqsQueue::from_sdk(&f.sdk, &f.all_queue);
    let min = Duration::from_secs(60);

    // Order A's events go out through the stream; events-publisher then
    // deletes their outbox items.
    let a = printworks::testing::paid_order(&[("poster-30x40", 1)], "DE", t0);
    let a_order = a.order.clone();
    store.place(a).await.unwrap();
    let batch: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_value(stream_batch(&f).await).unwrap();
    let outcome = events_publisher::handle_and_clear(
        batch,
        &SnsPublisher::from_sdk(&f.sdk, &f.topic_arn),
        store.as_ref(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.published, 2);
    assert_eq!(drain(&all, 2).await.len(), 2);
    let far = t0 + Duration::from_secs(86_400);
    assert!(store.unpublished(far, 100).await.unwrap().is_empty());

    // Order B's events never reach the topic (a lost stream record).
    let b = printworks::testing::paid_order(&[("poster-30x40", 1)], "AT", t0);
    let b_events: Vec<String> = b.events.iter().map(|e| e.id.clone()).collect();
    store.place(b).await.unwrap();
    let dispatched =
        printworks::testing::stored_dispatched(store.as_ref(), &[("poster-30x40", 2)], t0).await;
    // A rendered order dispatch never took.
    let c = printworks::testing::paid_order(&[("poster-30x40", 1)], "NL", t0);
    let c_paid = c.order.clone();
    store.place(c).await.unwrap();
    let (c_rendered, c_event, _) = printworks::testing::rendered(&c_paid, t0);
    store
        .transition(&c_rendered, &c_paid, vec![c_event])
        .await
        .unwrap();
    // The dispatch's own events are published: only B's are missing.
    let pending = store.unpublished(far, 100).await.unwrap();
    store
        .mark_published(
            &pending
                .iter()
                .filter(|e| !b_events.contains(&e.id))
                .map(|e| e.id.clone())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    clock.advance(4 * min);
    assert_eq!(reconciler().run().await.unwrap().republished, 0);

    // Sixteen minutes on: B's events are published by the reconciler, and
    // both paid orders are handed to render, once each, by two runs at once.
    clock.advance(12 * min);
    let (r1, r2) = (reconciler(), reconciler());
    let (x, y) = tokio::join!(r1.run(), r2.run());
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x.republished + y.republished >= 2, "{x:?} {y:?}");
    assert_eq!(x.rendered_again + y.rendered_again, 2, "{x:?} {y:?}");
    assert_eq!(x.dispatched_again + y.dispatched_again, 1, "{x:?} {y:?}");
    let got = drain(&all, 2).await;
    let mut ids: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut expected = b_events.clone();
    expected.sort();
    assert_eq!(ids, expected, "B's events, at least once");
    let nudges: Vec<_> = store
        .unpublished(far, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == EventType::OrderNudged)
        .collect();
    assert_eq!(nudges.len(), 3, "{nudges:?}");
    for nudge in &nudges {
        let stage = if nudge.order_id == c_paid.id {
            Stage::Dispatch
        } else {
            Stage::Render
        };
        assert_eq!(stage_of(nudge), Some(stage), "{nudge:?}");
    }
    let stored = store
        .get(&a_order.tenant, &a_order.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.watch.as_ref().unwrap().nudges, 1);
    assert_eq!(
        stored.updated_at, a_order.updated_at,
        "the repair is not a change"
    );

    // An hour in `paid`: announced stuck once, and listed for operators.
    let mut stuck = 0;
    for _ in 0..4 {
        clock.advance(15 * min);
        stuck += reconciler().run().await.unwrap().stuck;
    }
    assert_eq!(stuck, 3, "A, B and C, once each");
    let listed = store.needing_attention(10).await.unwrap();
    assert!(listed.iter().any(|o| o.id == a_order.id && o.is_stuck()));

    // Eleven hours after the dispatch: its jobs get fresh URLs, once.
    clock.advance(Duration::from_secs(11 * 3600) - 76 * min);
    let report = reconciler().run().await.unwrap();
    assert_eq!(report.urls_refreshed, 1, "{report:?}");
    let refreshed = store
        .get(&dispatched.tenant, &dispatched.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        refreshed.watch.as_ref().unwrap().urls_refreshed_at,
        Some(clock.now())
    );
    assert_eq!(reconciler().run().await.unwrap().urls_refreshed, 0);
}

/// Dead letters on SQS (moto): the depth of each dead-letter queue, and a
/// look that leaves the messages where they are (visibility 0). The
/// redrive, an SQS message move task, which moto does not implement, runs
/// on LocalStack (`infra/localstack/tests/test_end_to_end.py`).
#[tokio::test]
async fn emulator_dead_letters_are_counted_and_looked_at_without_being_taken() {
    use printworks::adapters::aws::sqs::SqsDeadLetters;
    use printworks::ports::{DeadLetters, MessageQueue};
    if emulator().is_none() {
        return;
    }
    let sdk = load_sdk_config().await;
    let run = run_id();
    let dlq = create_sqs_queue(&sdk, &format!("dispatch-dlq-{run}")).await;
    let event = EventEnvelope::new(
        printworks::domain::events::EventType::OrderRendered,
        &printworks::domain::order::OrderId::new(),
        &printworks::domain::tenant::TenantId::parse("acme-prints").unwrap(),
        time::OffsetDateTime::now_utc(),
        json!({"attempt": 1}),
    );
    SqsQueue::from_sdk(&sdk, &dlq)
        .send_batch(&[serde_json::to_string(&event).unwrap()])
        .await
        .unwrap();
    let letters = SqsDeadLetters::from_sdk(
        &sdk,
        std::collections::BTreeMap::from([("dispatch".to_string(), dlq.clone())]),
    );
    let queues = letters.dead_letter_queues().await.unwrap();
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].queue, "dispatch");
    assert_eq!(queues[0].dead_letter_queue, format!("dispatch-dlq-{run}"));
    assert_eq!(queues[0].depth, 1);
    for _ in 0..2 {
        let seen = letters.dead_letters("dispatch", 10).await.unwrap().unwrap();
        assert_eq!(seen.len(), 1, "still there: {seen:?}");
        assert!(seen[0].at.is_some());
        let shown = ops_api::dead_letters::describe(&seen[0]);
        assert_eq!(shown["message"]["event_id"], event.id.as_str());
    }
    assert!(letters.dead_letters("render", 10).await.unwrap().is_none());
    assert!(letters.redrive("render").await.unwrap().is_none());
}

/// The statistics projection on DynamoDB: events reach a queue through
/// the topic's filter on `STATS_EVENTS` (as `StatsSubscription` in the
/// template), are counted by the stats handler on DynamoDB Local, each
/// delivered twice and all at once (transactions on one counter conflict
/// and are retried), and the counters equal those the SQLite store counts
/// from the same events: the two adapters agree.
#[tokio::test]
async fn emulator_the_statistics_count_each_event_once_on_dynamodb_as_on_sqlite() {
    use printworks::domain::events::EventType;
    use printworks::domain::stats::{Report, STATS_EVENTS, StatsQuery};
    use printworks::ports::{EventPublisher, StatsStore};
    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let run = run_id();
    let filter = json!({"type": STATS_EVENTS.iter().map(|t| t.as_str()).collect::<Vec<_>>()});
    let stats_queue =
        create_queue(&f.sdk, &f.topic_arn, &format!("stats-{run}"), Some(filter)).await;
    let dynamo = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let publisher = SnsPublisher::from_sdk(&f.sdk, &f.topic_arn);
    let t0 = time::macros::datetime!(2026-11-20 08:00 UTC);
    let mut events = Vec::new();
    for i in 0..24u32 {
        let at = t0 + time::Duration::minutes(i64::from(i) * 97);
        let country = if i % 3 == 0 { "CH" } else { "DE" };
        let placed = printworks::testing::paid_order(&[("poster-30x40", 1 + i % 2)], country, at);
        let order = placed.order.clone();
        events.extend(placed.events);
        if i % 5 == 0 {
            let (_, held) = order
                .hold_unprintable(
                    &order.items[0],
                    0,
                    &printworks::domain::print::Unprintable::UploadMissing,
                    at,
                )
                .unwrap();
            events.push(held);
        } else {
            let shipped_at = at + time::Duration::minutes(600 + i64::from(i) * 13);
            let mut data = json!({"attempt": 1});
            order.add_shipment_facts(&mut data, if i % 2 == 0 { "muc" } else { "btf" });
            events.push(EventEnvelope::new(
                EventType::OrderShipped,
                &order.id,
                &order.tenant,
                shipped_at,
                data,
            ));
        }
    }
    // Events the statistics do not count are filtered out by the topic.
    let counted = events
        .iter()
        .filter(|e| STATS_EVENTS.contains(&e.event_type))
        .count();
    publisher.publish(&events).await.unwrap();
    let queue = SqsQueue::from_sdk(&f.sdk, &stats_queue);
    let delivered = drain(&queue, counted).await;
    assert_eq!(delivered.len(), counted);

    let on_dynamo = stats::Stats::new(dynamo.clone());
    let bodies: Vec<String> = delivered
        .iter()
        .chain(delivered.iter())
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let outcomes = futures::future::join_all(bodies.iter().map(|b| on_dynamo.handle(b))).await;
    let newly = outcomes
        .into_iter()
        .map(|o| o.expect("counted or already counted"))
        .filter(|o| *o == stats::Outcome::Counted)
        .count();
    assert_eq!(newly, counted, "each event counted once");

    let dir = tempfile::tempdir().unwrap();
    let sqlite = printworks_tests::sqlite_store(dir.path());
    let on_sqlite = stats::Stats::new(sqlite.clone());
    for body in &bodies {
        on_sqlite.handle(body).await.unwrap();
    }
    let query =
        StatsQuery::new(t0.date(), t0.date() + time::Duration::days(3), None, None).unwrap();
    let report = |counts| Report::from_counts(&query, counts);
    let from_dynamo = report(dynamo.counts(&query).await.unwrap());
    assert_eq!(from_dynamo, report(sqlite.counts(&query).await.unwrap()));
    let orders: i64 = from_dynamo.revenue.iter().map(|l| l.orders).sum();
    assert_eq!(orders, 24);
    assert!(
        from_dynamo
            .revenue
            .iter()
            .any(|l| l.currency.code() == "CHF")
    );
    assert_eq!(from_dynamo.holds.iter().map(|h| h.holds).sum::<i64>(), 5);
    assert_eq!(
        from_dynamo.lead_times.iter().map(|l| l.orders).sum::<i64>(),
        19
    );
    // One plant, one day: the Query reads the day's keys only.
    let one = StatsQuery::new(t0.date(), t0.date(), None, Some("muc".into())).unwrap();
    assert_eq!(
        Report::from_counts(&one, dynamo.counts(&one).await.unwrap()),
        Report::from_counts(&one, sqlite.counts(&one).await.unwrap())
    );
}

/// Held orders are found through the `idle` index on DynamoDB (the
/// console's list), as on SQLite: joined in the write that holds the order,
/// left in the write that moves it on.
#[tokio::test]
async fn emulator_held_orders_are_listed_through_the_index_written_with_them() {
    use printworks::ports::{OpsStore, OrderStore};
    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = DynamoStore::from_sdk(&f.sdk, &f.table);
    let now = time::OffsetDateTime::now_utc();
    let mut held = Vec::new();
    for i in 0..3 {
        let placed = printworks::testing::paid_order(
            &[("poster-30x40", 1)],
            "DE",
            now + time::Duration::seconds(i),
        );
        let order = placed.order.clone();
        store.place(placed).await.unwrap();
        let (on_hold, event) = order
            .hold(
                "The photo is too small.",
                json!({"code": "too_small"}),
                now + time::Duration::seconds(10 - i),
            )
            .unwrap();
        store
            .transition(&on_hold, &order, vec![event])
            .await
            .unwrap();
        held.push(on_hold);
    }
    let listed = store.held_orders(10).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|o| o.id.clone()).collect();
    // Longest held first: the last one was held first.
    assert_eq!(
        ids,
        held.iter().rev().map(|o| o.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        listed[0].hold.as_ref().unwrap().code.as_deref(),
        Some("too_small")
    );
    let (released, event) = held[0]
        .cancel("the customer asked", now + time::Duration::seconds(20))
        .unwrap();
    store
        .transition(&released, &held[0], vec![event])
        .await
        .unwrap();
    assert_eq!(store.held_orders(10).await.unwrap().len(), 2);
    assert_eq!(store.held_orders(1).await.unwrap().len(), 1);
}

/// The console's plants view and order page as the ops-api Lambda wires
/// them (`App::on_aws`): the open jobs read through the idle index, the
/// agents' reports and the day's shipments kept by production-events on
/// DynamoDB, and previews by presigned S3 GET, allowed by the console's
/// policy.
#[tokio::test]
async fn emulator_the_console_shows_the_plants_and_an_orders_previews_from_dynamodb_and_s3() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use printworks::domain::operator::{Operator, OperatorId, Role, mint_operator_key};
    use printworks::domain::production::{JobState, JobStatusReport};
    use printworks::ports::OperatorStore;
    use tower::ServiceExt;
    if emulator().is_none() {
        return;
    }
    let f = fixture().await;
    let store = Arc::new(DynamoStore::from_sdk(&f.sdk, &f.table));
    let prints = S3Blobs::from_sdk(&f.sdk, &f.bucket, true);
    let now = time::OffsetDateTime::now_utc();
    let a = printworks::testing::stored_dispatched(
        &*store,
        &[("poster-30x40", 2)],
        now - time::Duration::hours(2),
    )
    .await;
    let b = printworks::testing::stored_dispatched(
        &*store,
        &[("poster-30x40", 1)],
        now - time::Duration::hours(1),
    )
    .await;
    let plant = a.production.as_ref().unwrap().plant.clone();
    let handler = production_events::ProductionEvents::new(
        store.clone(),
        store.clone(),
        Arc::new(printworks::clock::SystemClock),
    );
    let report = |order: &printworks::domain::order::Order, status: JobState| {
        let production = order.production.as_ref().unwrap();
        JobStatusReport {
            job_id: production.jobs[0].job_id.clone(),
            plant: production.plant.clone(),
            tenant: order.tenant.clone(),
            order_id: order.id.clone(),
            status,
            at: now,
            carrier: (status == JobState::Shipped).then(|| "DHL".into()),
            tracking: (status == JobState::Shipped).then(|| "JJD42".into()),
            reason: None,
        }
    };
    handler
        .apply(&report(&a, JobState::Accepted))
        .await
        .unwrap();
    handler.apply(&report(&b, JobState::Shipped)).await.unwrap();
    // A duplicate ships nothing more.
    handler.apply(&report(&b, JobState::Shipped)).await.unwrap();

    let id = OperatorId::parse("sam").unwrap();
    let key = mint_operator_key("prod", &id);
    let operator = Operator {
        id,
        role: Role::Support,
        created_at: now,
    };
    store.add_operator(&operator, &key.record).await.unwrap();
    let resources = ops_api::Resources {
        orders_table: f.table.clone(),
        prints_bucket: f.bucket.clone(),
        caps: Default::default(),
        endpoint_url: Some("emulator".into()),
        dead_letter_queues: Default::default(),
    };
    let app = ops_api::App::on_aws(
        &f.sdk,
        ops_api::Config::for_env("prod").unwrap(),
        &resources,
    );
    let router = ops_api::lambda_router(Arc::new(app));
    let get = |path: String| {
        let (router, key) = (router.clone(), key.full.clone());
        async move {
            let request = http::Request::get(path)
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, headers, body)
        }
    };

    let (status, _, body) = get("/v1/ops/plants".into()).await;
    let board: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{board}");
    let row = board["plants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plant"] == plant.as_str())
        .unwrap();
    // a: one accepted, one sent; b shipped.
    assert_eq!(row["open_jobs"], 2, "{row}");
    assert_eq!(row["by_state"]["accepted"], 1);
    assert_eq!(row["by_state"]["sent"], 1);
    assert_eq!(row["shipped_today"], 1);
    assert_eq!(row["oldest_job"]["order_id"], a.id.to_string());
    assert!(
        row["last_report_minutes_ago"].as_i64().unwrap() <= 1,
        "{row}"
    );

    // The order page: a preview by presigned GET that S3 answers with the file.
    let render = &a.items[0].renders[0];
    prints
        .put(&render.preview.key, b"a preview".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let (status, _, body) = get(format!("/v1/ops/orders/{}", a.id)).await;
    let view: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{view}");
    let url = view["previews"][0]["url"].as_str().unwrap();
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status(), 200, "{url}");
    assert_eq!(&fetched.bytes().await.unwrap()[..], b"a preview");
    assert_eq!(
        view["notifications"],
        json!([]),
        "the ledger is read: nothing sent yet"
    );
    // The console's policy lets the page show images from the bucket's origin.
    let (status, headers, _) = get("/console".into()).await;
    assert_eq!(status, 200);
    let policy = headers["content-security-policy"].to_str().unwrap();
    let origin = url.split('/').take(3).collect::<Vec<_>>().join("/");
    assert!(
        policy.contains(&format!("img-src 'self' {origin} ")),
        "{policy} / {origin}"
    );
}

/// The search indexes the template defines on the orders table are those
/// the store queries (`search::INDEXES`, from which the emulator tests'
/// table is made), and ops-api may query them.
#[test]
fn the_templates_search_indexes_are_those_the_dynamodb_store_queries() {
    use printworks::adapters::aws::dynamodb::search::{INDEXES, SORT_ATTRIBUTE};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let template: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let table = &template["Resources"]["OrdersTable"]["Properties"];
    let defined: Vec<&str> = table["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a["AttributeName"].as_str().unwrap())
        .collect();
    let indexes = table["GlobalSecondaryIndexes"].as_sequence().unwrap();
    let policy =
        serde_norway::to_string(&template["Resources"]["OpsApiFunction"]["Properties"]["Policies"])
            .unwrap();
    assert!(defined.contains(&SORT_ATTRIBUTE));
    for wanted in INDEXES {
        let index = indexes
            .iter()
            .find(|i| i["IndexName"].as_str() == Some(wanted.name))
            .unwrap_or_else(|| panic!("the template has no index {}", wanted.name));
        let keys: Vec<(&str, &str)> = index["KeySchema"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["AttributeName"].as_str().unwrap(),
                    k["KeyType"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [(wanted.partition, "HASH"), (SORT_ATTRIBUTE, "RANGE")],
            "{}",
            wanted.name
        );
        assert!(defined.contains(&wanted.partition), "{}", wanted.partition);
        let projection = &index["Projection"];
        if wanted.include.is_empty() {
            assert_eq!(projection["ProjectionType"].as_str(), Some("KEYS_ONLY"));
        } else {
            assert_eq!(projection["ProjectionType"].as_str(), Some("INCLUDE"));
            let included: Vec<&str> = projection["NonKeyAttributes"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(included, wanted.include, "{}", wanted.name);
        }
        assert!(
            policy.contains(&format!("${{OrdersTable.Arn}}/index/{}", wanted.name)),
            "ops-api may not query {}: {policy}",
            wanted.name
        );
    }
}

/// What one search store holds: the same orders, written the same way.
struct SearchStores {
    orders: Arc<dyn printworks::ports::OrderStore>,
    production: Arc<dyn printworks::ports::ProductionStore>,
}

/// The operators' search finds on DynamoDB (its sparse indexes) what it
/// finds on SQLite: the same orders, written to both through the store
/// ports (three tenants, shared references, e-mails in mixed case, held,
/// cancelled, dispatched and shipped orders over five days, two placed in
/// the same second, tracking numbers one of which two orders share), and
/// every query asked of both a page at a time with small limits until
/// `more` is false: the same order ids in the same order, the same `more`.
#[tokio::test]
async fn emulator_search_finds_orders_on_dynamodb_as_on_sqlite() {
    use printworks::domain::catalog::Catalog;
    use printworks::domain::production::{Dispatch, JobState, JobStatusReport};
    use printworks::domain::state::OrderState;
    use printworks::domain::tenant::TenantId;
    use printworks::ports::{OpsStore, SearchQuery};
    use time::macros::{date, datetime};
    if emulator().is_none() {
        return;
    }
    let sdk = load_sdk_config().await;
    let table = format!("orders-{}", run_id());
    create_orders_table(&sdk, &table).await;
    let dynamo = Arc::new(DynamoStore::from_sdk(&sdk, &table));
    let dir = tempfile::tempdir().unwrap();
    let sqlite = printworks_tests::sqlite_store(dir.path());
    let stores = [
        SearchStores {
            orders: dynamo.clone(),
            production: dynamo.clone(),
        },
        SearchStores {
            orders: sqlite.clone(),
            production: sqlite.clone(),
        },
    ];

    let tenants = ["acme-prints", "bolt-posters", "clay-cards"];
    let emails = [
        "Jane.Doe@Example.com",
        "jane.doe@example.com",
        "max@example.org",
        "ERIKA@EXAMPLE.COM",
        "Max@Example.org",
    ];
    let t0 = datetime!(2026-11-18 00:00 UTC);
    let mut placed = Vec::new();
    for i in 0..18usize {
        let at = match i {
            // The first second of a day, and the last.
            0 => t0,
            1 => t0 + time::Duration::days(1) - time::Duration::seconds(1),
            // The same second as the order before: the id decides.
            11 => placed
                .last()
                .map(|o: &printworks::domain::order::Order| o.created_at)
                .unwrap(),
            _ => t0 + time::Duration::minutes(i as i64 * (6 * 60 + 7)),
        };
        let copies = if i == 8 { 2 } else { 1 };
        let mut new = printworks::testing::paid_order(&[("poster-30x40", copies)], "DE", at);
        new.order.tenant = TenantId::parse(tenants[i % 3]).unwrap();
        new.order.reference = (i % 4 != 3).then(|| format!("PO-{}", i % 5));
        new.order.customer.email = emails[i % 5].into();
        let order = new.order.clone();
        for store in &stores {
            store.orders.place(new.clone()).await.unwrap();
        }
        let later = at + time::Duration::hours(1);
        match i % 5 {
            1 => {
                let (held, event) = order
                    .hold(
                        "The photo is too small.",
                        json!({"code": "too_small"}),
                        later,
                    )
                    .unwrap();
                for store in &stores {
                    store
                        .orders
                        .transition(&held, &order, vec![event.clone()])
                        .await
                        .unwrap();
                }
            }
            2 => {
                let (cancelled, event) = order.cancel("the customer asked", later).unwrap();
                for store in &stores {
                    store
                        .orders
                        .transition(&cancelled, &order, vec![event.clone()])
                        .await
                        .unwrap();
                }
            }
            3 | 4 => {
                let (rendered, event, _) = printworks::testing::rendered(&order, later);
                let Dispatch::ToPlant {
                    next: dispatched,
                    event: sent,
                } = rendered
                    .dispatch(Catalog::builtin(), &Default::default(), later)
                    .unwrap()
                else {
                    panic!("no plant for a poster")
                };
                let production = dispatched.production.clone().unwrap();
                for store in &stores {
                    store
                        .orders
                        .transition(&rendered, &order, vec![event.clone()])
                        .await
                        .unwrap();
                    store
                        .production
                        .transition_counted(
                            &dispatched,
                            &rendered,
                            vec![sent.clone()],
                            &production.plant,
                            production.jobs.len() as i64,
                        )
                        .await
                        .unwrap();
                }
                if i % 5 == 3 {
                    // Shipped: both jobs of order 8 in one parcel, whose
                    // number order 13's parcel has too.
                    let tracking = if i == 3 {
                        "JJD0003".to_string()
                    } else {
                        "JJD-SHARED".to_string()
                    };
                    for store in &stores {
                        let events = production_events::ProductionEvents::new(
                            store.orders.clone(),
                            store.production.clone(),
                            Arc::new(printworks::clock::SystemClock),
                        );
                        for job in &production.jobs {
                            let report = JobStatusReport {
                                job_id: job.job_id.clone(),
                                plant: production.plant.clone(),
                                tenant: order.tenant.clone(),
                                order_id: order.id.clone(),
                                status: JobState::Shipped,
                                at: later + time::Duration::days(1),
                                carrier: Some("DHL".into()),
                                tracking: Some(tracking.clone()),
                                reason: None,
                            };
                            events.apply(&report).await.unwrap();
                        }
                    }
                }
            }
            _ => {}
        }
        placed.push(order);
    }
    for store in &stores {
        let shipped = store
            .orders
            .get(&placed[8].tenant, &placed[8].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shipped.state, OrderState::Shipped);
    }

    let any = SearchQuery::default;
    let tenant = |t: &str| Some(TenantId::parse(t).unwrap());
    let queries: [(&str, SearchQuery); 28] = [
        ("nothing: every order", any()),
        (
            "an order id",
            SearchQuery {
                order_id: Some(placed[4].id.clone()),
                ..any()
            },
        ),
        (
            "an order id of another tenant",
            SearchQuery {
                order_id: Some(placed[4].id.clone()),
                tenant: tenant("acme-prints"),
                ..any()
            },
        ),
        (
            "a reference several tenants use",
            SearchQuery {
                reference: Some("PO-1".into()),
                ..any()
            },
        ),
        (
            "a reference of one tenant",
            SearchQuery {
                reference: Some("PO-1".into()),
                tenant: tenant("bolt-posters"),
                ..any()
            },
        ),
        (
            "no such reference",
            SearchQuery {
                reference: Some("po-1".into()),
                ..any()
            },
        ),
        (
            "an e-mail in another case",
            SearchQuery {
                email: Some("JANE.DOE@example.COM".into()),
                ..any()
            },
        ),
        (
            "an e-mail, lower-cased",
            SearchQuery {
                email: Some("max@example.org".into()),
                ..any()
            },
        ),
        (
            "an e-mail and a state",
            SearchQuery {
                email: Some("jane.doe@example.com".into()),
                state: Some(OrderState::OnHold),
                ..any()
            },
        ),
        (
            "an e-mail, a tenant and days",
            SearchQuery {
                email: Some("Max@example.org".into()),
                tenant: tenant("clay-cards"),
                from: Some(date!(2026 - 11 - 19)),
                to: Some(date!(2026 - 11 - 21)),
                ..any()
            },
        ),
        (
            "a tracking number",
            SearchQuery {
                tracking: Some("JJD0003".into()),
                ..any()
            },
        ),
        (
            "a tracking number two orders share",
            SearchQuery {
                tracking: Some("JJD-SHARED".into()),
                ..any()
            },
        ),
        (
            "a shared tracking number and a tenant",
            SearchQuery {
                tracking: Some("JJD-SHARED".into()),
                tenant: tenant("clay-cards"),
                ..any()
            },
        ),
        (
            "a tracking number and the order id",
            SearchQuery {
                tracking: Some("JJD-SHARED".into()),
                order_id: Some(placed[13].id.clone()),
                ..any()
            },
        ),
        (
            "no such tracking number",
            SearchQuery {
                tracking: Some("JJD9999".into()),
                ..any()
            },
        ),
        (
            "a tenant",
            SearchQuery {
                tenant: tenant("bolt-posters"),
                ..any()
            },
        ),
        (
            "a tenant and a state",
            SearchQuery {
                tenant: tenant("acme-prints"),
                state: Some(OrderState::Paid),
                ..any()
            },
        ),
        (
            "a tenant and days",
            SearchQuery {
                tenant: tenant("clay-cards"),
                from: Some(date!(2026 - 11 - 20)),
                to: Some(date!(2026 - 11 - 21)),
                ..any()
            },
        ),
        (
            "no such tenant",
            SearchQuery {
                tenant: tenant("dart-frames"),
                ..any()
            },
        ),
        (
            "a state",
            SearchQuery {
                state: Some(OrderState::OnHold),
                ..any()
            },
        ),
        (
            "another state",
            SearchQuery {
                state: Some(OrderState::Dispatched),
                ..any()
            },
        ),
        (
            "a state no order is in",
            SearchQuery {
                state: Some(OrderState::Placed),
                ..any()
            },
        ),
        (
            "a state and days",
            SearchQuery {
                state: Some(OrderState::Cancelled),
                from: Some(date!(2026 - 11 - 19)),
                ..any()
            },
        ),
        (
            "from a day on",
            SearchQuery {
                from: Some(date!(2026 - 11 - 20)),
                ..any()
            },
        ),
        (
            "up to a day",
            SearchQuery {
                to: Some(date!(2026 - 11 - 18)),
                ..any()
            },
        ),
        (
            "one day",
            SearchQuery {
                from: Some(date!(2026 - 11 - 19)),
                to: Some(date!(2026 - 11 - 19)),
                ..any()
            },
        ),
        (
            "days with nothing",
            SearchQuery {
                from: Some(date!(2026 - 12 - 01)),
                to: Some(date!(2026 - 12 - 31)),
                ..any()
            },
        ),
        (
            "a reference and days",
            SearchQuery {
                reference: Some("PO-2".into()),
                to: Some(date!(2026 - 11 - 20)),
                ..any()
            },
        ),
    ];
    let ids = |orders: &[printworks::domain::order::Order]| -> Vec<String> {
        orders.iter().map(|o| o.id.to_string()).collect()
    };
    let mut found_by = std::collections::BTreeMap::new();
    for (name, query) in &queries {
        let whole = sqlite
            .search(&SearchQuery {
                limit: 200,
                ..query.clone()
            })
            .await
            .unwrap()
            .unwrap();
        assert!(!whole.more, "{name}");
        for limit in [1, 2, 3, 200] {
            let mut seen = Vec::new();
            let mut after = None;
            for page_number in 1.. {
                let q = SearchQuery {
                    limit,
                    after: after.clone(),
                    ..query.clone()
                };
                let on_dynamo = dynamo.search(&q).await.unwrap().expect("DynamoDB searches");
                let on_sqlite = sqlite.search(&q).await.unwrap().unwrap();
                assert_eq!(
                    (ids(&on_dynamo.orders), on_dynamo.more),
                    (ids(&on_sqlite.orders), on_sqlite.more),
                    "{name}, limit {limit}, page {page_number}"
                );
                assert!(on_dynamo.orders.len() <= limit, "{name}");
                seen.extend(ids(&on_dynamo.orders));
                // The orders are whole: their jobs with them.
                for (d, s) in on_dynamo.orders.iter().zip(&on_sqlite.orders) {
                    assert_eq!(
                        (d.state, d.production.as_ref().map(|p| p.jobs.len())),
                        (s.state, s.production.as_ref().map(|p| p.jobs.len())),
                        "{name}"
                    );
                }
                if !on_dynamo.more {
                    break;
                }
                let last = on_dynamo
                    .orders
                    .last()
                    .expect("a page with more has orders");
                after = Some((last.created_at, last.id.clone()));
            }
            assert_eq!(
                seen,
                ids(&whole.orders),
                "{name}, limit {limit}: the pages together"
            );
        }
        found_by.insert(*name, whole.orders.len());
    }
    // What the queries find is what they were written for.
    let expected = [
        ("nothing: every order", 18),
        ("an order id", 1),
        ("an order id of another tenant", 0),
        ("a reference several tenants use", 3),
        ("an e-mail in another case", 8),
        ("a tracking number", 1),
        ("a tracking number two orders share", 2),
        ("a shared tracking number and a tenant", 1),
        ("a tracking number and the order id", 1),
        ("a state", 4),
        ("a state no order is in", 0),
        ("days with nothing", 0),
    ];
    for (name, count) in expected {
        assert_eq!(found_by[name], count, "{name}");
    }
    // The same second: the greater id first, on both.
    let every = dynamo
        .search(&SearchQuery {
            limit: 200,
            ..any()
        })
        .await
        .unwrap()
        .unwrap();
    let position = |id: &printworks::domain::order::OrderId| {
        every.orders.iter().position(|o| o.id == *id).unwrap()
    };
    let (ten, eleven) = (position(&placed[10].id), position(&placed[11].id));
    assert_eq!(ten.abs_diff(eleven), 1);
    assert_eq!(
        ten < eleven,
        placed[10].id.as_str() > placed[11].id.as_str()
    );
}
