//! The webhook through its router, on the real SQLite store and bus.

use super::*;
use http_body_util::BodyExt;
use printworks::domain::catalog::Catalog;
use printworks::domain::locale::{CountryCode, Locale};
use printworks::domain::money::Currency;
use printworks::domain::order::{Order, OrderRequest};
use printworks::domain::payment::PaymentStatus;
use printworks::domain::state::OrderState;
use printworks::domain::tenant::{PaymentSetup, Tenant, TenantId, TenantKind};
use printworks::ports::{FixedSecrets, IdempotencyRecord, NewOrder, StoredResponse};
use printworks::testing::LocalEnv;
use printworks::webhooks::{Secret, adyen, stripe};

const STRIPE_SECRET: &str = "whsec_test_printworks";
const ADYEN_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";

/// The shared local environment with the webhook app on it.
struct Env {
    local: LocalEnv,
    router: Router,
    app: Arc<Webhooks>,
}

impl std::ops::Deref for Env {
    type Target = LocalEnv;
    fn deref(&self) -> &LocalEnv {
        &self.local
    }
}

fn tenant(provider: &str) -> Tenant {
    Tenant {
        id: TenantId::parse("demo-brand").unwrap(),
        name: "Demo".into(),
        kind: TenantKind::B2c,
        brand: "demo".into(),
        countries: CountryCode::ALL.to_vec(),
        currencies: vec![Currency::Eur, Currency::Chf],
        default_locale: Locale::De,
        payment: PaymentSetup::Provider {
            provider: provider.into(),
            merchant_account: None,
        },
        notifications: Default::default(),
    }
}

async fn setup() -> Env {
    let local = LocalEnv::new().await;
    local.subscribe_all().await;
    let secrets = WebhookSecrets {
        stripe: vec![Secret::new(STRIPE_SECRET.as_bytes())],
        adyen: vec![Secret::new(hex_decode(ADYEN_KEY))],
    };
    let app = Arc::new(Webhooks::new(
        local.store.clone(),
        local.store.clone(),
        Arc::new(FixedSecrets(secrets)),
        local.clock.clone(),
    ));
    Env {
        local,
        router: router(app.clone()),
        app,
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

impl Env {
    async fn order(&self, provider: &str) -> Order {
        let request: OrderRequest = serde_json::from_value(serde_json::json!({
            "locale": "de", "currency": "EUR",
            "customer": {"name": "Erika", "email": "erika@example.com"},
            "shipping": {"method": "standard", "address": {"name": "Erika", "line1": "Heidestr. 17", "postal_code": "51147", "city": "Köln", "country": "DE"}},
            "items": [{"sku": "poster-30x40", "quantity": 1, "images": [{"url": "https://example.com/a.jpg"}]}]
        }))
        .unwrap();
        let (order, events) = Order::place(
            Catalog::builtin(),
            &tenant(provider),
            &request,
            self.clock.now(),
        )
        .unwrap();
        let new = NewOrder {
            order: order.clone(),
            events,
            idempotency: IdempotencyRecord {
                key: order.id.to_string(),
                request_hash: "h".into(),
                response: StoredResponse {
                    status: 201,
                    body: "{}".into(),
                },
            },
        };
        let order = self.place(new).await;
        assert_eq!(order.state, OrderState::Placed);
        order
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, String) {
        let mut request = http::Request::post(path).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(axum::body::Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn stripe(&self, body: &serde_json::Value) -> (u16, String) {
        let body = serde_json::to_vec(body).unwrap();
        let header = stripe::signature_header(
            &[STRIPE_SECRET.as_bytes()],
            self.clock.now().unix_timestamp(),
            &body,
        );
        self.post(
            "/v1/payments/stripe/webhook",
            &[("stripe-signature", header)],
            body,
        )
        .await
    }

    /// Stripe's capture of the order's whole total.
    async fn capture(&self, order: &Order, event_id: &str) -> (u16, String) {
        let total = order.totals.total.amount;
        self.stripe(&pi_event(
            event_id,
            "payment_intent.succeeded",
            order,
            total,
        ))
        .await
    }
}

fn reference(order: &Order) -> String {
    format!("{}:{}", order.tenant, order.id)
}

fn pi_event(id: &str, kind: &str, order: &Order, amount: i64) -> serde_json::Value {
    serde_json::json!({
        "id": id, "object": "event", "type": kind,
        "data": {"object": {
            "id": format!("pi_{}", order.id), "object": "payment_intent",
            "amount": amount, "amount_capturable": amount, "amount_received": amount, "currency": "eur",
            "metadata": {"order_reference": reference(order)},
            "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}
        }}
    })
}

fn refund_event(id: &str, order: &Order, refunded_total: i64) -> serde_json::Value {
    serde_json::json!({
        "id": id, "type": "charge.refunded",
        "data": {"object": {"id": "ch_1", "object": "charge", "amount_refunded": refunded_total,
            "currency": "eur", "payment_intent": format!("pi_{}", order.id),
            "metadata": {"order_reference": reference(order)}}}
    })
}

fn dispute_event(id: &str, order: &Order) -> serde_json::Value {
    // A dispute carries no metadata: the order is found by its PaymentIntent.
    serde_json::json!({
        "id": id, "type": "charge.dispute.created",
        "data": {"object": {"id": "dp_1", "object": "dispute", "amount": order.totals.total.amount,
            "currency": "eur", "charge": "ch_1", "payment_intent": format!("pi_{}", order.id), "metadata": {}}}
    })
}

#[tokio::test]
async fn a_capture_pays_the_order_once() {
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    assert_eq!(env.published().await, ["OrderPlaced"]);
    let (status, body) = env
        .stripe(&pi_event(
            "evt_1",
            "payment_intent.succeeded",
            &order,
            total,
        ))
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"received":true}"#));
    let paid = env.reload(&order).await;
    assert_eq!(paid.state, OrderState::Paid);
    let ledger = paid.payment_status.unwrap();
    assert_eq!(
        (ledger.status, ledger.captured),
        (PaymentStatus::Captured, total)
    );
    assert_eq!(env.published().await, ["OrderPaid"]);
    // The same event again: 2xx, nothing changes.
    let (status, _) = env
        .stripe(&pi_event(
            "evt_1",
            "payment_intent.succeeded",
            &order,
            total,
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(env.reload(&order).await.version, paid.version);
    assert!(env.published().await.is_empty());
    let record = env
        .store
        .payment_record("stripe", "evt_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.outcome, "applied");
    assert_eq!(record.order.as_deref(), Some(reference(&order).as_str()));
}

#[tokio::test]
async fn a_capture_before_its_authorization_ends_paid() {
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    env.published().await;
    env.capture(&order, "evt_cap").await;
    let (status, _) = env
        .stripe(&pi_event(
            "evt_auth",
            "payment_intent.amount_capturable_updated",
            &order,
            total,
        ))
        .await;
    assert_eq!(status, 200);
    // A failure of an earlier attempt arriving last changes nothing either.
    env.stripe(&pi_event(
        "evt_fail",
        "payment_intent.payment_failed",
        &order,
        total,
    ))
    .await;
    let order = env.reload(&order).await;
    assert_eq!(order.state, OrderState::Paid);
    assert_eq!(
        order.payment_status.unwrap().status,
        PaymentStatus::Captured
    );
    assert_eq!(env.published().await, ["OrderPaid"]);
    let late = env
        .store
        .payment_record("stripe", "evt_auth")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late.outcome, "no_change");
}

#[tokio::test]
async fn failures_and_3ds_tell_the_customer_and_a_later_capture_still_pays() {
    let env = setup().await;
    let order = env.order("stripe").await;
    env.published().await;
    env.stripe(&pi_event(
        "evt_3ds",
        "payment_intent.requires_action",
        &order,
        0,
    ))
    .await;
    env.stripe(&pi_event(
        "evt_f",
        "payment_intent.payment_failed",
        &order,
        0,
    ))
    .await;
    let placed = env.reload(&order).await;
    assert_eq!(placed.state, OrderState::Placed);
    let ledger = placed.payment_status.unwrap();
    assert_eq!(ledger.status, PaymentStatus::Failed);
    assert_eq!(
        ledger.last_failure.as_deref(),
        Some("Your card was declined.")
    );
    assert_eq!(
        env.published().await,
        ["PaymentActionRequired", "PaymentFailed"]
    );
    env.capture(&order, "evt_ok").await;
    assert_eq!(env.reload(&order).await.state, OrderState::Paid);
    assert_eq!(env.published().await, ["OrderPaid"]);
}

#[tokio::test]
async fn a_wrong_amount_or_currency_is_flagged_not_paid() {
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    env.published().await;
    env.stripe(&pi_event(
        "evt_low",
        "payment_intent.succeeded",
        &order,
        total - 1,
    ))
    .await;
    let mut chf = pi_event("evt_chf", "payment_intent.succeeded", &order, total);
    chf["data"]["object"]["currency"] = serde_json::json!("chf");
    env.stripe(&chf).await;
    let order = env.reload(&order).await;
    assert_eq!(order.state, OrderState::Placed);
    let ledger = order.payment_status.unwrap();
    let codes: Vec<&str> = ledger.flags.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes, ["amount_mismatch", "currency_mismatch"]);
    assert_eq!(ledger.captured, 0);
    // Nothing for the customer; each flag announced to operators.
    assert_eq!(env.published().await, ["PaymentFlagged", "PaymentFlagged"]);
}

#[tokio::test]
async fn a_partial_refund_is_announced_and_the_rest_cancels() {
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    env.capture(&order, "evt_cap").await;
    env.published().await;
    env.stripe(&refund_event("evt_r1", &order, 500)).await;
    let partly = env.reload(&order).await;
    assert_eq!(
        partly.state,
        OrderState::Paid,
        "a partial refund does not stop the order"
    );
    let ledger = partly.payment_status.clone().unwrap();
    assert_eq!(
        (ledger.status, ledger.refunded),
        (PaymentStatus::PartiallyRefunded, 500)
    );
    assert_eq!(env.published().await, ["PaymentRefunded"]);
    // Stripe's charge.refunded carries the total refunded so far.
    env.stripe(&refund_event("evt_r2", &order, total)).await;
    let refunded = env.reload(&order).await;
    assert_eq!(refunded.state, OrderState::Cancelled);
    assert_eq!(
        refunded.payment_status.unwrap().status,
        PaymentStatus::Refunded
    );
    assert_eq!(env.published().await, ["PaymentRefunded", "OrderCancelled"]);
}

/// Moves a paid order along as render, dispatch and the plant would.
async fn into_production(env: &Env, order: &Order) -> Order {
    let mut current = env.reload(order).await;
    for state in [
        OrderState::Rendered,
        OrderState::Dispatched,
        OrderState::InProduction,
    ] {
        let mut next = current.successor(env.clock.now());
        next.state = state;
        env.store.transition(&next, &current, vec![]).await.unwrap();
        current = next;
    }
    current
}

#[tokio::test]
async fn a_chargeback_after_production_started_holds_the_order() {
    let env = setup().await;
    let order = env.order("stripe").await;
    env.capture(&order, "evt_cap").await;
    into_production(&env, &order).await;
    env.published().await;
    let (status, _) = env.stripe(&dispute_event("evt_dp", &order)).await;
    assert_eq!(status, 200);
    let held = env.reload(&order).await;
    assert_eq!(held.state, OrderState::OnHold);
    let hold = held.hold.unwrap();
    assert_eq!(hold.from, OrderState::InProduction);
    assert!(hold.reason.contains("chargeback"), "{}", hold.reason);
    assert_eq!(
        held.payment_status.unwrap().status,
        PaymentStatus::ChargedBack
    );
    assert_eq!(env.published().await, ["OrderOnHold"]);
}

#[tokio::test]
async fn a_chargeback_before_production_cancels() {
    let env = setup().await;
    let order = env.order("stripe").await;
    env.capture(&order, "evt_cap").await;
    env.published().await;
    env.stripe(&dispute_event("evt_dp", &order)).await;
    assert_eq!(env.reload(&order).await.state, OrderState::Cancelled);
    assert_eq!(env.published().await, ["OrderCancelled"]);
}

#[tokio::test]
async fn concurrent_deliveries_of_one_event_have_one_effect() {
    let env = setup().await;
    for round in 0..10 {
        let order = env.order("stripe").await;
        env.published().await;
        let event = pi_event(
            &format!("evt_race_{round}"),
            "payment_intent.succeeded",
            &order,
            order.totals.total.amount,
        );
        let body = serde_json::to_vec(&event).unwrap();
        let header = stripe::signature_header(
            &[STRIPE_SECRET.as_bytes()],
            env.clock.now().unix_timestamp(),
            &body,
        );
        let mut deliveries = Vec::new();
        for _ in 0..4 {
            let (router, body, header) = (env.router.clone(), body.clone(), header.clone());
            deliveries.push(tokio::spawn(async move {
                let request = http::Request::post("/v1/payments/stripe/webhook")
                    .header("stripe-signature", header)
                    .body(axum::body::Body::from(body))
                    .unwrap();
                router.oneshot(request).await.unwrap().status().as_u16()
            }));
        }
        for d in deliveries {
            assert_eq!(d.await.unwrap(), 200);
        }
        let paid = env.reload(&order).await;
        assert_eq!(paid.state, OrderState::Paid);
        assert_eq!(paid.version, 1, "exactly one write");
        assert_eq!(env.published().await, ["OrderPaid"], "round {round}");
    }
}

#[tokio::test]
async fn concurrent_distinct_refunds_both_count() {
    // Two different Adyen refunds at once: each is a delta, both must land.
    let env = setup().await;
    let order = env.order("adyen").await;
    let total = order.totals.total.amount;
    let item = |psp: &str, code: &str, value: i64| {
        let mut item = serde_json::json!({
            "amount": {"currency": "EUR", "value": value}, "pspReference": psp, "originalReference": "PAY1",
            "eventCode": code, "merchantAccountCode": "Demo", "merchantReference": reference(&order), "success": "true"
        });
        if code == "AUTHORISATION" {
            item["originalReference"] = serde_json::json!("");
        }
        let signature = adyen::sign_item(&hex_decode(ADYEN_KEY), &item);
        item["additionalData"] = serde_json::json!({"hmacSignature": signature});
        serde_json::json!({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]})
    };
    for body in [
        item("PAY1", "AUTHORISATION", total),
        item("CAP1", "CAPTURE", total),
    ] {
        let (status, text) = env
            .post(
                "/v1/payments/adyen/webhook",
                &[],
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert_eq!((status, text.as_str()), (200, "[accepted]"));
    }
    assert_eq!(env.reload(&order).await.state, OrderState::Paid);
    let mut tasks = Vec::new();
    for (psp, value) in [("REF1", 300), ("REF2", 200)] {
        let app = env.app.clone();
        let body = serde_json::to_vec(&item(psp, "REFUND", value)).unwrap();
        tasks.push(tokio::spawn(async move {
            app.receive("adyen", &|_| None, &body).await.is_ok()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let ledger = env.reload(&order).await.payment_status.unwrap();
    assert_eq!(ledger.refunded, 500);
    // Adyen sends a refund again: a delta, so only its event id keeps it
    // from counting twice.
    let again = serde_json::to_vec(&item("REF1", "REFUND", 300)).unwrap();
    assert!(env.app.receive("adyen", &|_| None, &again).await.is_ok());
    assert_eq!(
        env.reload(&order).await.payment_status.unwrap().refunded,
        500
    );
}

#[tokio::test]
async fn refused_requests_change_nothing() {
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    let body = serde_json::to_vec(&pi_event(
        "evt_x",
        "payment_intent.succeeded",
        &order,
        total,
    ))
    .unwrap();
    let now = env.clock.now().unix_timestamp();
    let sign = |t: i64, secret: &str| stripe::signature_header(&[secret.as_bytes()], t, &body);
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/v1/payments/stripe/webhook",
            vec![],
            401,
            "signature_missing",
        ),
        (
            "/v1/payments/stripe/webhook",
            vec![("stripe-signature", sign(now, "whsec_wrong"))],
            401,
            "signature_mismatch",
        ),
        (
            "/v1/payments/stripe/webhook",
            vec![("stripe-signature", sign(now - 301, STRIPE_SECRET))],
            401,
            "signature_expired",
        ),
        (
            "/v1/payments/stripe/webhook",
            vec![("stripe-signature", "v1=00".into())],
            401,
            "signature_malformed",
        ),
        (
            "/v1/payments/paypal/webhook",
            vec![("stripe-signature", sign(now, STRIPE_SECRET))],
            404,
            "unknown_provider",
        ),
        (
            "/v1/payments/adyen/webhook",
            vec![],
            401,
            "signature_mismatch",
        ),
        (
            "/v1/payments/%FF/webhook",
            vec![("stripe-signature", sign(now, STRIPE_SECRET))],
            404,
            "unknown_provider",
        ),
        (
            "/v1/payments/stripe/webhook?too_large",
            vec![],
            413,
            "body_too_large",
        ),
    ];
    for (path, headers, status, code) in cases {
        let mut body = body.clone();
        if path.ends_with("?too_large") {
            body = vec![b' '; crate::MAX_BODY_BYTES + 1];
        }
        if path.contains("adyen") {
            let signed_by_nobody = serde_json::json!({"notificationItems": [{"NotificationRequestItem": {
                "pspReference": "X", "eventCode": "CAPTURE", "success": "true", "merchantReference": reference(&order),
                "amount": {"value": total, "currency": "EUR"}, "additionalData": {"hmacSignature": "AAAA"}}}]});
            body = serde_json::to_vec(&signed_by_nobody).unwrap();
        }
        let (got, text) = env.post(path, &headers, body).await;
        assert_eq!(got, status, "{path} {headers:?}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"]["code"], code, "{text}");
        assert!(!text.contains(STRIPE_SECRET));
    }
    // Another method: 405 with the same JSON error body, and Allow.
    let response = env
        .router
        .clone()
        .oneshot(
            http::Request::get("/v1/payments/stripe/webhook")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["error"]["code"], "method_not_allowed");
    let unchanged = env.reload(&order).await;
    assert_eq!(
        (unchanged.state, unchanged.version),
        (OrderState::Placed, 0)
    );
    assert!(
        env.store
            .payment_record("stripe", "evt_x")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn unknown_types_are_acknowledged_and_unknown_orders_kept() {
    let env = setup().await;
    let order = env.order("stripe").await;
    env.published().await;
    let (status, _) = env
        .stripe(&serde_json::json!({"id": "evt_c", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}))
        .await;
    assert_eq!(status, 200);
    assert!(
        env.store
            .payment_record("stripe", "evt_c")
            .await
            .unwrap()
            .is_none()
    );
    // A capture for an order we do not have (another environment's).
    let mut stranger = order.clone();
    stranger.id = printworks::domain::order::OrderId::new();
    let (status, _) = env
        .stripe(&pi_event(
            "evt_s",
            "payment_intent.succeeded",
            &stranger,
            100,
        ))
        .await;
    assert_eq!(status, 200);
    let kept = env
        .store
        .payment_record("stripe", "evt_s")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.outcome, "unmatched");
    assert_eq!(env.reload(&order).await.version, 0);
    assert!(env.published().await.is_empty());
}

#[tokio::test]
async fn a_refund_after_shipment_is_announced_and_flagged() {
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    env.capture(&order, "evt_cap").await;
    let mut current = into_production(&env, &order).await;
    for state in [OrderState::Packed, OrderState::Shipped] {
        let mut next = current.successor(env.clock.now());
        next.state = state;
        env.store.transition(&next, &current, vec![]).await.unwrap();
        current = next;
    }
    env.published().await;
    let (status, _) = env.stripe(&refund_event("evt_r", &order, total)).await;
    assert_eq!(status, 200);
    let shipped = env.reload(&order).await;
    assert_eq!(shipped.state, OrderState::Shipped, "shipped is final");
    let ledger = shipped.payment_status.unwrap();
    assert_eq!(ledger.status, PaymentStatus::Refunded);
    assert_eq!(ledger.flags.last().unwrap().code, "refund_needs_review");
    assert_eq!(env.published().await, ["PaymentRefunded", "PaymentFlagged"]);
    let record = env
        .store
        .payment_record("stripe", "evt_r")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.outcome, "refund_needs_review");
}

/// A Stripe event of PaymentIntent `pi` (not the order's usual one).
fn other_pi_event(id: &str, pi: &str, kind: &str, order: &Order, amount: i64) -> serde_json::Value {
    let mut event = pi_event(id, kind, order, amount);
    event["data"]["object"]["id"] = pi.into();
    event
}

fn other_refund_event(id: &str, pi: &str, order: &Order, refunded_total: i64) -> serde_json::Value {
    let mut event = refund_event(id, order, refunded_total);
    event["data"]["object"]["payment_intent"] = pi.into();
    event["data"]["object"]["id"] = format!("ch_{pi}").into();
    event
}

/// A double click: a second PaymentIntent captured for an order paid by
/// the first. It is kept in its own entry (the order's captured amount is
/// its total, not twice), flagged `duplicate_payment`, and raises a refund
/// request; its refund settles the request and the order goes on.
#[tokio::test]
async fn a_second_payment_is_flagged_and_its_refund_settles_the_request_not_the_order() {
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    env.capture(&order, "evt_1").await;
    env.published().await;
    let second = other_pi_event(
        "evt_2",
        "pi_second",
        "payment_intent.succeeded",
        &order,
        total,
    );
    let (status, _) = env.stripe(&second).await;
    assert_eq!(status, 200);
    let flagged = env.reload(&order).await;
    assert_eq!(flagged.state, OrderState::Paid);
    let ledger = flagged.payment_status.clone().unwrap();
    assert_eq!(
        (ledger.captured, ledger.status),
        (total, PaymentStatus::Captured)
    );
    assert_eq!(ledger.payments.len(), 2, "{ledger:?}");
    let dup = ledger.payments.iter().find(|p| p.duplicate).unwrap();
    assert_eq!(
        (dup.payment_id.as_str(), dup.captured),
        ("pi_second", total)
    );
    assert_eq!(
        ledger
            .flags
            .iter()
            .map(|f| f.code.as_str())
            .collect::<Vec<_>>(),
        ["duplicate_payment"]
    );
    let open: Vec<_> = ledger.open_refunds().collect();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (
            open[0].payment_id.as_deref(),
            open[0].amount,
            open[0].reason.as_str()
        ),
        (Some("pi_second"), total, "duplicate_payment")
    );
    assert_eq!(
        env.published().await,
        ["PaymentFlagged"],
        "operators hear of it, the customer not yet"
    );
    let record = env
        .store
        .payment_record("stripe", "evt_2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.outcome, "duplicate_payment");
    // The same event again changes nothing.
    env.stripe(&second).await;
    assert_eq!(env.reload(&order).await.version, flagged.version);

    // The shop refunds the second payment: the request is settled, the
    // order is not cancelled, and the customer hears of the refund.
    let (status, _) = env
        .stripe(&other_refund_event("evt_3", "pi_second", &order, total))
        .await;
    assert_eq!(status, 200);
    let settled = env.reload(&order).await;
    assert_eq!(settled.state, OrderState::Paid, "the order goes on");
    let ledger = settled.payment_status.unwrap();
    assert_eq!(ledger.refunded, 0, "the order's own payment is untouched");
    assert_eq!(ledger.status, PaymentStatus::Captured);
    assert_eq!(ledger.open_refunds().count(), 0);
    assert!(ledger.refund_requests[0].settled_at.is_some());
    assert_eq!(env.published().await, ["PaymentRefunded"]);
}

/// A first PaymentIntent that failed, then another that succeeds: the
/// second is the order's payment, not a duplicate.
#[tokio::test]
async fn a_new_payment_after_a_failed_one_pays_without_a_flag() {
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    env.stripe(&pi_event(
        "evt_1",
        "payment_intent.payment_failed",
        &order,
        total,
    ))
    .await;
    let paid = other_pi_event(
        "evt_2",
        "pi_retry",
        "payment_intent.succeeded",
        &order,
        total,
    );
    assert_eq!(env.stripe(&paid).await.0, 200);
    let order = env.reload(&order).await;
    assert_eq!(order.state, OrderState::Paid);
    let ledger = order.payment_status.unwrap();
    assert_eq!(ledger.payment_id.as_deref(), Some("pi_retry"));
    assert!(ledger.flags.is_empty(), "{:?}", ledger.flags);
    assert!(ledger.refund_requests.is_empty());
    assert!(ledger.payments.iter().all(|p| !p.duplicate));
}

/// A paid order cancelled by the customer: a refund request for what was
/// captured, visible on the order until the provider's refund settles it.
#[tokio::test]
async fn cancelling_a_paid_order_raises_a_refund_request_that_the_refund_settles() {
    use printworks::ports::OrderStore;
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    env.capture(&order, "evt_1").await;
    let paid = env.reload(&order).await;
    let (cancelled, event) = paid
        .cancel_by_customer("changed my mind", env.clock.now())
        .unwrap();
    assert_eq!(event.data["refund_requested"]["amount"], total);
    env.store
        .transition(&cancelled, &paid, vec![event])
        .await
        .unwrap();
    let ledger = env.reload(&order).await.payment_status.unwrap();
    let open: Vec<_> = ledger.open_refunds().collect();
    assert_eq!(
        (open.len(), open[0].amount, open[0].reason.as_str()),
        (1, total, "order_cancelled")
    );
    // Cancelling again raises nothing more.
    let again = env.reload(&order).await;
    assert!(again.cancel_by_customer("x", env.clock.now()).is_err());

    env.stripe(&refund_event("evt_2", &order, total)).await;
    let refunded = env.reload(&order).await;
    assert_eq!(refunded.state, OrderState::Cancelled);
    let ledger = refunded.payment_status.unwrap();
    assert_eq!(
        (ledger.refunded, ledger.status),
        (total, PaymentStatus::Refunded)
    );
    assert_eq!(
        ledger.open_refunds().count(),
        0,
        "{:?}",
        ledger.refund_requests
    );
}

// ------------------------------------------ merchant accounts, by oracle --

/// The test virtualenv's Python (`scripts/test` sets `PRINTWORKS_PYTHON`,
/// with the providers' official libraries installed), or `None`: the
/// oracle tests then say they skipped, unless the test script requires them.
fn python() -> Option<String> {
    match std::env::var("PRINTWORKS_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("PRINTWORKS_REQUIRE_EMULATOR").is_err(),
                "PRINTWORKS_PYTHON must be set when the test script runs"
            );
            eprintln!("skipped: PRINTWORKS_PYTHON is not set");
            None
        }
    }
}

/// Runs `script` with `args` and `input` on stdin; its stdout, trimmed.
fn run_python(python: &str, script: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The `Stripe-Signature` header stripe-python computes for `body` at `t`.
fn stripe_lib_header(python: &str, secret: &str, t: i64, body: &str) -> String {
    let script = "import sys, stripe\n\
        payload = sys.stdin.read(); t = int(sys.argv[2])\n\
        sig = stripe.WebhookSignature._compute_signature('%d.%s' % (t, payload), sys.argv[1])\n\
        print('t=%d,v1=%s' % (t, sig))";
    run_python(python, script, &[secret, &t.to_string()], body)
}

/// An Adyen notification item signed by the Adyen library
/// (`Adyen.util.generate_notification_sig`) with `key`.
fn adyen_lib_item(python: &str, key: &str, mut item: serde_json::Value) -> serde_json::Value {
    let script = "import sys, json\n\
        from Adyen.util import generate_notification_sig\n\
        item = json.loads(sys.stdin.read())\n\
        print(generate_notification_sig(item, sys.argv[1]).decode())";
    let signature = run_python(python, script, &[key], &item.to_string());
    item["additionalData"] = serde_json::json!({ "hmacSignature": signature });
    item
}

/// Two brands on Stripe, each bound to its own Stripe account and endpoint
/// secret, and one bound to an Adyen merchant account; a shared Stripe
/// secret too.
async fn merchants() -> (Env, Tenant, Tenant, Tenant) {
    let local = LocalEnv::new().await;
    local.subscribe_all().await;
    let secrets = WebhookSecrets {
        stripe: vec![
            Secret::new(STRIPE_SECRET.as_bytes()),
            Secret::for_account(b"whsec_posters_endpoint".to_vec(), "acct_posters"),
            Secret::for_account(b"whsec_cards_endpoint".to_vec(), "acct_cards"),
        ],
        adyen: vec![Secret::new(hex_decode(ADYEN_KEY))],
    };
    let app = Arc::new(Webhooks::new(
        local.store.clone(),
        local.store.clone(),
        Arc::new(FixedSecrets(secrets)),
        local.clock.clone(),
    ));
    let bound = |id: &str, provider: &str, account: &str| Tenant {
        id: TenantId::parse(id).unwrap(),
        payment: PaymentSetup::Provider {
            provider: provider.into(),
            merchant_account: Some(account.into()),
        },
        ..tenant(provider)
    };
    let env = Env {
        local,
        router: router(app.clone()),
        app,
    };
    (
        env,
        bound("posters", "stripe", "acct_posters"),
        bound("cards", "stripe", "acct_cards"),
        bound("frames", "adyen", "FramesShopEU"),
    )
}

impl Env {
    async fn order_of(&self, tenant: &Tenant) -> Order {
        let request: OrderRequest = serde_json::from_value(serde_json::json!({
            "locale": "de", "currency": "EUR",
            "customer": {"name": "Erika", "email": "erika@example.com"},
            "shipping": {"method": "standard", "address": {"name": "Erika", "line1": "Heidestr. 17", "postal_code": "51147", "city": "Köln", "country": "DE"}},
            "items": [{"sku": "poster-30x40", "quantity": 1, "images": [{"url": "https://example.com/a.jpg"}]}]
        }))
        .unwrap();
        let (order, events) =
            Order::place(Catalog::builtin(), tenant, &request, self.clock.now()).unwrap();
        self.place(NewOrder {
            order: order.clone(),
            events,
            idempotency: IdempotencyRecord {
                key: order.id.to_string(),
                request_hash: "h".into(),
                response: StoredResponse {
                    status: 201,
                    body: "{}".into(),
                },
            },
        })
        .await
    }

    /// `event` signed by stripe-python with `secret`, posted.
    async fn stripe_signed_by_lib(
        &self,
        python: &str,
        secret: &str,
        event: &serde_json::Value,
    ) -> (u16, String) {
        let body = event.to_string();
        let header = stripe_lib_header(python, secret, self.clock.now().unix_timestamp(), &body);
        self.post(
            "/v1/payments/stripe/webhook",
            &[("stripe-signature", header)],
            body.into_bytes(),
        )
        .await
    }
}

/// Each brand's Stripe account signs its events with its own endpoint
/// secret: an event verified for one account pays that account's orders
/// and moves nothing of another's (recorded `merchant_mismatch`, the order
/// untouched). stripe-python signs every event here.
#[tokio::test]
async fn a_stripe_event_moves_only_the_orders_of_its_merchant_account() {
    let Some(python) = python() else { return };
    let (env, posters, cards, _) = merchants().await;
    let poster_order = env.order_of(&posters).await;
    let card_order = env.order_of(&cards).await;
    let total = card_order.totals.total.amount;

    // The posters account's secret signs a payment of a cards order.
    let wrong = pi_event("evt_x", "payment_intent.succeeded", &card_order, total);
    let (status, _) = env
        .stripe_signed_by_lib(&python, "whsec_posters_endpoint", &wrong)
        .await;
    assert_eq!(status, 200, "authentic: acknowledged");
    let untouched = env.reload(&card_order).await;
    assert_eq!(
        (untouched.state, untouched.version),
        (OrderState::Placed, card_order.version)
    );
    let record = env
        .store
        .payment_record("stripe", "evt_x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.outcome, "merchant_mismatch");
    // Nor does the shop's shared secret move a bound brand's order.
    let shared = pi_event("evt_s", "payment_intent.succeeded", &card_order, total);
    env.stripe_signed_by_lib(&python, STRIPE_SECRET, &shared)
        .await;
    assert_eq!(env.reload(&card_order).await.state, OrderState::Placed);

    // Each account's own secret pays its own orders.
    let right = pi_event("evt_c", "payment_intent.succeeded", &card_order, total);
    assert_eq!(
        env.stripe_signed_by_lib(&python, "whsec_cards_endpoint", &right)
            .await
            .0,
        200
    );
    assert_eq!(env.reload(&card_order).await.state, OrderState::Paid);
    let own = pi_event(
        "evt_p",
        "payment_intent.succeeded",
        &poster_order,
        poster_order.totals.total.amount,
    );
    env.stripe_signed_by_lib(&python, "whsec_posters_endpoint", &own)
        .await;
    assert_eq!(env.reload(&poster_order).await.state, OrderState::Paid);
    // A secret nobody has: refused before anything is read.
    let forged = pi_event("evt_f", "payment_intent.succeeded", &poster_order, 1);
    let (status, _) = env
        .stripe_signed_by_lib(&python, "whsec_someone_else", &forged)
        .await;
    assert_eq!(status, 401);
}

/// An Adyen item (signed by the Adyen library) moves a bound brand's
/// orders only with the brand's `merchantAccountCode`.
#[tokio::test]
async fn an_adyen_item_moves_only_the_orders_of_its_merchant_account() {
    let Some(python) = python() else { return };
    let (env, _, _, frames) = merchants().await;
    let order = env.order_of(&frames).await;
    let total = order.totals.total.amount;
    let item = |psp: &str, original: &str, code: &str, account: &str| {
        serde_json::json!({
            "amount": {"value": total, "currency": "EUR"},
            "pspReference": psp, "originalReference": original, "eventCode": code,
            "eventDate": "2026-12-06T10:00:00+01:00", "merchantAccountCode": account,
            "merchantReference": reference(&order), "success": "true",
        })
    };
    let send = |items: Vec<serde_json::Value>| {
        let body = serde_json::json!({
            "live": "false",
            "notificationItems": items
                .into_iter()
                .map(|i| serde_json::json!({"NotificationRequestItem": adyen_lib_item(&python, ADYEN_KEY, i)}))
                .collect::<Vec<_>>(),
        });
        let env = &env;
        async move {
            env.post(
                "/v1/payments/adyen/webhook",
                &[],
                serde_json::to_vec(&body).unwrap(),
            )
            .await
        }
    };
    let (status, body) = send(vec![
        item("PSPOTHER0000001", "", "AUTHORISATION", "OtherShop"),
        item("PSPOTHER0000002", "PSPOTHER0000001", "CAPTURE", "OtherShop"),
    ])
    .await;
    assert_eq!((status, body.as_str()), (200, "[accepted]"));
    assert_eq!(env.reload(&order).await.state, OrderState::Placed);
    let record = env
        .store
        .payment_record("adyen", "PSPOTHER0000002:CAPTURE:true")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.outcome, "merchant_mismatch");

    send(vec![
        item("PSPFRAMES000001", "", "AUTHORISATION", "FramesShopEU"),
        item(
            "PSPFRAMES000002",
            "PSPFRAMES000001",
            "CAPTURE",
            "FramesShopEU",
        ),
    ])
    .await;
    let paid = env.reload(&order).await;
    assert_eq!(paid.state, OrderState::Paid);
    assert!(paid.payment_status.unwrap().flags.is_empty());
}

/// A refund request counts only refunds made after it was raised: a
/// goodwill refund before the cancellation does not settle it.
#[tokio::test]
async fn a_refund_request_is_settled_only_by_refunds_after_it() {
    use printworks::ports::OrderStore;
    let env = setup().await;
    let order = env.order("stripe").await;
    let total = order.totals.total.amount;
    env.capture(&order, "evt_1").await;
    env.stripe(&refund_event("evt_goodwill", &order, 500)).await;
    let paid = env.reload(&order).await;
    assert_eq!(
        paid.state,
        OrderState::Paid,
        "a partial refund does not stop it"
    );
    let (cancelled, event) = paid
        .cancel_by_customer("changed my mind", env.clock.now())
        .unwrap();
    assert_eq!(event.data["refund_requested"]["amount"], total - 500);
    env.store
        .transition(&cancelled, &paid, vec![event])
        .await
        .unwrap();
    // All but 1 EUR refunded in total, but only total - 6 EUR since the
    // request for total - 5 EUR: still open (counting the goodwill refund
    // would settle it).
    env.stripe(&refund_event("evt_r1", &order, total - 100))
        .await;
    let ledger = env.reload(&order).await.payment_status.unwrap();
    assert_eq!(ledger.refunded, total - 100);
    assert_eq!(
        ledger.open_refunds().count(),
        1,
        "{:?}",
        ledger.refund_requests
    );
    // The rest: settled.
    env.stripe(&refund_event("evt_r2", &order, total)).await;
    let ledger = env.reload(&order).await.payment_status.unwrap();
    assert_eq!(
        ledger.open_refunds().count(),
        0,
        "{:?}",
        ledger.refund_requests
    );
}
