//! `printworks up` tells people what happens: a B2B tenant that opted in to
//! customer e-mail gets `.eml` files in `var/outbox` for its customer, and
//! its own systems get every event by signed webhook (a receiver here that
//! verifies the signature, and is down at first); a tenant whose endpoint
//! never answers has its webhooks retried with back-off and dead-lettered.

use axum::http::{HeaderMap, StatusCode};
use printworks::adapters::local::outbox::OutboxFolder;
use printworks::clock::SystemClock;
use printworks::domain::locale::{CountryCode, Locale};
use printworks::domain::money::Currency;
use printworks::domain::notify::{TenantWebhook, mint_webhook_secret};
use printworks::domain::order::OrderId;
use printworks::domain::tenant::{PaymentSetup, Tenant, TenantId, TenantKind};
use printworks::ports::NotificationStatus;
use printworks_local::platform::{self, NotifyOptions, Options};
use printworks_local::seed;
use printworks_tests::{OrderForm, photo, upload};
use reqwest::Client;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (type, event id) of every verified delivery.
type Deliveries = Arc<Mutex<Vec<(String, String)>>>;

/// A tenant's endpoint: verifies the signature, answers 503 to the first
/// `down_for` valid deliveries (or to all, with `usize::MAX`).
async fn endpoint(secret: String, down_for: usize) -> (SocketAddr, Deliveries, Arc<AtomicUsize>) {
    let got: Deliveries = Arc::default();
    let attempts = Arc::new(AtomicUsize::new(0));
    let (log, tries) = (got.clone(), attempts.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (log, tries, secret) = (log.clone(), tries.clone(), secret.clone());
            async move {
                let signature = headers
                    .get("printworks-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if printworks::webhooks::stripe::verify_signature(
                    signature,
                    body.as_bytes(),
                    &[secret.as_bytes()],
                    time::OffsetDateTime::now_utc(),
                )
                .is_err()
                {
                    return StatusCode::UNAUTHORIZED;
                }
                if tries.fetch_add(1, Ordering::SeqCst) < down_for {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let event: Value = serde_json::from_str(&body).unwrap_or_default();
                log.lock().unwrap().push((
                    event["type"].as_str().unwrap_or_default().to_string(),
                    event["id"].as_str().unwrap_or_default().to_string(),
                ));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got, attempts)
}

fn b2b(id: &str, webhook: String, secret: &str) -> Tenant {
    let mut tenant = Tenant {
        id: TenantId::parse(id).unwrap(),
        name: format!("{id} GmbH"),
        kind: TenantKind::B2b,
        brand: "acme".into(),
        countries: vec![CountryCode::DE, CountryCode::AT],
        currencies: vec![Currency::Eur],
        default_locale: Locale::De,
        payment: PaymentSetup::Invoice,
        notifications: Default::default(),
    };
    tenant.notifications.email = Some(true);
    tenant.notifications.webhook = Some(TenantWebhook {
        url: webhook,
        secret: secret.to_string(),
    });
    tenant
}

/// Places a poster with the uploaded photo for Jan de Vries in `locale`;
/// the order's id.
async fn place(client: &Client, base: &str, key: &str, upload_id: &str, locale: &str) -> String {
    let form = OrderForm::one("poster-20x30", json!({"upload_id": upload_id}))
        .locale(locale)
        .customer("Jan de Vries", "jan@kunde.example");
    printworks_tests::place(client, base, key, &form).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn wait_for(what: &str, done: impl AsyncFnMut() -> bool) {
    wait_up_to(what, Duration::from_secs(60), done).await
}

async fn wait_up_to(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen in {limit:?}");
}

#[tokio::test]
async fn printworks_up_mails_customers_and_signs_tenant_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let secret = mint_webhook_secret();
    let (addr, deliveries, _) = endpoint(secret.clone(), 2).await;
    let dead_secret = mint_webhook_secret();
    let (dead_addr, dead_deliveries, dead_attempts) =
        endpoint(dead_secret.clone(), usize::MAX).await;
    let options = Options {
        port: 0,
        notify: NotifyOptions {
            allow_loopback_webhooks: true,
            backoff: Duration::from_millis(100),
            sweep_every: Duration::from_millis(200),
            ..NotifyOptions::default()
        },
        ..Options::new(dir.path())
    };
    let app = platform::start(options).await.unwrap();
    let base = app.base_url();
    let acme = seed::add_tenant(
        &app.store,
        "local",
        b2b("acme-b2b", format!("http://{addr}/hook"), &secret),
    )
    .await
    .unwrap();
    let dead = seed::add_tenant(
        &app.store,
        "local",
        b2b(
            "dead-hook",
            format!("http://{dead_addr}/hook"),
            &dead_secret,
        ),
    )
    .await
    .unwrap();
    let client = Client::new();
    let upload_id = upload(&client, &base, &acme.api_key, photo(1800, 2400), true).await;
    let id = place(&client, &base, &acme.api_key, &upload_id, "nl").await;
    let dead_upload = upload(&client, &base, &dead.api_key, photo(1800, 2400), true).await;
    let dead_id = place(&client, &base, &dead.api_key, &dead_upload, "de").await;

    // The order ships; every event of the notify queue reaches the tenant
    // once, though its endpoint failed twice at first.
    let tenant = TenantId::parse("acme-b2b").unwrap();
    let order_id = OrderId::parse(&id).unwrap();
    wait_for("the order shipping and its webhooks", async || {
        let shipped = deliveries
            .lock()
            .unwrap()
            .iter()
            .any(|(t, _)| t == "OrderShipped");
        let delivered = deliveries.lock().unwrap().len();
        shipped && delivered >= 4
    })
    .await;
    let got = deliveries.lock().unwrap().clone();
    let types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types.len(), 4, "{types:?}");
    for t in [
        "OrderPlaced",
        "OrderPaid",
        "OrderDispatched",
        "OrderShipped",
    ] {
        assert_eq!(
            types.iter().filter(|x| **x == t).count(),
            1,
            "{t}: {types:?}"
        );
    }
    let timeline = app.bus.events_of(&tenant, &order_id).await.unwrap();
    for (t, event_id) in &got {
        let event = timeline
            .iter()
            .find(|e| e.id == *event_id)
            .expect("a real event");
        assert_eq!(event.event_type.as_str(), t);
    }

    // The customer (the tenant opted in) was mailed of placement and
    // shipment, in Dutch; an invoice order's OrderPaid is not mailed.
    let outbox =
        OutboxFolder::open(platform::outbox_dir(dir.path()), Arc::new(SystemClock)).unwrap();
    let records = app.store.notifications_of(&order_id).await.unwrap();
    let mails: Vec<_> = records
        .iter()
        .filter(|r| r.channel() == printworks::domain::notify::Channel::Email)
        .collect();
    assert_eq!(mails.len(), 2, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| matches!(r.status, NotificationStatus::Sent { .. }))
    );
    for record in &mails {
        let eml = std::fs::read_to_string(outbox.dir().join(format!("{}.eml", record.id))).unwrap();
        assert!(eml.contains("Content-Language: nl"), "{eml}");
        assert!(eml.contains("jan@kunde.example"));
    }

    // The endpoint that never answers: retried with back-off, then
    // dead-lettered; its customer's e-mails went out once all the same.
    // Ten receives each (printworks::topology::NOTIFY), with the message's
    // back-off and the consumer's pause while it keeps failing between them.
    wait_up_to(
        "the dead endpoint's messages dead-lettering",
        Duration::from_secs(240),
        async || {
            app.bus.depth("notify-dlq").await.unwrap() >= 1
                && app.bus.depth("notify").await.unwrap() == 0
        },
    )
    .await;
    assert!(dead_deliveries.lock().unwrap().is_empty());
    assert!(
        dead_attempts.load(Ordering::SeqCst)
            >= printworks::topology::NOTIFY.max_receive_count as usize,
        "retried up to the queue's receive limit before the DLQ"
    );
    // One `.eml` per e-mail sent, whatever the retries and redeliveries.
    let orders = [order_id.clone(), OrderId::parse(&dead_id).unwrap()];
    wait_for("the outbox matching the ledger", async || {
        let mut sent = Vec::new();
        for order in &orders {
            for r in app.store.notifications_of(order).await.unwrap() {
                if r.channel() == printworks::domain::notify::Channel::Email
                    && matches!(r.status, NotificationStatus::Sent { .. })
                {
                    sent.push(outbox.dir().join(format!("{}.eml", r.id)));
                }
            }
        }
        sent.sort();
        sent.len() >= 3 && outbox.emails().unwrap() == sent
    })
    .await;
    app.stop().await.unwrap();
}
