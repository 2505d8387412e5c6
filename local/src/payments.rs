//! Payments on one machine: the webhook secrets of `printworks up` (made
//! once, kept in `payment-secrets.json` beside the database) and
//! `printworks pay`, which sends a correctly signed provider event for an
//! order to the local server, so a B2C order can be walked through by hand.

use anyhow::{Context, bail};
use printworks::domain::order::Order;
use printworks::domain::payment::PaymentReference;
use printworks::domain::tenant::PaymentSetup;
use printworks::webhooks::{WebhookSecrets, adyen, stripe};
use std::path::{Path, PathBuf};

pub const SECRETS_FILE: &str = "payment-secrets.json";

pub fn secrets_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SECRETS_FILE)
}

/// Reads the local webhook secrets, creating them (random, readable by the
/// owner only) on first use.
pub fn load_or_create_secrets(data_dir: &Path) -> anyhow::Result<WebhookSecrets> {
    let path = secrets_path(data_dir);
    if !path.exists() {
        let stripe: String = {
            use rand::Rng;
            rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(32)
                .map(char::from)
                .collect()
        };
        let adyen: [u8; 32] = rand::random();
        let doc = serde_json::json!({
            "stripe": [format!("whsec_local_{stripe}")],
            "adyen": [hex::encode_upper(adyen)],
        });
        write_private(&path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    let raw =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    WebhookSecrets::from_json(&raw).with_context(|| format!("reading {}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// What `printworks pay` asks the provider to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayEvent {
    /// The payment went through (Stripe `payment_intent.succeeded`, Adyen
    /// `AUTHORISATION` + `CAPTURE`).
    Succeeded,
    Failed,
    /// 3-D Secure (Stripe only).
    RequiresAction,
    /// A refund of `amount` (default: everything).
    Refund,
    /// A chargeback.
    Dispute,
}

/// A signed webhook request, ready to send.
#[derive(Debug, Clone)]
pub struct SignedWebhook {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Builds the provider's event for `order` and signs it with the first
/// configured secret of that provider.
pub fn signed_event(
    secrets: &WebhookSecrets,
    order: &Order,
    provider: &str,
    event: PayEvent,
    amount: Option<i64>,
    now: time::OffsetDateTime,
) -> anyhow::Result<SignedWebhook> {
    signed_event_of(secrets, order, provider, event, amount, None, now)
}

/// [`signed_event`] of payment `payment_id` (a PaymentIntent id, an Adyen
/// pspReference) instead of the order's usual one: a second payment, as a
/// double click at the storefront makes.
pub fn signed_event_of(
    secrets: &WebhookSecrets,
    order: &Order,
    provider: &str,
    event: PayEvent,
    amount: Option<i64>,
    payment_id: Option<&str>,
    now: time::OffsetDateTime,
) -> anyhow::Result<SignedWebhook> {
    let reference = PaymentReference::of(order).to_string();
    let total = order.totals.total;
    let amount = amount.unwrap_or(total.amount);
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let chosen = payment_id;
    let payment_id = chosen
        .map(str::to_string)
        .unwrap_or_else(|| format!("pi_{}", order.id.as_str().trim_start_matches("ord_")));
    // The merchant account the order's tenant is bound to: its secret
    // signs (Stripe), its code is in the item (Adyen).
    let account = match &order.payment {
        PaymentSetup::Provider {
            merchant_account, ..
        } => merchant_account.as_deref(),
        PaymentSetup::Invoice => None,
    };
    match provider {
        "stripe" => {
            let Some(secret) = secrets.stripe.iter().find(|s| s.account() == account) else {
                bail!(
                    "no stripe secret of account {} in {SECRETS_FILE}",
                    account.unwrap_or("(shared)")
                )
            };
            let currency = total.currency.code().to_ascii_lowercase();
            let (kind, object) = match event {
                PayEvent::Succeeded => (
                    "payment_intent.succeeded",
                    serde_json::json!({"id": payment_id, "object": "payment_intent", "status": "succeeded",
                        "amount": amount, "amount_received": amount, "currency": currency,
                        "metadata": {"order_reference": reference}}),
                ),
                PayEvent::Failed => (
                    "payment_intent.payment_failed",
                    serde_json::json!({"id": payment_id, "object": "payment_intent", "status": "requires_payment_method",
                        "amount": amount, "currency": currency, "metadata": {"order_reference": reference},
                        "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}),
                ),
                PayEvent::RequiresAction => (
                    "payment_intent.requires_action",
                    serde_json::json!({"id": payment_id, "object": "payment_intent", "status": "requires_action",
                        "amount": amount, "currency": currency, "metadata": {"order_reference": reference}}),
                ),
                PayEvent::Refund => {
                    let already = order.payment_status.as_ref().map_or(0, |l| {
                        match (chosen, &l.payment_id) {
                            (Some(id), Some(own)) if id != own => l
                                .payments
                                .iter()
                                .find(|p| p.payment_id == id)
                                .map_or(0, |p| p.refunded),
                            _ => l.refunded,
                        }
                    });
                    (
                        "charge.refunded",
                        serde_json::json!({"id": format!("ch_{unique}"), "object": "charge",
                            "amount": total.amount, "amount_refunded": already + amount, "currency": currency,
                            "payment_intent": payment_id, "metadata": {"order_reference": reference}}),
                    )
                }
                PayEvent::Dispute => (
                    "charge.dispute.created",
                    serde_json::json!({"id": format!("dp_{unique}"), "object": "dispute", "amount": amount,
                        "currency": currency, "payment_intent": payment_id, "metadata": {}}),
                ),
            };
            let body = serde_json::to_vec(&serde_json::json!({
                "id": format!("evt_local_{unique}"), "object": "event", "type": kind,
                "created": now.unix_timestamp(), "livemode": false,
                "data": {"object": object},
            }))?;
            let header = stripe::signature_header(&[secret.expose()], now.unix_timestamp(), &body);
            Ok(SignedWebhook {
                path: "/v1/payments/stripe/webhook".into(),
                headers: vec![("stripe-signature".into(), header)],
                body,
            })
        }
        "adyen" => {
            let Some(key) = secrets.adyen.first() else {
                bail!("no adyen key in {SECRETS_FILE}")
            };
            // pspReferences are 16 characters: the payment's from the order
            // id, each modification's from this call.
            let payment_id = chosen
                .map(str::to_string)
                .unwrap_or_else(|| order.id.as_str()[4..20].to_ascii_uppercase());
            let psp = unique[16..31].to_ascii_uppercase();
            let item = |psp: String, original: &str, code: &str, success: bool| {
                let mut item = serde_json::json!({
                    "amount": {"value": amount, "currency": total.currency.code()},
                    "pspReference": psp, "originalReference": original, "eventCode": code,
                    "eventDate": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    "merchantAccountCode": account.unwrap_or("PrintworksLocal"), "merchantReference": reference,
                    "success": if success { "true" } else { "false" },
                });
                if !success {
                    item["reason"] = serde_json::json!("Refused");
                }
                item["additionalData"] =
                    serde_json::json!({"hmacSignature": adyen::sign_item(key.expose(), &item)});
                serde_json::json!({"NotificationRequestItem": item})
            };
            let items = match event {
                PayEvent::Succeeded => vec![
                    item(payment_id.clone(), "", "AUTHORISATION", true),
                    item(format!("{psp}C"), &payment_id, "CAPTURE", true),
                ],
                PayEvent::Failed => vec![item(payment_id.clone(), "", "AUTHORISATION", false)],
                PayEvent::RequiresAction => {
                    bail!(
                        "Adyen sends no webhook for 3-D Secure: the storefront handles the action"
                    )
                }
                PayEvent::Refund => vec![item(format!("{psp}R"), &payment_id, "REFUND", true)],
                PayEvent::Dispute => vec![item(format!("{psp}D"), &payment_id, "CHARGEBACK", true)],
            };
            let body = serde_json::to_vec(
                &serde_json::json!({"live": "false", "notificationItems": items}),
            )?;
            Ok(SignedWebhook {
                path: "/v1/payments/adyen/webhook".into(),
                headers: Vec::new(),
                body,
            })
        }
        other => bail!("unknown provider {other:?}: stripe or adyen"),
    }
}

/// Sends `webhook` to the server at `base_url`; returns status and body.
pub async fn send(base_url: &str, webhook: &SignedWebhook) -> anyhow::Result<(u16, String)> {
    let client = reqwest::Client::new();
    let mut request = client
        .post(format!(
            "{}{}",
            base_url.trim_end_matches('/'),
            webhook.path
        ))
        .header("content-type", "application/json")
        .body(webhook.body.clone());
    for (name, value) in &webhook.headers {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("is `printworks up` running at {base_url}?"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}
