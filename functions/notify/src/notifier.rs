//! [`Notifier`]: one event in, its messages claimed, sent and recorded.

use crate::context::MessageContext;
use crate::templates::Templates;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use printworks::domain::events::{EventEnvelope, EventType};
use printworks::domain::notify::{
    Channel, DailyCaps, Planned, notification_id, plan, redact_contacts, webhook_signature,
};
use printworks::domain::order::Order;
use printworks::domain::tenant::Tenant;
use printworks::ports::{
    Claim, Clock, EmailMessage, Mailer, MessageQueue, NotificationRecord, NotificationStatus,
    NotificationStore, OrderStore, Outgoing, SendError, SmsMessage, SmsSender, TenantStore,
    WebhookMessage, WebhookSender,
};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// The three ways out.
#[derive(Clone)]
pub struct Channels {
    pub mail: Arc<dyn Mailer>,
    pub sms: Arc<dyn SmsSender>,
    pub webhooks: Arc<dyn WebhookSender>,
}

pub struct Notifier {
    pub orders: Arc<dyn OrderStore>,
    pub tenants: Arc<dyn TenantStore>,
    pub ledger: Arc<dyn NotificationStore>,
    pub channels: Channels,
    pub templates: Arc<Templates>,
    pub caps: DailyCaps,
    pub clock: Arc<dyn Clock>,
    /// How long a claim keeps other senders off a message; a sender that
    /// dies holding one is replaced after this.
    pub lease: Duration,
    /// The first back-off of a failed queue message ([`backoff`]).
    pub backoff: Duration,
}

/// What became of one planned message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    AlreadySent,
    /// Over the daily cap: the sweep sends it at this time.
    Deferred(OffsetDateTime),
    /// Refused for good (a malformed address, a refused webhook target).
    Failed(String),
}

/// What handling one event did, per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Handled(Vec<(Channel, Delivery)>),
    Skipped(String),
}

/// A failure worth retrying (a store or a provider unavailable, another
/// sender holding a message): the queue message comes back.
pub use printworks::retry::Retry;

/// Back-off of a failed message before its next delivery: `base` (30 s
/// on AWS), doubled per delivery, at most an hour.
pub fn backoff(base: Duration, receive_count: u32) -> Duration {
    let exp = receive_count.saturating_sub(1).min(16);
    base.saturating_mul(1 << exp).min(Duration::from_secs(3600))
}

impl Notifier {
    #[tracing::instrument(skip_all, fields(order_id = %event.order_id, tenant = %event.tenant, event = %event.id))]
    pub async fn handle(&self, event: &EventEnvelope) -> Result<Outcome, Retry> {
        let Some(tenant) = self
            .tenants
            .tenant(&event.tenant)
            .await
            .map_err(|e| Retry(e.into()))?
        else {
            tracing::warn!("an event of an unknown tenant");
            return Ok(Outcome::Skipped("unknown tenant".into()));
        };
        let Some(order) = self
            .orders
            .get(&event.tenant, &event.order_id)
            .await
            .map_err(|e| Retry(e.into()))?
        else {
            tracing::warn!("an event of an unknown order");
            return Ok(Outcome::Skipped("unknown order".into()));
        };
        let planned = plan(event, &order, &tenant);
        if planned.is_empty() {
            return Ok(Outcome::Skipped(format!(
                "nobody is told of {}",
                event.event_type.as_str()
            )));
        }
        let mut done = Vec::new();
        let mut failure = None;
        for p in &planned {
            let result = match self.message(event, &order, &tenant, p) {
                Ok(message) => {
                    self.deliver(&self.record(event, &order, message), &tenant)
                        .await
                }
                // A template that cannot render is our bug: retried, then
                // dead-lettered, never silently dropped.
                Err(e) => Err(e),
            };
            match result {
                Ok(delivery) => done.push((p.channel, delivery)),
                Err(e) => {
                    tracing::warn!(channel = p.channel.as_str(), error = %format!("{e:#}"), "not sent; the event will be retried");
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(Retry(e)),
            None => Ok(Outcome::Handled(done)),
        }
    }

    /// Sends deferred messages that are due, up to `max`; returns what
    /// became of each. One failing message does not stop the others.
    pub async fn sweep(&self, max: usize) -> Result<Vec<(String, Delivery)>, Retry> {
        let due = self
            .ledger
            .due_deferred(self.clock.now(), max)
            .await
            .map_err(|e| Retry(e.into()))?;
        let mut out = Vec::new();
        let mut failure = None;
        for record in due {
            let tenant = match self.tenants.tenant(&record.tenant).await {
                Ok(Some(tenant)) => tenant,
                Ok(None) => {
                    self.ledger
                        .finish(
                            &record.id,
                            NotificationStatus::Failed {
                                reason: "the tenant no longer exists".into(),
                            },
                            self.clock.now(),
                        )
                        .await
                        .map_err(|e| Retry(e.into()))?;
                    continue;
                }
                Err(e) => {
                    failure.get_or_insert(anyhow::Error::from(e));
                    continue;
                }
            };
            match self.deliver(&record, &tenant).await {
                Ok(delivery) => out.push((record.id.clone(), delivery)),
                Err(e) => {
                    tracing::warn!(notification = %record.id, error = %format!("{e:#}"), "deferred message not sent; retried at the next sweep");
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) if out.is_empty() => Err(Retry(e)),
            _ => Ok(out),
        }
    }

    /// A Lambda batch: each record an event; failed records are reported
    /// (and, when `queue` is given, hidden for [`backoff`] first).
    pub async fn handle_sqs(
        &self,
        event: SqsEvent,
        queue: Option<&dyn MessageQueue>,
    ) -> SqsBatchResponse {
        let receipts: std::collections::HashMap<String, (String, u32)> = event
            .records
            .iter()
            .filter_map(|r| {
                let count = r
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Some((r.message_id.clone()?, (r.receipt_handle.clone()?, count)))
            })
            .collect();
        let response = printworks::sqs_batch::each_record("notify", event, |body, _| async move {
            let event: EventEnvelope = serde_json::from_str(&body)
                .map_err(|e| anyhow::anyhow!("not an event envelope: {e}"))?;
            self.handle(&event).await.map_err(|e| e.0)
        })
        .await;
        if let Some(queue) = queue {
            for failure in &response.batch_item_failures {
                if let Some((receipt, count)) = receipts.get(&failure.item_identifier)
                    && let Err(e) = queue
                        .change_visibility(receipt, backoff(self.backoff, *count))
                        .await
                {
                    // The message still comes back, after the queue's own timeout.
                    tracing::warn!(error = %e, "could not set the back-off");
                }
            }
        }
        response
    }

    /// Claims `record`, sends it if ours, and records the result.
    async fn deliver(
        &self,
        record: &NotificationRecord,
        tenant: &Tenant,
    ) -> anyhow::Result<Delivery> {
        let limit = self.caps.limit(&tenant.id, record.channel());
        let now = self.clock.now();
        let claimed = match self.ledger.claim(record, limit, now, self.lease).await? {
            Claim::Acquired(claimed) => claimed,
            Claim::AlreadySent => return Ok(Delivery::AlreadySent),
            Claim::AlreadyFailed => return Ok(Delivery::Failed("refused earlier".into())),
            Claim::Deferred(until) => {
                tracing::info!(notification = %record.id, channel = record.channel().as_str(), %until, "over the daily cap; deferred");
                return Ok(Delivery::Deferred(until));
            }
            Claim::InFlight(until) => {
                anyhow::bail!("another sender holds {} until {until}", record.id)
            }
        };
        match self.send(&claimed.message, tenant).await {
            Ok(provider_id) => {
                let sent = NotificationStatus::Sent {
                    at: self.clock.now(),
                    provider_id,
                };
                self.ledger
                    .finish(&claimed.id, sent, self.clock.now())
                    .await?;
                tracing::info!(notification = %claimed.id, channel = claimed.channel().as_str(), "sent");
                Ok(Delivery::Sent)
            }
            Err(SendError::Rejected(reason)) => {
                // Providers name the recipient in some refusals; neither the
                // log nor the record keeps an address or phone number.
                let reason = redact_contacts(&reason);
                tracing::warn!(notification = %claimed.id, channel = claimed.channel().as_str(), %reason, "refused for good");
                let failed = NotificationStatus::Failed {
                    reason: reason.clone(),
                };
                self.ledger
                    .finish(&claimed.id, failed, self.clock.now())
                    .await?;
                Ok(Delivery::Failed(reason))
            }
            Err(SendError::Unavailable(e)) => {
                self.ledger.release(&claimed.id).await?;
                Err(anyhow::anyhow!(
                    "sending {}: {}",
                    claimed.id,
                    redact_contacts(&format!("{e:#}"))
                ))
            }
        }
    }

    async fn send(&self, message: &Outgoing, tenant: &Tenant) -> Result<String, SendError> {
        match message {
            Outgoing::Email(mail) => self.channels.mail.send(mail).await,
            Outgoing::Sms(sms) => self.channels.sms.send(sms).await,
            Outgoing::Webhook(hook) => {
                let Some(config) = &tenant.notifications.webhook else {
                    return Err(SendError::Rejected(
                        "the tenant no longer has a webhook".into(),
                    ));
                };
                if config.url != hook.url {
                    return Err(SendError::Rejected(
                        "the tenant's webhook URL changed".into(),
                    ));
                }
                let signature = webhook_signature(
                    &config.secret,
                    self.clock.now().unix_timestamp(),
                    hook.body.as_bytes(),
                );
                self.channels
                    .webhooks
                    .post(&hook.url, &signature, &hook.body)
                    .await
            }
        }
    }

    /// The message a planned send carries, rendered now.
    fn message(
        &self,
        event: &EventEnvelope,
        order: &Order,
        tenant: &Tenant,
        planned: &Planned,
    ) -> anyhow::Result<Outgoing> {
        let id = notification_id(event, planned.channel, &planned.recipient);
        let brand = self.templates.brands().get(&tenant.brand);
        let ctx = MessageContext {
            brand,
            language: order.locale,
            fallback: tenant.default_locale,
            order,
            event,
        };
        Ok(match (planned.channel, planned.template) {
            (Channel::Email, Some(template)) => {
                let rendered = self.templates.email(template, &ctx)?;
                let domain = brand
                    .from_address
                    .rsplit_once('@')
                    .map(|(_, d)| d)
                    .unwrap_or("printworks.invalid");
                Outgoing::Email(Box::new(EmailMessage {
                    from_name: brand.from_name.clone(),
                    from_address: brand.from_address.clone(),
                    reply_to: Some(brand.support_email.clone()),
                    to_name: order.customer.name.clone(),
                    to_address: planned.recipient.clone(),
                    subject: rendered.subject,
                    text: rendered.text,
                    html: rendered.html,
                    language: order.locale.code().to_string(),
                    message_id: format!("{id}@{domain}"),
                }))
            }
            (Channel::Sms, Some(template)) => Outgoing::Sms(SmsMessage {
                id,
                to: planned.recipient.clone(),
                sender_id: brand.sms_sender_id.clone(),
                text: self.templates.sms(template, &ctx)?,
            }),
            (Channel::Webhook, _) => Outgoing::Webhook(WebhookMessage {
                url: planned.recipient.clone(),
                body: webhook_body(event, order)?,
            }),
            (channel, None) => anyhow::bail!("no template for a {} message", channel.as_str()),
        })
    }

    fn record(
        &self,
        event: &EventEnvelope,
        order: &Order,
        message: Outgoing,
    ) -> NotificationRecord {
        let recipient = match &message {
            Outgoing::Email(m) => m.to_address.as_str(),
            Outgoing::Sms(m) => m.to.as_str(),
            Outgoing::Webhook(m) => m.url.as_str(),
        };
        NotificationRecord {
            id: notification_id(event, message.channel(), recipient),
            tenant: order.tenant.clone(),
            order_id: order.id.clone(),
            event_id: event.id.clone(),
            event_type: event.event_type,
            message,
            status: NotificationStatus::Retry,
            attempts: 0,
            created_at: self.clock.now(),
        }
    }
}

/// The body a tenant's webhook gets: the event as it happened, with the
/// tenant's own order reference. What an operator wrote (the reason of a
/// release, reprint or cancel) and the plant an operator chose are the
/// shop's own records, as in the tenant API: left out.
pub fn webhook_body(event: &EventEnvelope, order: &Order) -> anyhow::Result<String> {
    let mut data = event.data.clone();
    let by_operator = event.event_type == EventType::OrderResumed
        || data.get("by").and_then(|v| v.as_str()) == Some("operator");
    if by_operator && let Some(fields) = data.as_object_mut() {
        fields.remove("reason");
        fields.remove("plant");
    }
    Ok(serde_json::to_string(&serde_json::json!({
        "id": event.id,
        "type": event.event_type.as_str(),
        "created": event.occurred_at.format(&time::format_description::well_known::Rfc3339)?,
        "tenant": event.tenant,
        "order_id": event.order_id,
        "reference": order.reference,
        "data": data,
    }))?)
}
