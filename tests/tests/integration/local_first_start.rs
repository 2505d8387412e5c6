//! A newcomer's first start: the banner's example request, run as printed
//! by a shell with curl, places an order of the demo tenant's sample photo
//! that goes all the way to shipped, with no network beyond loopback.

use printworks_local::seed::{self, SAMPLE_UPLOAD_ID};
use printworks_tests::{FINAL_STATES, poll_order, seeded_key, spawn_app};
use reqwest::Client;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn the_banners_example_request_places_an_order_that_ships() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let base = app.base_url();
    let key = seeded_key(&app, "demo-b2b");
    // Every demo tenant has the sample photo, under its own prefix.
    for tenant in ["demo-b2b", "demo-brand"] {
        let path = dir
            .path()
            .join("blobs/uploads")
            .join(tenant)
            .join(SAMPLE_UPLOAD_ID);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&bytes[..3], &[0xff, 0xd8, 0xff], "a JPEG");
    }

    let printed = seed::example_request(&base, &key);
    let (place, follow) = printed
        .split_once("\n\nthen follow it")
        .expect("the banner's first command, then how to follow the order");
    assert!(follow.contains("/v1/orders/ORDER_ID"), "{follow}");
    let place = place.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-c", &place])
            .output()
    })
    .await
    .unwrap()
    .expect("bash runs the printed command");
    assert!(output.status.success(), "{output:?}");
    let order: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    let id = order["id"].as_str().unwrap_or_else(|| panic!("{order}"));
    assert_eq!(
        order["state"], "paid",
        "a B2B order is paid on placement: {order}"
    );

    let order = poll_order(
        &Client::new(),
        &base,
        &key,
        id,
        Duration::from_secs(60),
        |s| FINAL_STATES.contains(&s),
    )
    .await;
    let state = order["state"].as_str().unwrap();
    assert_eq!(state, "shipped", "the example order ships");
    app.stop().await.unwrap();
}
