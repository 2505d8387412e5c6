//! `printworks up` renders paid orders: a B2B order placed over HTTP with an
//! uploaded photo ends `rendered` with its files under the data directory;
//! sources that cannot be printed put the order on hold with a reason.

use printworks::adapters::local::blobs::FsBlobStore;
use printworks::clock::SystemClock;
use printworks::domain::events::{EventEnvelope, EventType};
use printworks::domain::order::OrderId;
use printworks::domain::tenant::TenantId;
use printworks::ports::OrderStore;
use printworks::render::probe::probe;
use printworks_tests::{OrderForm, photo, poll_order, seeded_key, spawn_app, upload};
use reqwest::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

async fn place(client: &Client, base: &str, key: &str, sku: &str, image: Value) -> String {
    let order = printworks_tests::place(client, base, key, &OrderForm::one(sku, image)).await;
    assert_eq!(order["state"], "paid", "a B2B order is paid on placement");
    order["id"].as_str().unwrap().to_string()
}

/// Polls the order until it leaves `paid`.
async fn settled(client: &Client, base: &str, key: &str, id: &str) -> Value {
    poll_order(client, base, key, id, Duration::from_secs(30), |s| {
        s != "paid"
    })
    .await
}

#[tokio::test]
async fn printworks_up_renders_a_b2b_order_into_files_and_holds_unprintable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let base = app.base_url();
    let key = seeded_key(&app, "demo-b2b");
    let client = Client::new();

    // A landscape photo on a portrait poster: turned, cropped, rendered.
    let upload_id = upload(&client, &base, &key, photo(2400, 1600), true).await;
    let id = place(
        &client,
        &base,
        &key,
        "poster-20x30",
        json!({"upload_id": upload_id}),
    )
    .await;
    let order = settled(&client, &base, &key, &id).await;
    // Rendered, and maybe dispatched to a plant already.
    let state = order["state"].as_str().unwrap();
    assert!(
        [
            "rendered",
            "dispatched",
            "in_production",
            "printed",
            "packed",
            "shipped"
        ]
        .contains(&state),
        "{order}"
    );
    let render = &order["items"][0]["renders"][0];
    assert_eq!(
        (
            render["print"]["width"].as_u64(),
            render["print"]["height"].as_u64()
        ),
        (Some(2433), Some(3614))
    );
    assert_eq!(render["preview"]["height"], 800);
    for file in ["print", "preview"] {
        let key = render[file]["key"].as_str().unwrap();
        assert!(key.starts_with(&format!("demo-b2b/{id}/1-1/")), "{key}");
        let bytes = std::fs::read(dir.path().join("prints").join(key)).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            render[file]["sha256"].as_str().unwrap()
        );
        let head = probe(&bytes, u64::MAX).unwrap();
        assert_eq!(
            u64::from(head.width),
            render[file]["width"].as_u64().unwrap()
        );
    }
    // OrderRendered went out once.
    let tenant = TenantId::parse("demo-b2b").unwrap();
    let order_id = OrderId::parse(&id).unwrap();
    let rendered_events = || async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let events = app.bus.events_of(&tenant, &order_id).await.unwrap();
        events
            .iter()
            .filter(|e| e.event_type == EventType::OrderRendered)
            .count()
    };
    assert_eq!(rendered_events().await, 1);

    // A redelivered OrderPaid renders and emits nothing.
    let blobs = |dir_name: &str| {
        FsBlobStore::open(dir.path().join(dir_name), &base, Arc::new(SystemClock)).unwrap()
    };
    let renderer = render::Renderer {
        catalog: Arc::new(printworks::domain::catalog::Catalog::builtin().clone()),
        orders: Arc::new(app.store.clone()),
        uploads: Arc::new(blobs("blobs")),
        prints: Arc::new(blobs("prints")),
        urls: Arc::new(printworks::fetch::UrlFetcher::new(Default::default()).unwrap()),
        clock: Arc::new(SystemClock),
        limits: Default::default(),
        max_attempts: 4,
    };
    let paid = EventEnvelope::new(
        EventType::OrderPaid,
        &order_id,
        &tenant,
        time::OffsetDateTime::now_utc(),
        json!({}),
    );
    let outcome = renderer.handle(&paid, 2).await.unwrap();
    assert!(
        matches!(outcome, render::Outcome::Skipped(_)),
        "{outcome:?}"
    );
    assert_eq!(rendered_events().await, 1);
    let stored = app.store.get(&tenant, &order_id).await.unwrap().unwrap();
    assert_eq!(stored.items[0].renders.len(), 1);

    // Unprintable sources: on hold, with a reason the customer can read.
    let never_uploaded = upload(&client, &base, &key, photo(10, 10), false).await;
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>"#.to_vec();
    let svg_upload = upload(&client, &base, &key, svg, true).await;
    let tiny = upload(&client, &base, &key, photo(300, 200), true).await;
    let cases = [
        (json!({"upload_id": never_uploaded}), "never completed"),
        (json!({"upload_id": svg_upload}), "SVG"),
        (json!({"upload_id": tiny}), "resolution is too low"),
        (
            json!({"url": "https://169.254.169.254/latest/meta-data/photo.jpg"}),
            "cannot be used",
        ),
    ];
    for (image, reason) in cases {
        let id = place(&client, &base, &key, "poster-60x90", image.clone()).await;
        let order = settled(&client, &base, &key, &id).await;
        assert_eq!(order["state"], "on_hold", "{image}: {order}");
        let held = order["hold"]["reason"].as_str().unwrap();
        assert!(held.contains(reason), "{image}: {held}");
        assert_eq!(order["hold"]["from"], "paid");
    }
    assert_eq!(
        app.bus.depth("render-dlq").await.unwrap(),
        0,
        "nothing was retried to death"
    );
    app.stop().await.unwrap();
}
