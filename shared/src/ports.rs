//! Ports: one small trait per capability. Handlers take `&dyn Port`; the
//! `aws` and `local` adapter families implement them.

use crate::domain::events::EventEnvelope;
use crate::domain::order::{Order, OrderId};
use crate::domain::tenant::{ApiKeyRecord, Tenant, TenantId};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: the record changed since it was read.
    #[error("the record changed concurrently")]
    Conflict,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A response kept with its idempotency key, replayed for a repeated request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// The JSON body exactly as it was sent.
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    /// SHA-256 of the canonical request body.
    pub request_hash: String,
    pub response: StoredResponse,
}

/// An order to create, the events that announce it and the idempotency
/// record: written together in one transaction, or not at all.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order: Order,
    pub events: Vec<EventEnvelope>,
    pub idempotency: IdempotencyRecord,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceOutcome {
    Created,
    /// The key was used before with the same body: its response.
    Replayed(StoredResponse),
    /// The key was used before with another body.
    KeyReused,
}

#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;
    async fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
}

#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Creates the order with its events (outbox) and idempotency record.
    async fn place(&self, new: NewOrder) -> Result<PlaceOutcome, StoreError>;
    async fn get(&self, tenant: &TenantId, id: &OrderId) -> Result<Option<Order>, StoreError>;
    /// Replaces the order if its stored rank and version are still those of
    /// `observed` (what the caller read), and writes `events` to the outbox
    /// in the same transaction; otherwise [`StoreError::Conflict`]. `next`
    /// must be `observed`'s successor (version + 1).
    async fn transition(
        &self,
        next: &Order,
        observed: &Order,
        events: Vec<EventEnvelope>,
    ) -> Result<(), StoreError>;
}

/// Checks the one rule every store's `transition` relies on.
pub fn check_successor(next: &Order, observed: &Order) -> Result<(), StoreError> {
    if next.version != observed.version + 1 || next.id != observed.id {
        return Err(StoreError::Unexpected(anyhow::anyhow!(
            "order {} written as version {} over version {}: use Order::successor",
            next.id,
            next.version,
            observed.version
        )));
    }
    Ok(())
}

/// The orders' production side: the plants' open-job counts, kept in the
/// same transactions as the orders that change them.
#[async_trait]
pub trait ProductionStore: Send + Sync {
    /// Jobs dispatched to each of `plants` and not yet shipped or failed.
    async fn open_jobs(&self, plants: &[String]) -> Result<BTreeMap<String, i64>, StoreError>;
    /// [`OrderStore::transition`], adding `delta` to `plant`'s open jobs in
    /// the same transaction.
    async fn transition_counted(
        &self,
        next: &Order,
        observed: &Order,
        events: Vec<EventEnvelope>,
        plant: &str,
        delta: i64,
    ) -> Result<(), StoreError>;
}

/// A provider event as received, kept once per (provider, event id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub provider: String,
    pub event_id: String,
    pub event_type: String,
    /// `applied`, `no_change`, `ignored`, `unmatched` or a flag code.
    pub outcome: String,
    /// `{tenant}:{order}` when the event was matched to an order.
    pub order: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The event in our terms (never the raw body: no card or customer data).
    pub notification: crate::domain::payment::PaymentNotification,
}

/// Everything one provider event does, written in one transaction: the
/// record (only if no record of this event exists), the order (only if it
/// is still as read), its outbox events, and the provider's payment id ->
/// order index.
#[derive(Debug, Clone)]
pub struct PaymentWrite {
    pub record: PaymentRecord,
    /// The new order and the order as it was read.
    pub order: Option<(Order, Order)>,
    pub events: Vec<EventEnvelope>,
    /// (payment id, tenant, order): later events that carry only the
    /// provider's payment id (a Stripe dispute) find the order by it.
    pub payment_index: Option<(String, TenantId, OrderId)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentWriteOutcome {
    Recorded,
    /// This provider event was recorded before: nothing was written.
    Duplicate,
}

#[async_trait]
pub trait PaymentStore: Send + Sync {
    async fn payment_record(
        &self,
        provider: &str,
        event_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError>;
    /// Writes `write` atomically. A record of the same event wins over
    /// everything ([`PaymentWriteOutcome::Duplicate`]); an order changed
    /// since it was read is [`StoreError::Conflict`].
    async fn record_payment(&self, write: PaymentWrite) -> Result<PaymentWriteOutcome, StoreError>;
    /// The order a provider's payment id was seen with.
    async fn order_for_payment(
        &self,
        provider: &str,
        payment_id: &str,
    ) -> Result<Option<(TenantId, OrderId)>, StoreError>;
}

/// A request a client makes directly to the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignedRequest {
    pub method: String,
    pub url: String,
    /// Headers the client must send exactly as given.
    pub headers: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// A PUT URL for exactly `content_length` bytes of `content_type`.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        ttl: Duration,
    ) -> Result<PresignedRequest, StoreError>;
    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<PresignedRequest, StoreError>;
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
#[error("{} of {total} events not published: {cause}", failed.len())]
pub struct PublishError {
    /// Ids of the events that were not published.
    pub failed: Vec<String>,
    pub total: usize,
    pub cause: anyhow::Error,
}

#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes to the topic with the event type as an attribute, so queues
    /// can filter on it.
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PublishError>;
}

/// Where the payment providers' webhook secrets come from (Secrets Manager
/// on AWS, a file locally). Read at start and again after a while, so a
/// rotated secret is picked up without a deployment.
#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn webhook_secrets(&self) -> Result<crate::webhooks::WebhookSecrets, StoreError>;
}

/// Secrets known up front (the local runner reads its file once).
pub struct FixedSecrets(pub crate::webhooks::WebhookSecrets);

#[async_trait]
impl SecretSource for FixedSecrets {
    async fn webhook_secrets(&self) -> Result<crate::webhooks::WebhookSecrets, StoreError> {
        Ok(self.0.clone())
    }
}

/// A message received from a queue; delete it by its receipt when done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub message_id: String,
    /// Valid until the message is received again.
    pub receipt: String,
    pub body: String,
    /// Deliveries so far, this one included (SQS `ApproximateReceiveCount`).
    pub receive_count: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue could not be reached or refused the call; try again later.
    #[error("queue unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// The receipt is no longer valid (the message was received again or
    /// deleted): the caller's hold on the message is gone.
    #[error("stale receipt")]
    StaleReceipt,
    /// Some messages of a batch were not sent: their indexes in the batch.
    #[error("{} of the batch not sent: {cause:#}", failed.len())]
    NotSent {
        failed: Vec<usize>,
        cause: anyhow::Error,
    },
}

/// A point-to-point queue (SQS, or the local bus): plant job queues and the
/// `plant-events` queue. Messages are delivered at least once.
#[async_trait]
pub trait MessageQueue: Send + Sync {
    /// Waits up to `wait` for up to `max` (1..=10) messages, hiding each for
    /// the queue's visibility timeout.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<QueueMessage>, QueueError>;
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;
    /// Hides a received message for `timeout` from now.
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError>;
    /// Sends every body, in batches of at most 10; reports the ones that
    /// were not sent.
    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError>;
}

/// A clock tests move by hand (SQS visibility, URL expiry) instead of sleeping.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> ManualClock {
        ManualClock(std::sync::Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
