//! Notifications: who is told what, on which channel. Pure decisions, no
//! I/O: `functions/notify` renders and sends what [`plan`] decides, keeps
//! each send once per [`notification_id`], and counts it against the
//! tenant's [`DailyCaps`].

use super::events::{EventEnvelope, EventType};
use super::order::Order;
use super::tenant::{PaymentSetup, Tenant, TenantId, TenantKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use time::{Date, OffsetDateTime, Time};

/// How a message reaches its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
    /// A signed HTTPS POST to a B2B tenant's endpoint.
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(raw: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == raw)
    }
}

/// A tenant's endpoint for signed event webhooks, and its signing secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantWebhook {
    /// `https://...`; private, loopback and link-local targets are refused
    /// when sending.
    pub url: String,
    /// The signing secret (`whsec_...`), shown to the tenant once.
    pub secret: String,
}

impl std::fmt::Debug for TenantWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantWebhook")
            .field("url", &self.url)
            .field("secret", &"***")
            .finish()
    }
}

/// What a tenant wants sent. Absent fields take the defaults of the
/// tenant's kind: a B2C brand e-mails (and texts) its customers; a B2B
/// tenant's customers hear nothing from us (the tenant's own systems get
/// the webhook and tell them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<TenantWebhook>,
}

impl NotifySettings {
    pub fn is_default(&self) -> bool {
        *self == NotifySettings::default()
    }

    pub fn emails_customers(&self, kind: TenantKind) -> bool {
        self.email.unwrap_or(kind == TenantKind::B2c)
    }

    pub fn texts_customers(&self, kind: TenantKind) -> bool {
        self.sms.unwrap_or(kind == TenantKind::B2c)
    }
}

/// A new webhook signing secret: `whsec_` and 32 random bytes in hex.
pub fn mint_webhook_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    format!("whsec_{}", hex::encode(bytes))
}

/// The header a tenant webhook carries its signature in.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "Printworks-Signature";

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`: Stripe's
/// scheme ([`super::signature`]), so a tenant can verify it with any
/// Stripe-style verifier.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    super::signature::signature_header(&[secret.as_bytes()], timestamp, body)
}

/// The message templates, one per customer-facing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    OrderPlaced,
    OrderPaid,
    PaymentFailed,
    PaymentActionRequired,
    OrderOnHold,
    OrderResumed,
    OrderShipped,
    OrderCancelled,
    PaymentRefunded,
}

impl Template {
    pub const ALL: [Template; 9] = [
        Template::OrderPlaced,
        Template::OrderPaid,
        Template::PaymentFailed,
        Template::PaymentActionRequired,
        Template::OrderOnHold,
        Template::OrderResumed,
        Template::OrderShipped,
        Template::OrderCancelled,
        Template::PaymentRefunded,
    ];

    /// The template's file stem and catalog prefix (`order_shipped`).
    pub fn name(self) -> &'static str {
        match self {
            Template::OrderPlaced => "order_placed",
            Template::OrderPaid => "order_paid",
            Template::PaymentFailed => "payment_failed",
            Template::PaymentActionRequired => "payment_action_required",
            Template::OrderOnHold => "order_on_hold",
            Template::OrderResumed => "order_resumed",
            Template::OrderShipped => "order_shipped",
            Template::OrderCancelled => "order_cancelled",
            Template::PaymentRefunded => "payment_refunded",
        }
    }

    /// The customer template of an event, if customers hear of it.
    pub fn for_event(event: EventType) -> Option<Template> {
        Some(match event {
            EventType::OrderPlaced => Template::OrderPlaced,
            EventType::OrderPaid => Template::OrderPaid,
            EventType::PaymentFailed => Template::PaymentFailed,
            EventType::PaymentActionRequired => Template::PaymentActionRequired,
            EventType::OrderOnHold => Template::OrderOnHold,
            EventType::OrderResumed => Template::OrderResumed,
            EventType::OrderShipped => Template::OrderShipped,
            EventType::OrderCancelled => Template::OrderCancelled,
            EventType::PaymentRefunded => Template::PaymentRefunded,
            EventType::OrderRendered
            | EventType::OrderChanged
            | EventType::PaymentFlagged
            | EventType::PaymentFlagResolved
            | EventType::OrderNudged
            | EventType::OrderStuck
            | EventType::OrderDispatched
            | EventType::OrderInProduction
            | EventType::ProductionFailed => return None,
        })
    }

    /// Whether the template has a text message (only what a customer must
    /// act on or wants at once: shipped, 3-D Secure).
    pub fn has_sms(self) -> bool {
        matches!(
            self,
            Template::OrderShipped | Template::PaymentActionRequired
        )
    }
}

/// The events the notify queue subscribes to (the template's filter and
/// the local runner's subscription are this list).
pub const NOTIFY_EVENTS: [EventType; 10] = [
    EventType::OrderPlaced,
    EventType::OrderPaid,
    EventType::PaymentFailed,
    EventType::PaymentActionRequired,
    EventType::OrderOnHold,
    EventType::OrderResumed,
    EventType::OrderDispatched,
    EventType::OrderShipped,
    EventType::OrderCancelled,
    EventType::PaymentRefunded,
];

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub channel: Channel,
    /// E-mail address, E.164 phone number or webhook URL.
    pub recipient: String,
    /// The customer template; `None` for a webhook (the event itself).
    pub template: Option<Template>,
}

/// Who is told of `event` about `order`, and how:
///
/// - the customer by e-mail of every customer-facing event, if the tenant
///   e-mails customers (B2C by default), except `OrderPaid` of an order paid
///   by invoice (it is paid as it is placed: the confirmation says it all);
/// - the customer by SMS of `OrderShipped` and `PaymentActionRequired`, if
///   the tenant texts customers (B2C by default) and the order has a phone;
/// - the tenant's webhook of every event of the notify queue, if set.
pub fn plan(event: &EventEnvelope, order: &Order, tenant: &Tenant) -> Vec<Planned> {
    let mut out = Vec::new();
    let settings = &tenant.notifications;
    if let Some(template) = Template::for_event(event.event_type) {
        let invoice_paid =
            template == Template::OrderPaid && matches!(order.payment, PaymentSetup::Invoice);
        if settings.emails_customers(tenant.kind) && !invoice_paid {
            out.push(Planned {
                channel: Channel::Email,
                recipient: order.customer.email.clone(),
                template: Some(template),
            });
        }
        if template.has_sms()
            && settings.texts_customers(tenant.kind)
            && let Some(phone) = &order.customer.phone
        {
            out.push(Planned {
                channel: Channel::Sms,
                recipient: phone.clone(),
                template: Some(template),
            });
        }
    }
    if let Some(webhook) = &settings.webhook
        && NOTIFY_EVENTS.contains(&event.event_type)
    {
        out.push(Planned {
            channel: Channel::Webhook,
            recipient: webhook.url.clone(),
            template: None,
        });
    }
    out
}

/// The id of one send: a function of (order, event, channel, recipient),
/// so every delivery of the same event finds the same record. The
/// recipient is hashed in, never stored in the id (ids reach the logs).
pub fn notification_id(event: &EventEnvelope, channel: Channel, recipient: &str) -> String {
    let mut hash = Sha256::new();
    for part in [
        event.tenant.as_str(),
        event.order_id.as_str(),
        event.id.as_str(),
        channel.as_str(),
        recipient,
    ] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    format!("ntf_{}", &hex::encode(hash.finalize())[..32])
}

/// Daily sending limits per tenant and channel, as a mail provider's
/// sending limits demand. Configuration (`NOTIFY_DAILY_CAPS`):
/// `{"default": {"email": 5000, "sms": 500, "webhook": 50000},
///   "tenants": {"demo-brand": {"email": 200}}}`; a channel a tenant does
/// not name takes the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyCaps {
    #[serde(default = "default_caps")]
    pub default: BTreeMap<Channel, u32>,
    #[serde(default)]
    pub tenants: BTreeMap<TenantId, BTreeMap<Channel, u32>>,
}

fn default_caps() -> BTreeMap<Channel, u32> {
    BTreeMap::from([
        (Channel::Email, 5_000),
        (Channel::Sms, 500),
        (Channel::Webhook, 50_000),
    ])
}

impl Default for DailyCaps {
    fn default() -> DailyCaps {
        DailyCaps {
            default: default_caps(),
            tenants: BTreeMap::new(),
        }
    }
}

impl DailyCaps {
    pub fn parse(raw: &str) -> Result<DailyCaps, String> {
        let mut caps: DailyCaps = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        for (channel, limit) in default_caps() {
            caps.default.entry(channel).or_insert(limit);
        }
        Ok(caps)
    }

    pub fn limit(&self, tenant: &TenantId, channel: Channel) -> u32 {
        self.tenants
            .get(tenant)
            .and_then(|caps| caps.get(&channel))
            .or_else(|| self.default.get(&channel))
            .copied()
            .unwrap_or(0)
    }
}

/// The day a send counts against: the UTC calendar day.
pub fn cap_day(now: OffsetDateTime) -> Date {
    now.to_offset(time::UtcOffset::UTC).date()
}

/// When a message deferred at `now` is due: the start of the next UTC day.
pub fn next_day(now: OffsetDateTime) -> OffsetDateTime {
    let day = cap_day(now).next_day().unwrap_or(Date::MAX);
    day.with_time(Time::MIDNIGHT).assume_utc()
}

/// A provider's error text with what looks like an e-mail address or a
/// phone number replaced: providers (SES, SNS, SMTP servers) name the
/// recipient in some refusals, and those texts reach the logs and the
/// notification record.
pub fn redact_contacts(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let digits = word.chars().filter(char::is_ascii_digit).count();
            if word.contains('@') {
                "<address>"
            } else if digits >= 6 && word.contains('+') {
                "<number>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{b2b_tenant, paid_order};

    fn at() -> OffsetDateTime {
        time::macros::datetime!(2026-11-22 23:59:30 UTC)
    }

    fn b2c(order: &Order) -> Tenant {
        let mut tenant = b2b_tenant();
        tenant.id = order.tenant.clone();
        tenant.kind = TenantKind::B2c;
        tenant.payment = PaymentSetup::Provider {
            provider: "stripe".into(),
            merchant_account: None,
        };
        tenant
    }

    fn event(order: &Order, t: EventType) -> EventEnvelope {
        EventEnvelope::new(t, &order.id, &order.tenant, at(), serde_json::json!({}))
    }

    fn channels(planned: &[Planned]) -> Vec<Channel> {
        planned.iter().map(|p| p.channel).collect()
    }

    #[test]
    fn b2c_customers_get_mail_and_texts_where_it_matters() {
        let mut order = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        order.payment = PaymentSetup::Provider {
            provider: "stripe".into(),
            merchant_account: None,
        };
        order.customer.phone = Some("+4915112345678".into());
        let tenant = b2c(&order);
        let shipped = plan(&event(&order, EventType::OrderShipped), &order, &tenant);
        assert_eq!(channels(&shipped), [Channel::Email, Channel::Sms]);
        assert_eq!(shipped[0].recipient, order.customer.email);
        assert_eq!(shipped[1].recipient, "+4915112345678");
        let placed = plan(&event(&order, EventType::OrderPlaced), &order, &tenant);
        assert_eq!(channels(&placed), [Channel::Email]);
        // Not customer-facing, and no webhook configured.
        assert!(plan(&event(&order, EventType::OrderDispatched), &order, &tenant).is_empty());
        assert!(plan(&event(&order, EventType::OrderRendered), &order, &tenant).is_empty());
    }

    #[test]
    fn b2b_tenants_get_webhooks_and_their_customers_nothing_by_default() {
        let order = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        let mut tenant = b2b_tenant();
        assert!(plan(&event(&order, EventType::OrderShipped), &order, &tenant).is_empty());
        tenant.notifications.webhook = Some(TenantWebhook {
            url: "https://erp.example.com/hooks/printworks".into(),
            secret: mint_webhook_secret(),
        });
        let dispatched = plan(&event(&order, EventType::OrderDispatched), &order, &tenant);
        assert_eq!(channels(&dispatched), [Channel::Webhook]);
        assert_eq!(dispatched[0].template, None);
        // Opting in to customer mail: an invoice order's OrderPaid is not mailed.
        tenant.notifications.email = Some(true);
        let paid = plan(&event(&order, EventType::OrderPaid), &order, &tenant);
        assert_eq!(channels(&paid), [Channel::Webhook]);
        let placed = plan(&event(&order, EventType::OrderPlaced), &order, &tenant);
        assert_eq!(channels(&placed), [Channel::Email, Channel::Webhook]);
        assert!(!format!("{tenant:?}").contains("whsec_"));
    }

    #[test]
    fn ids_are_stable_per_event_channel_and_recipient() {
        let order = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        let e = event(&order, EventType::OrderShipped);
        let id = notification_id(&e, Channel::Email, "a@example.com");
        assert_eq!(id, notification_id(&e, Channel::Email, "a@example.com"));
        assert_ne!(id, notification_id(&e, Channel::Sms, "a@example.com"));
        assert_ne!(id, notification_id(&e, Channel::Email, "b@example.com"));
        let other = event(&order, EventType::OrderShipped);
        assert_ne!(id, notification_id(&other, Channel::Email, "a@example.com"));
        assert!(!id.contains("example"));
        assert_eq!(id.len(), 4 + 32);
    }

    #[test]
    fn caps_default_per_channel_and_override_per_tenant() {
        let caps = DailyCaps::parse(r#"{"tenants": {"acme": {"email": 3}}}"#).unwrap();
        let acme = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("other").unwrap();
        assert_eq!(caps.limit(&acme, Channel::Email), 3);
        assert_eq!(caps.limit(&acme, Channel::Sms), 500);
        assert_eq!(caps.limit(&other, Channel::Email), 5_000);
        assert!(DailyCaps::parse(r#"{"tenants": {"acme": {"fax": 3}}}"#).is_err());
        assert!(DailyCaps::parse(r#"{"default": {"email": -1}}"#).is_err());
    }

    #[test]
    fn deferral_is_to_the_next_utc_day() {
        assert_eq!(cap_day(at()), time::macros::date!(2026 - 11 - 22));
        assert_eq!(
            next_day(at()),
            time::macros::datetime!(2026-11-23 00:00 UTC)
        );
        let berlin = at().to_offset(time::macros::offset!(+1));
        assert_eq!(cap_day(berlin), time::macros::date!(2026 - 11 - 22));
    }

    #[test]
    fn signature_is_stripes_scheme() {
        let sig = webhook_signature("whsec_test", 1_700_000_000, b"{}");
        let expected = super::super::signature::sign(b"whsec_test", 1_700_000_000, b"{}");
        assert_eq!(sig, format!("t=1700000000,v1={expected}"));
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(
            super::super::signature::verify_signature(&sig, b"{}", &[b"whsec_test"], at),
            Ok(())
        );
    }
}
