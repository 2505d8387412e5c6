//! `printworks up` takes the payment providers' webhooks: a B2C order placed
//! over HTTP answers its checkout, `printworks pay`'s signed event pays it,
//! and after a restart (the same secrets, read back from the data
//! directory) a full refund cancels it.

use printworks::domain::order::{Order, OrderId};
use printworks::domain::tenant::TenantId;
use printworks::ports::OrderStore;
use printworks_local::payments::{self, PayEvent};
use printworks_tests::{request_example, seeded_key, spawn_app};
use serde_json::Value;

async fn stored(running: &printworks_local::platform::Running, id: &OrderId) -> Order {
    running
        .store
        .get(&TenantId::parse("demo-brand").unwrap(), id)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_b2c_order_is_paid_by_a_signed_webhook_and_refunded_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let running = spawn_app(dir.path()).await;
    let key = seeded_key(&running, "demo-brand");
    let client = reqwest::Client::new();
    let order: Value = client
        .post(format!("{}/v1/orders", running.base_url()))
        .bearer_auth(&key)
        .header("idempotency-key", "b2c-1")
        .json(&request_example(&printworks_tests::openapi(), "/v1/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["state"], "placed", "{order}");
    assert_eq!(order["checkout"]["provider"], "stripe");
    assert_eq!(
        order["checkout"]["amount"],
        order["totals"]["total"]["amount"]
    );
    let id = OrderId::parse(order["id"].as_str().unwrap()).unwrap();

    // What `printworks pay ID` sends: signed with the data directory's secret.
    let secrets = payments::load_or_create_secrets(dir.path()).unwrap();
    let placed = stored(&running, &id).await;
    let now = time::OffsetDateTime::now_utc();
    let paid = payments::signed_event(&secrets, &placed, "stripe", PayEvent::Succeeded, None, now)
        .unwrap();
    let (status, body) = payments::send(&running.base_url(), &paid).await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"received":true}"#));
    let after: Value = client
        .get(format!("{}/v1/orders/{id}", running.base_url()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(after["state"], "placed", "{after}");
    assert_eq!(after["payment_status"]["status"], "captured");
    assert!(
        after.get("checkout").is_none(),
        "paid: no checkout any more"
    );
    // Sent again: acknowledged, the money record unchanged (render may be
    // moving the order meanwhile, so the ledger is what is compared).
    let ledger = stored(&running, &id).await.payment_status;
    let (status, _) = payments::send(&running.base_url(), &paid).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(stored(&running, &id).await.payment_status, ledger);
    // A webhook signed with another secret is refused.
    let stranger =
        printworks::webhooks::WebhookSecrets::from_json(r#"{"stripe": ["whsec_nope"]}"#).unwrap();
    let forged =
        payments::signed_event(&stranger, &placed, "stripe", PayEvent::Refund, None, now).unwrap();
    let (status, body) = payments::send(&running.base_url(), &forged).await.unwrap();
    assert_eq!(status, 401, "{body}");
    running.stop().await.unwrap();

    // Restarted on the same directory: the same secrets sign the refund.
    let running = spawn_app(dir.path()).await;
    let current = stored(&running, &id).await;
    let refund = payments::signed_event(
        &secrets,
        &current,
        "stripe",
        PayEvent::Refund,
        None,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let (status, body) = payments::send(&running.base_url(), &refund).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let cancelled = stored(&running, &id).await;
    assert_eq!(cancelled.state.as_str(), "cancelled", "{cancelled:?}");
    assert_eq!(
        cancelled.payment_status.unwrap().refunded,
        cancelled.totals.total.amount
    );
    running.stop().await.unwrap();
}
