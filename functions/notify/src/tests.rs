//! The notifier on the real SQLite ledger, the outbox folder, an HTTP
//! receiver that verifies tenant webhook signatures, and a real SMTP
//! server (aiosmtpd from the test virtualenv).

use super::*;
use crate::templates::Templates;
use aws_lambda_events::event::sqs::SqsEvent;
use printworks::adapters::local::outbox::OutboxFolder;
use printworks::clock::ManualClock;
use printworks::domain::events::EventEnvelope;
use printworks::domain::events::EventType;
use printworks::domain::notify::Channel;
use printworks::domain::notify::{DailyCaps, TenantWebhook, cap_day, mint_webhook_secret};
use printworks::domain::order::Order;
use printworks::domain::tenant::Tenant;
use printworks::domain::tenant::{PaymentSetup, TenantKind};
use printworks::fetch::{FetchPolicy, UrlFetcher};
use printworks::ports::OrderStore as _;
use printworks::ports::{
    Clock, EmailMessage, Mailer, NotificationStatus, NotificationStore as _, SendError,
    WebhookSender,
};
use printworks::testing::{LocalEnv, b2b_tenant};
use printworks::webhook_out::HttpWebhooks;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

fn start_time() -> OffsetDateTime {
    time::macros::datetime!(2026-11-29 23:40:00 UTC)
}

/// Webhooks to loopback, as the tests' receivers listen there.
fn loopback_webhooks() -> Arc<dyn WebhookSender> {
    let policy = FetchPolicy {
        allow_http: true,
        allow_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        total_timeout: Duration::from_secs(5),
        ..FetchPolicy::default()
    };
    Arc::new(HttpWebhooks::new(UrlFetcher::new(policy).unwrap()))
}

/// The shared local environment with the outbox folder and the notifier
/// on them.
struct Env {
    local: LocalEnv,
    outbox: OutboxFolder,
    notifier: Arc<Notifier>,
}

impl std::ops::Deref for Env {
    type Target = LocalEnv;
    fn deref(&self) -> &LocalEnv {
        &self.local
    }
}

struct Setup {
    start: OffsetDateTime,
    tenant: Tenant,
    caps: DailyCaps,
    mail: Option<Arc<dyn Mailer>>,
    webhooks: Arc<dyn WebhookSender>,
}

fn b2c_tenant() -> Tenant {
    let mut tenant = b2b_tenant();
    tenant.kind = TenantKind::B2c;
    tenant.brand = "demo-posters".into();
    tenant.payment = PaymentSetup::Provider {
        provider: "stripe".into(),
        merchant_account: None,
    };
    tenant
}

impl Setup {
    fn new(tenant: Tenant) -> Setup {
        Setup {
            start: start_time(),
            tenant,
            caps: DailyCaps::default(),
            mail: None,
            webhooks: loopback_webhooks(),
        }
    }

    async fn start(self) -> Env {
        let local = LocalEnv::starting_at(self.start).await;
        local.seed_tenant(&self.tenant).await;
        let outbox = OutboxFolder::open(local.path().join("outbox"), local.clock.clone()).unwrap();
        let notifier = Notifier {
            orders: local.store.clone(),
            tenants: local.store.clone(),
            ledger: local.store.clone(),
            channels: Channels {
                mail: self.mail.unwrap_or_else(|| Arc::new(outbox.clone())),
                sms: Arc::new(outbox.clone()),
                webhooks: self.webhooks,
            },
            templates: Arc::new(Templates::builtin().unwrap().strict()),
            caps: self.caps,
            clock: local.clock.clone(),
            lease: Duration::from_secs(120),
            backoff: Duration::from_secs(30),
        };
        Env {
            local,
            outbox,
            notifier: Arc::new(notifier),
        }
    }
}

impl Env {
    /// A placed order of the tenant (its customer with a phone), and an
    /// event of `event_type` about it.
    async fn order(&self, event_type: EventType) -> (Order, EventEnvelope) {
        let mut new = self.paid_order(&[("poster-30x40", 1)], "DE");
        new.order.customer.phone = Some("+4915112345678".into());
        let order = self.place(new).await;
        let data = match event_type {
            EventType::OrderShipped => serde_json::json!({
                "plant": "muc", "packing_ref": "MUC-1",
                "shipments": [{"carrier": "DHL", "tracking": "00340434161094042557"}],
            }),
            _ => serde_json::json!({}),
        };
        let event =
            EventEnvelope::new(event_type, &order.id, &order.tenant, self.clock.now(), data);
        (order, event)
    }

    /// Changes the stored order of `event` as a later writer would; returns it.
    async fn change_order(&self, event: &EventEnvelope, change: impl FnOnce(&mut Order)) -> Order {
        let stored = self
            .store
            .get(&event.tenant, &event.order_id)
            .await
            .unwrap()
            .unwrap();
        let mut next = stored.successor(self.clock.now());
        change(&mut next);
        self.store.transition(&next, &stored, vec![]).await.unwrap();
        next
    }

    fn emails(&self) -> Vec<String> {
        self.outbox
            .emails()
            .unwrap()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    async fn sent_today(&self, channel: Channel) -> u32 {
        self.store
            .sent_on(&b2b_tenant().id, channel, cap_day(self.clock.now()))
            .await
            .unwrap()
    }
}

fn deliveries(outcome: &Outcome) -> Vec<(Channel, Delivery)> {
    match outcome {
        Outcome::Handled(d) => d.clone(),
        Outcome::Skipped(why) => panic!("skipped: {why}"),
    }
}

#[tokio::test]
async fn an_event_delivered_again_or_concurrently_is_sent_once_per_channel() {
    let env = Setup::new(b2c_tenant()).start().await;
    let (order, event) = env.order(EventType::OrderShipped).await;
    // Eight deliveries of the same event at once, then one more.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (notifier, event) = (env.notifier.clone(), event.clone());
        tasks.push(tokio::spawn(async move { notifier.handle(&event).await }));
    }
    // A delivery that finds a message claimed by another fails (its queue
    // message comes back later); nothing else may go wrong.
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            assert!(
                format!("{:#}", e.0).contains("another sender holds"),
                "{:#}",
                e.0
            );
        }
    }
    let again = deliveries(&env.notifier.handle(&event).await.unwrap());
    assert_eq!(
        again,
        [
            (Channel::Email, Delivery::AlreadySent),
            (Channel::Sms, Delivery::AlreadySent)
        ]
    );
    let emails = env.emails();
    assert_eq!(emails.len(), 1);
    assert!(emails[0].contains("Message-ID: <ntf_"));
    assert!(emails[0].contains("Content-Language: de"));
    assert!(emails[0].contains("multipart/alternative"));
    assert!(emails[0].contains("erika@example.com"));
    assert_eq!(env.outbox.texts().unwrap().len(), 1);
    let sms: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.outbox.texts().unwrap()[0]).unwrap()).unwrap();
    assert_eq!(sms["to"], "+4915112345678");
    assert_eq!(env.sent_today(Channel::Email).await, 1);
    assert_eq!(env.sent_today(Channel::Sms).await, 1);
    let records = env.store.notifications_of(&order.id).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| matches!(r.status, NotificationStatus::Sent { .. }))
    );
}

#[tokio::test]
async fn over_the_cap_a_message_waits_for_the_next_day_and_is_then_sent() {
    let mut setup = Setup::new(b2c_tenant());
    setup.caps = DailyCaps::parse(r#"{"tenants": {"acme-prints": {"email": 2}}}"#).unwrap();
    let env = setup.start().await;
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(env.order(EventType::OrderPlaced).await.1);
    }
    let mut outcomes = Vec::new();
    for event in &events {
        outcomes.push(
            deliveries(&env.notifier.handle(event).await.unwrap())[0]
                .1
                .clone(),
        );
    }
    let midnight = time::macros::datetime!(2026-11-30 00:00 UTC);
    assert_eq!(
        outcomes,
        [
            Delivery::Sent,
            Delivery::Sent,
            Delivery::Deferred(midnight),
            Delivery::Deferred(midnight),
            Delivery::Deferred(midnight)
        ]
    );
    assert_eq!(env.emails().len(), 2);
    assert_eq!(env.sent_today(Channel::Email).await, 2);
    // A redelivery before the day is over changes nothing; nor does a sweep.
    assert_eq!(
        deliveries(&env.notifier.handle(&events[3]).await.unwrap())[0].1,
        Delivery::Deferred(midnight)
    );
    assert!(env.notifier.sweep(100).await.unwrap().is_empty());
    assert_eq!(env.emails().len(), 2);

    // The next day: the sweep sends what waited, under the new day's cap.
    env.clock.advance(Duration::from_secs(25 * 60));
    assert_eq!(
        cap_day(env.clock.now()),
        time::macros::date!(2026 - 11 - 30)
    );
    let swept = env.notifier.sweep(100).await.unwrap();
    let sent = swept.iter().filter(|(_, d)| *d == Delivery::Sent).count();
    assert_eq!(sent, 2, "two fit under the new day's cap: {swept:?}");
    let deferred = swept
        .iter()
        .filter(|(_, d)| matches!(d, Delivery::Deferred(_)))
        .count();
    assert_eq!(deferred, 1, "the fifth waits one more day: {swept:?}");
    assert_eq!(env.emails().len(), 4);
    assert_eq!(env.sent_today(Channel::Email).await, 2);
    // The day after, the last one; nothing is ever dropped or sent twice.
    env.clock.advance(Duration::from_secs(24 * 3600));
    let swept = env.notifier.sweep(100).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].1, Delivery::Sent);
    assert_eq!(env.emails().len(), 5);
    for event in &events {
        assert_eq!(
            deliveries(&env.notifier.handle(event).await.unwrap())[0].1,
            Delivery::AlreadySent
        );
    }
    assert!(env.notifier.sweep(100).await.unwrap().is_empty());
}

/// A mailer that is down for its first `failures` sends.
struct Flaky {
    failures: AtomicUsize,
    inner: OutboxFolder,
}

#[async_trait::async_trait]
impl Mailer for Flaky {
    async fn send(&self, mail: &EmailMessage) -> Result<String, SendError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SendError::Unavailable(anyhow::anyhow!(
                "connection refused"
            )));
        }
        self.inner.send(mail).await
    }
}

#[tokio::test]
async fn a_failed_send_is_released_uncounted_and_sent_on_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start_time()));
    let mut setup = Setup::new(b2c_tenant());
    setup.mail = Some(Arc::new(Flaky {
        failures: AtomicUsize::new(2),
        inner: OutboxFolder::open(dir.path(), clock).unwrap(),
    }));
    let env = setup.start().await;
    let (order, event) = env.order(EventType::OrderPlaced).await;
    for _ in 0..2 {
        let err = env.notifier.handle(&event).await.unwrap_err();
        assert!(
            format!("{:#}", err.0).contains("connection refused"),
            "{:#}",
            err.0
        );
        assert_eq!(env.sent_today(Channel::Email).await, 0);
        let record = &env.store.notifications_of(&order.id).await.unwrap()[0];
        assert_eq!(record.status, NotificationStatus::Retry);
    }
    let outcome = deliveries(&env.notifier.handle(&event).await.unwrap());
    assert_eq!(outcome, [(Channel::Email, Delivery::Sent)]);
    assert_eq!(env.sent_today(Channel::Email).await, 1);
    let record = &env.store.notifications_of(&order.id).await.unwrap()[0];
    assert_eq!(record.attempts, 3);
    let outbox = OutboxFolder::open(dir.path(), Arc::new(ManualClock::new(start_time()))).unwrap();
    assert_eq!(outbox.emails().unwrap().len(), 1);
    assert_eq!(outbox.sent_log().unwrap().len(), 1, "sent once");
}

#[tokio::test]
async fn a_bad_address_is_refused_for_good_and_frees_its_count() {
    let env = Setup::new(b2c_tenant()).start().await;
    let (_, event) = env.order(EventType::OrderPlaced).await;
    // An address the domain accepted but lettre cannot: change it in the store.
    let order = env
        .change_order(&event, |o| o.customer.email = "not an address".into())
        .await;
    let outcome = deliveries(&env.notifier.handle(&event).await.unwrap());
    assert!(
        matches!(&outcome[0], (Channel::Email, Delivery::Failed(_))),
        "{outcome:?}"
    );
    assert_eq!(env.sent_today(Channel::Email).await, 0);
    assert!(env.emails().is_empty());
    let again = deliveries(&env.notifier.handle(&event).await.unwrap());
    assert!(matches!(&again[0], (Channel::Email, Delivery::Failed(_))));
    assert_eq!(
        env.store.notifications_of(&order.id).await.unwrap().len(),
        1
    );
}

/// What a tenant's endpoint received: (signature header, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTP endpoint on loopback that verifies the signature as a tenant
/// would (Stripe's scheme, `printworks::webhooks::stripe::verify_signature`)
/// and answers 401 on a bad one; it answers 503 to its first `failures`
/// valid deliveries.
async fn receiver(secret: String, failures: usize) -> (SocketAddr, Received) {
    use axum::http::{HeaderMap, StatusCode};
    let received: Received = Arc::default();
    let failures = Arc::new(AtomicUsize::new(failures));
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hooks/printworks",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (log, failures, secret) = (log.clone(), failures.clone(), secret.clone());
            async move {
                let signature = headers
                    .get("printworks-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let verified = printworks::webhooks::stripe::verify_signature(
                    &signature,
                    body.as_bytes(),
                    &[secret.as_bytes()],
                    OffsetDateTime::now_utc(),
                );
                if verified.is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                if failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                log.lock().unwrap().push((signature, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

fn with_webhook(url: String, secret: &str) -> Tenant {
    let mut tenant = b2b_tenant();
    tenant.notifications.webhook = Some(TenantWebhook {
        url,
        secret: secret.to_string(),
    });
    tenant
}

#[tokio::test]
async fn tenant_webhooks_are_signed_retried_and_sent_once() {
    let secret = mint_webhook_secret();
    let (addr, received) = receiver(secret.clone(), 2).await;
    let url = format!("http://{addr}/hooks/printworks");
    // The webhook clock is the real one: the receiver checks the timestamp.
    let mut setup = Setup::new(with_webhook(url, &secret));
    setup.tenant.notifications.email = Some(false);
    setup.start = OffsetDateTime::now_utc();
    let env = setup.start().await;
    let (order, event) = env.order(EventType::OrderDispatched).await;
    for _ in 0..2 {
        let err = env.notifier.handle(&event).await.unwrap_err();
        assert!(format!("{:#}", err.0).contains("HTTP 503"), "{:#}", err.0);
    }
    assert_eq!(
        deliveries(&env.notifier.handle(&event).await.unwrap()),
        [(Channel::Webhook, Delivery::Sent)]
    );
    assert_eq!(
        deliveries(&env.notifier.handle(&event).await.unwrap()),
        [(Channel::Webhook, Delivery::AlreadySent)]
    );
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(body["id"], event.id.as_str());
    assert_eq!(body["type"], "OrderDispatched");
    assert_eq!(body["order_id"], order.id.as_str());
    assert!(got[0].0.starts_with("t=") && got[0].0.contains(",v1="));
    // A receiver with another secret refuses it (the check can fail).
    let forged = printworks::webhooks::stripe::verify_signature(
        &got[0].0,
        got[0].1.as_bytes(),
        &[b"whsec_other"],
        OffsetDateTime::now_utc(),
    );
    assert!(forged.is_err());
    assert!(env.emails().is_empty(), "B2B customers are not mailed");
}

#[tokio::test]
async fn webhooks_to_private_or_loopback_addresses_are_refused() {
    for url in [
        "https://127.0.0.1/hooks",
        "https://localhost:8443/hooks",
        "https://10.1.2.3/hooks",
        "https://192.168.0.10/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "http://erp.example.com/hooks",
    ] {
        let mut setup = Setup::new(with_webhook(url.to_string(), "whsec_x"));
        // The production policy: https only, public addresses only.
        setup.webhooks = Arc::new(HttpWebhooks::new(
            UrlFetcher::new(FetchPolicy::default()).unwrap(),
        ));
        let env = setup.start().await;
        let (order, event) = env.order(EventType::OrderShipped).await;
        let outcome = deliveries(&env.notifier.handle(&event).await.unwrap());
        assert!(
            matches!(&outcome[..], [(Channel::Webhook, Delivery::Failed(_))]),
            "{url}: {outcome:?}"
        );
        let record = &env.store.notifications_of(&order.id).await.unwrap()[0];
        assert!(
            matches!(record.status, NotificationStatus::Failed { .. }),
            "{url}"
        );
        assert_eq!(env.sent_today(Channel::Webhook).await, 0);
    }
}

#[tokio::test]
async fn a_lambda_batch_fails_only_what_must_be_retried() {
    let env = Setup::new(b2c_tenant()).start().await;
    let (_, good) = env.order(EventType::OrderPlaced).await;
    let mut event = SqsEvent::default();
    for (id, body) in [
        ("m1", serde_json::to_string(&good).unwrap()),
        ("m2", "{not json".to_string()),
    ] {
        let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
        m.message_id = Some(id.into());
        m.receipt_handle = Some(format!("r-{id}"));
        m.body = Some(body);
        event.records.push(m);
    }
    let response = env.notifier.handle_sqs(event, None).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m2"]);
    assert_eq!(env.emails().len(), 1);
}

#[test]
fn back_off_doubles_up_to_an_hour() {
    let base = Duration::from_secs(30);
    let secs: Vec<u64> = (1..=10).map(|n| backoff(base, n).as_secs()).collect();
    assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    assert_eq!(backoff(base, 0).as_secs(), 30);
    assert_eq!(backoff(base, u32::MAX).as_secs(), 3600);
}

// ------------------------------------------------------------------ SMTP --

/// The test virtualenv's Python (`scripts/test` sets `PRINTWORKS_PYTHON`),
/// or `None`: the SMTP test then says it skipped, unless the test script
/// requires it.
fn python() -> Option<String> {
    match std::env::var("PRINTWORKS_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("PRINTWORKS_REQUIRE_EMULATOR").is_err(),
                "PRINTWORKS_PYTHON must be set when the test script runs"
            );
            None
        }
    }
}

/// aiosmtpd on a free loopback port, writing what it receives (parsed by
/// Python's `email` package) as JSON into `dir`.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp_sink(python: &str, dir: &std::path::Path) -> SmtpSink {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/smtp_sink.py");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .arg(dir)
        .spawn()
        .expect("starting the SMTP sink");
    // Dropped (killed and waited for) on every path from here.
    let sink = SmtpSink { child, port };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return sink;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the SMTP sink did not start on port {}", sink.port);
}

#[tokio::test]
async fn smtp_a_real_server_receives_the_message_with_its_headers_parts_and_language() {
    let Some(python) = python() else {
        eprintln!("skipped: PRINTWORKS_PYTHON is not set (scripts/test sets it)");
        return;
    };
    let spool = tempfile::tempdir().unwrap();
    let sink = smtp_sink(&python, spool.path());
    let config = printworks::adapters::smtp::SmtpConfig::parse_url(&format!(
        "smtp://127.0.0.1:{}?tls=none",
        sink.port
    ))
    .unwrap();
    let clock = Arc::new(ManualClock::new(start_time()));
    let mailer =
        printworks::adapters::smtp::SmtpMailer::new(&config, clock as Arc<dyn Clock>).unwrap();
    let mut setup = Setup::new(b2c_tenant());
    setup.mail = Some(Arc::new(mailer));
    let env = setup.start().await;
    let (_, event) = env.order(EventType::OrderShipped).await;
    // In French: the order's language, not the tenant's (German).
    let next = env
        .change_order(&event, |o| {
            o.locale = printworks::domain::locale::Locale::Fr;
            o.customer.name = "Zoé Lefèvre".into();
        })
        .await;
    let outcome = deliveries(&env.notifier.handle(&event).await.unwrap());
    assert_eq!(outcome[0], (Channel::Email, Delivery::Sent));
    let again = deliveries(&env.notifier.handle(&event).await.unwrap());
    assert_eq!(again[0], (Channel::Email, Delivery::AlreadySent));

    let files: Vec<_> = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(files.len(), 1, "exactly one message reached the server");
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let brand = env.notifier.templates.brands().get("demo-posters").clone();
    assert_eq!(got["mail_from"], brand.from_address);
    assert_eq!(got["rcpt_tos"], serde_json::json!(["erika@example.com"]));
    let headers = &got["headers"];
    assert_eq!(headers["Content-Language"], "fr");
    assert!(
        headers["From"]
            .as_str()
            .unwrap()
            .contains(&brand.from_address)
    );
    assert!(
        headers["To"].as_str().unwrap().contains("Zoé Lefèvre"),
        "{headers}"
    );
    assert!(
        headers["Reply-To"]
            .as_str()
            .unwrap()
            .contains(&brand.support_email)
    );
    assert!(headers["Message-ID"].as_str().unwrap().starts_with("<ntf_"));
    assert!(
        headers["Content-Type"]
            .as_str()
            .unwrap()
            .starts_with("multipart/alternative")
    );
    let parts = got["parts"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["text/plain", "text/html"]);
    let text = parts[0]["content"].as_str().unwrap();
    let html = parts[1]["content"].as_str().unwrap();
    assert!(text.contains("Zoé Lefèvre") && html.contains("Zoé Lefèvre"));
    assert!(
        text.contains("00340434161094042557"),
        "the tracking number: {text}"
    );
    assert!(html.contains("lang=\"fr\""));
    // The French catalog's subject, not another language's.
    let expected = env
        .notifier
        .templates
        .email(
            printworks::domain::notify::Template::OrderShipped,
            &context::MessageContext {
                brand: &brand,
                language: printworks::domain::locale::Locale::Fr,
                fallback: printworks::domain::locale::Locale::De,
                order: &next,
                event: &event,
            },
        )
        .unwrap();
    assert_eq!(headers["Subject"], expected.subject);
    let german = env
        .notifier
        .templates
        .email(
            printworks::domain::notify::Template::OrderShipped,
            &context::MessageContext {
                brand: &brand,
                language: printworks::domain::locale::Locale::De,
                fallback: printworks::domain::locale::Locale::De,
                order: &next,
                event: &event,
            },
        )
        .unwrap();
    assert_ne!(headers["Subject"], german.subject);
    drop(sink);
}

#[tokio::test]
async fn smtp_a_refused_recipient_is_failed_for_good_and_a_down_server_retried() {
    let Some(python) = python() else {
        eprintln!("skipped: PRINTWORKS_PYTHON is not set (scripts/test sets it)");
        return;
    };
    let spool = tempfile::tempdir().unwrap();
    let sink = smtp_sink(&python, spool.path());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start_time()));
    let url = |port: u16| {
        printworks::adapters::smtp::SmtpConfig::parse_url(&format!(
            "smtp://127.0.0.1:{port}?tls=none"
        ))
        .unwrap()
    };
    // The sink answers 550 to recipients at refused.example.
    let mut setup = Setup::new(b2c_tenant());
    setup.mail = Some(Arc::new(
        printworks::adapters::smtp::SmtpMailer::new(&url(sink.port), clock.clone()).unwrap(),
    ));
    let env = setup.start().await;
    let (_, event) = env.order(EventType::OrderPlaced).await;
    env.change_order(&event, |o| {
        o.customer.email = "nobody@refused.example".into()
    })
    .await;
    let outcome = deliveries(&env.notifier.handle(&event).await.unwrap());
    assert!(
        matches!(&outcome[0], (Channel::Email, Delivery::Failed(r)) if r.contains("550") && !r.contains("refused.example")),
        "{outcome:?}"
    );

    // Nobody listening: unavailable, released, retried by the queue.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut setup = Setup::new(b2c_tenant());
    setup.mail = Some(Arc::new(
        printworks::adapters::smtp::SmtpMailer::new(&url(port), clock).unwrap(),
    ));
    let env = setup.start().await;
    let (order, event) = env.order(EventType::OrderPlaced).await;
    assert!(env.notifier.handle(&event).await.is_err());
    let record = &env.store.notifications_of(&order.id).await.unwrap()[0];
    assert_eq!(record.status, NotificationStatus::Retry);
    drop(sink);
}

#[test]
fn caps_config_names_every_channel() {
    let caps = DailyCaps::default();
    let all: BTreeMap<_, _> = Channel::ALL
        .iter()
        .map(|c| (*c, caps.limit(&b2b_tenant().id, *c)))
        .collect();
    assert!(all.values().all(|n| *n > 0));
}

/// A tenant's webhook hears that an order goes on again or was cancelled
/// by the shop, but not the operator's own note nor the plant chosen (the
/// tenant API keeps those to the shop as well).
#[test]
fn webhooks_of_operator_actions_leave_the_shops_notes_out() {
    let now = start_time();
    let order = printworks::testing::paid_order(&[("poster-30x40", 1)], "DE", now).order;
    let resumed = EventEnvelope::new(
        EventType::OrderResumed,
        &order.id,
        &order.tenant,
        now,
        serde_json::json!({"action": "release", "stage": "dispatch", "attempt": 2,
                           "plant": "btf", "reason": "NOTE: muc is down"}),
    );
    let cancelled = EventEnvelope::new(
        EventType::OrderCancelled,
        &order.id,
        &order.tenant,
        now,
        serde_json::json!({"by": "operator", "reason": "NOTE: fraud", "attempt": 1}),
    );
    for event in [&resumed, &cancelled] {
        let body: serde_json::Value =
            serde_json::from_str(&crate::notifier::webhook_body(event, &order).unwrap()).unwrap();
        assert_eq!(body["type"], event.event_type.as_str());
        assert_eq!(body["data"]["attempt"], event.data["attempt"], "{body}");
        assert!(!body.to_string().contains("NOTE"), "{body}");
        assert!(body["data"].get("plant").is_none(), "{body}");
    }
    // A customer's own cancellation keeps its reason.
    let by_customer = EventEnvelope::new(
        EventType::OrderCancelled,
        &order.id,
        &order.tenant,
        now,
        serde_json::json!({"reason": "wrong size"}),
    );
    let body = crate::notifier::webhook_body(&by_customer, &order).unwrap();
    assert!(body.contains("wrong size"), "{body}");
}
