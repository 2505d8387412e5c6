//! The real local platform, started on port 0, driven over HTTP as a
//! storefront would, then restarted.

use printworks::adapters::local::blobs::FsBlobStore;
use printworks::clock::SystemClock;
use printworks::ports::BlobStore;
use printworks_tests::{openapi, request_example, seeded_key, spawn_app};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn order_body(sku: &str, image: Value) -> Value {
    json!({
        "locale": "fr", "currency": "EUR",
        "customer": {"name": "Jeanne Martin", "email": "jeanne@example.fr"},
        "shipping": {"method": "express", "address": {"name": "Jeanne Martin", "line1": "12 rue de Rivoli", "postal_code": "75001", "city": "Paris", "country": "FR"}},
        "items": [{"sku": sku, "quantity": 2, "images": [image]}]
    })
}

async fn post(
    client: &Client,
    url: &str,
    key: &str,
    idem: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut req = client.post(url).bearer_auth(key).json(body);
    if let Some(idem) = idem {
        req = req.header("Idempotency-Key", idem);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

async fn get(client: &Client, url: &str, key: &str) -> (StatusCode, Value) {
    let res = client.get(url).bearer_auth(key).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

/// A PUT to a presigned upload URL.
async fn put_blob(
    client: &Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client
        .put(url)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn raw_post(
    client: &Client,
    url: &str,
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let res = client
        .post(url)
        .bearer_auth(key)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.expect("error bodies are JSON"))
}

#[tokio::test]
async fn storefront_flow_over_http_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let base = app.base_url();
    let brand = seeded_key(&app, "demo-brand");
    let b2b = seeded_key(&app, "demo-b2b");
    let client = Client::new();

    // Catalog
    let (status, products) = get(&client, &format!("{base}/v1/products"), &brand).await;
    assert_eq!(status, 200);
    assert!(products["products"].as_array().unwrap().len() >= 13);

    // Upload a photo through the presigned URL.
    let photo = b"\xFF\xD8\xFF\xE0 pretend JPEG bytes".to_vec();
    let (status, upload) = post(
        &client,
        &format!("{base}/v1/uploads"),
        &brand,
        None,
        &json!({"content_type": "image/jpeg", "size_bytes": photo.len()}),
    )
    .await;
    assert_eq!(status, 201, "{upload}");
    let put_url = upload["upload"]["url"].as_str().unwrap();
    assert!(
        upload["key"]
            .as_str()
            .unwrap()
            .starts_with("uploads/demo-brand/upl_")
    );
    // the wrong length or type is refused, the signed ones accepted
    let res = put_blob(&client, put_url, "image/jpeg", b"short".to_vec()).await;
    assert_eq!(res.status(), 400);
    let res = put_blob(&client, put_url, "image/png", photo.clone()).await;
    assert_eq!(res.status(), 400);
    let res = put_blob(&client, put_url, "image/jpeg", photo.clone()).await;
    assert_eq!(res.status(), 200);
    let tampered = put_url.replace("/uploads/demo-brand/", "/uploads/demo-b2b/");
    let res = put_blob(&client, &tampered, "image/jpeg", photo.clone()).await;
    assert_eq!(res.status(), 403);
    let stored = std::fs::read(
        dir.path()
            .join("blobs")
            .join(upload["key"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(stored, photo);
    // and it comes back through a presigned GET (the signing key is kept in the data dir)
    let signer = FsBlobStore::open(dir.path().join("blobs"), &base, Arc::new(SystemClock)).unwrap();
    let get_url = signer
        .presign_get(upload["key"].as_str().unwrap(), Duration::from_secs(60))
        .await
        .unwrap()
        .url;
    let res = client.get(&get_url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    assert_eq!(res.bytes().await.unwrap().to_vec(), photo);
    let res = client
        .get(get_url.replace("sig=", "sig=00"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // bad upload requests
    let (status, err) = post(
        &client,
        &format!("{base}/v1/uploads"),
        &brand,
        None,
        &json!({"content_type": "image/svg+xml", "size_bytes": 10}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), err["error"]["code"].as_str()),
        (422, Some("unsupported_content_type"))
    );
    let (status, _) = post(
        &client,
        &format!("{base}/v1/uploads"),
        &brand,
        None,
        &json!({"content_type": "image/png", "size_bytes": 60_000_000u64}),
    )
    .await;
    assert_eq!(status, 422);

    // Place a B2C order with the uploaded photo.
    let body = order_body("poster-50x70", json!({"upload_id": upload["upload_id"]}));
    let (status, order) = post(
        &client,
        &format!("{base}/v1/orders"),
        &brand,
        Some("key-1"),
        &body,
    )
    .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["state"], "placed");
    assert_eq!(order["items"][0]["images"][0]["key"], upload["key"]);
    assert_eq!(order["totals"]["vat_rate_bp"], 2000, "French VAT");
    let id = order["id"].as_str().unwrap().to_string();

    // Idempotency: same key and body replays; same key, other body is 422.
    let res = client
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&brand)
        .header("Idempotency-Key", "key-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    let replay: Value = res.json().await.unwrap();
    assert_eq!(replay, order);
    let mut other = body.clone();
    other["items"][0]["quantity"] = json!(3);
    let (status, err) = post(
        &client,
        &format!("{base}/v1/orders"),
        &brand,
        Some("key-1"),
        &other,
    )
    .await;
    assert_eq!(
        (status.as_u16(), err["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // the same key is independent per tenant
    let (status, b2b_order) = post(
        &client,
        &format!("{base}/v1/orders"),
        &b2b,
        Some("key-1"),
        &order_body(
            "photo-10x15",
            json!({"url": "https://img.example.com/x.jpg"}),
        ),
    )
    .await;
    assert_eq!(status, 422, "demo-b2b does not ship to FR: {b2b_order}");
    let mut de = order_body(
        "photo-10x15",
        json!({"url": "https://img.example.com/x.jpg"}),
    );
    de["shipping"]["address"] = json!({"name": "A GmbH", "line1": "Weg 1", "postal_code": "80331", "city": "München", "country": "DE"});
    let (status, b2b_order) = post(
        &client,
        &format!("{base}/v1/orders"),
        &b2b,
        Some("key-1"),
        &de,
    )
    .await;
    assert_eq!(status, 201, "{b2b_order}");
    assert_eq!(b2b_order["state"], "paid", "B2B pays by invoice");

    // Read back; tenant isolation.
    let (status, read) = get(&client, &format!("{base}/v1/orders/{id}"), &brand).await;
    assert_eq!((status.as_u16(), &read), (200, &order));
    let (status, err) = get(&client, &format!("{base}/v1/orders/{id}"), &b2b).await;
    assert_eq!(
        (status.as_u16(), err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = get(
        &client,
        &format!("{base}/v1/orders/ord_doesnotexist"),
        &brand,
    )
    .await;
    assert_eq!(status, 404);
    // Not UTF-8 once percent-decoded: still a JSON 404.
    let (status, err) = get(&client, &format!("{base}/v1/orders/%FF"), &brand).await;
    assert_eq!(
        (status.as_u16(), err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // The spec's order example is accepted as it stands by the demo brand.
    let example = request_example(&openapi(), "/v1/orders");
    let (status, ex_order) = post(
        &client,
        &format!("{base}/v1/orders"),
        &brand,
        Some("example"),
        &example,
    )
    .await;
    assert_eq!(status, 201, "{ex_order}");

    // Bad requests: 4xx with a JSON error, nothing stored.
    let url = format!("{base}/v1/orders");
    // The order body with one change, as bytes.
    let with = |change: &dyn Fn(&mut Value)| {
        let mut b = body.clone();
        change(&mut b);
        serde_json::to_vec(&b).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (
            b"{not json".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            serde_json::to_vec(&json!({"hello": 1})).unwrap(),
            "application/json",
            422,
            "invalid_body",
        ),
        (
            with(&|b| b["items"][0]["unit_price"] = json!(1)),
            "application/json",
            422,
            "server_computed_field",
        ),
        (
            with(&|b| b["status"] = json!("shipped")),
            "application/json",
            422,
            "server_computed_field",
        ),
        (
            with(&|b| b["gift_wrap"] = json!(true)),
            "application/json",
            422,
            "invalid_body",
        ),
        (
            serde_json::to_vec(&json!(["de", "EUR"])).unwrap(),
            "application/json",
            422,
            "invalid_body",
        ),
        (
            // serde would read a struct from an array of its fields.
            with(&|b| b["customer"] = json!(["Erika Mustermann", "erika@example.com"])),
            "application/json",
            422,
            "invalid_body",
        ),
        (
            with(&|b| b["items"][0]["quantity"] = json!(0)),
            "application/json",
            422,
            "validation_failed",
        ),
        (
            with(&|b| b["items"][0]["quantity"] = json!("two")),
            "application/json",
            422,
            "invalid_body",
        ),
        (
            vec![b' '; 200 * 1024],
            "application/json",
            413,
            "body_too_large",
        ),
        (
            serde_json::to_vec(&body).unwrap(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
    ];
    for (bytes, ct, want, code) in cases {
        let (status, err) = raw_post(&client, &url, &brand, ct, bytes).await;
        assert_eq!(
            (status.as_u16(), err["error"]["code"].as_str()),
            (want, Some(code)),
            "{err}"
        );
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, err) = post(&client, &url, &brand, None, &body).await;
    assert_eq!(
        (status.as_u16(), err["error"]["code"].as_str()),
        (400, Some("idempotency_key_required"))
    );
    let (status, err) = post(
        &client,
        &url,
        "pw_local_aaaaaaaaaaaaaaaa_0123456789012345678901234567890123456789",
        Some("k"),
        &body,
    )
    .await;
    assert_eq!(
        (status.as_u16(), err["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let res = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let (status, _) = post(
        &client,
        &format!("{base}/v1/nothing"),
        &brand,
        None,
        &json!({}),
    )
    .await;
    assert_eq!(status, 404);

    // Cancel: allowed before production, repeatable, and emitted once.
    let (status, cancelled) = post(
        &client,
        &format!(
            "{base}/v1/orders/{}/cancel",
            b2b_order["id"].as_str().unwrap()
        ),
        &b2b,
        None,
        &json!({"reason": "duplicate"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), cancelled["state"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, again) = post(
        &client,
        &format!(
            "{base}/v1/orders/{}/cancel",
            b2b_order["id"].as_str().unwrap()
        ),
        &b2b,
        None,
        &json!({}),
    )
    .await;
    assert_eq!((status.as_u16(), &again), (200, &cancelled));
    let (status, _) = post(
        &client,
        &format!("{base}/v1/orders/{id}/cancel"),
        &b2b,
        None,
        &json!({}),
    )
    .await;
    assert_eq!(status, 404, "another tenant cannot cancel it");

    // The outbox reaches the bus: the B2B order's OrderPaid once (the render
    // worker may have taken it already), every customer event on notify.
    let mut tries = 0;
    while app.bus.outbox_len().await.unwrap() > 0 && tries < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tries += 1;
    }
    assert_eq!(app.bus.outbox_len().await.unwrap(), 0);
    let b2b_events = app
        .bus
        .events_of(
            &printworks::domain::tenant::TenantId::parse("demo-b2b").unwrap(),
            &printworks::domain::order::OrderId::parse(b2b_order["id"].as_str().unwrap()).unwrap(),
        )
        .await
        .unwrap();
    let types: Vec<&str> = b2b_events.iter().map(|e| e.event_type.as_str()).collect();
    // The render worker may have put it on hold (its photo URL cannot be
    // fetched here) before the cancellation.
    let expected: &[&[&str]] = &[
        &["OrderPlaced", "OrderPaid", "OrderCancelled"],
        &["OrderPlaced", "OrderPaid", "OrderOnHold", "OrderCancelled"],
    ];
    assert!(
        expected.contains(&types.as_slice()),
        "one B2B order paid: {types:?}"
    );
    // notify takes every customer event: the B2C brand's customers get one
    // e-mail per placed order (the poster and the spec's example); the B2B
    // tenant's get none (it has no customer e-mail and no webhook).
    let outbox = printworks::adapters::local::outbox::OutboxFolder::open(
        printworks_local::platform::outbox_dir(dir.path()),
        std::sync::Arc::new(printworks::clock::SystemClock),
    )
    .unwrap();
    let mut tries = 0;
    while (app.bus.depth("notify").await.unwrap() > 0 || outbox.emails().unwrap().len() < 2)
        && tries < 100
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tries += 1;
    }
    assert_eq!(app.bus.depth("notify").await.unwrap(), 0);
    assert_eq!(app.bus.depth("notify-dlq").await.unwrap(), 0);
    let emails: Vec<String> = outbox
        .emails()
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(emails.len(), 2);
    let french = emails
        .iter()
        .filter(|e| e.contains("Content-Language: fr") && e.contains("jeanne@example.fr"))
        .count();
    assert_eq!(french, 1, "the poster order's confirmation, in French");

    // Restart: everything is still there, and no keys are printed again.
    let ex_id = ex_order["id"].as_str().unwrap().to_string();
    app.stop().await.unwrap();
    let app = spawn_app(dir.path()).await;
    assert!(app.seeded.is_empty());
    let base = app.base_url();
    let (status, read) = get(&client, &format!("{base}/v1/orders/{id}"), &brand).await;
    assert_eq!((status.as_u16(), &read), (200, &order));
    let (status, _) = get(&client, &format!("{base}/v1/orders/{ex_id}"), &brand).await;
    assert_eq!(status, 200);
    let (status, read) = get(
        &client,
        &format!("{base}/v1/orders/{}", b2b_order["id"].as_str().unwrap()),
        &b2b,
    )
    .await;
    assert_eq!(
        (status.as_u16(), read["state"].as_str()),
        (200, Some("cancelled"))
    );
    // and the idempotency record too
    let res = client
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&brand)
        .header("Idempotency-Key", "key-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    app.stop().await.unwrap();
}
