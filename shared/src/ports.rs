//! Ports: one small trait per capability. Handlers take `&dyn Port`; the
//! `aws` and `local` adapter families implement them.

use crate::domain::events::EventEnvelope;
use crate::domain::operator::{Operator, OperatorId, OperatorKeyRecord};
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

/// What time it is. [`crate::clock`] holds the wall clock
/// (`SystemClock`) and the clock tests move by hand (`ManualClock`).
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
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

/// The operators and their keys (`printworks operator add`, the operator
/// API's authentication).
#[async_trait]
pub trait OperatorStore: Send + Sync {
    async fn operator_key(&self, key_id: &str) -> Result<Option<OperatorKeyRecord>, StoreError>;
    async fn operator(&self, id: &OperatorId) -> Result<Option<Operator>, StoreError>;
    /// Adds the operator with its first key, both or neither;
    /// [`StoreError::Conflict`] if the operator id is taken.
    async fn add_operator(
        &self,
        operator: &Operator,
        key: &OperatorKeyRecord,
    ) -> Result<(), StoreError>;
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

/// A person's action on an order (an operator's, or a customer's through
/// the tenant API), written as one transaction: the order (only if it is
/// still as read), its outbox events, the plants' open-job counts it
/// changes, and the idempotency record of the caller's key (only if that
/// key was not used before in `scope`).
#[derive(Debug, Clone)]
pub struct OpsWrite {
    /// Whose keys: [`ops_scope`] of the operator, or the tenant's id.
    pub scope: String,
    pub next: Order,
    pub observed: Order,
    pub events: Vec<EventEnvelope>,
    /// Plant -> jobs added to its open-job count (jobs made anew).
    pub open_jobs: BTreeMap<String, i64>,
    pub idempotency: IdempotencyRecord,
}

/// What the operator API needs beyond [`OrderStore`]: any tenant's order
/// by its id, and actions written with the operator's idempotency key.
/// Operators' keys are their own: one operator's key never replays
/// another's request, nor a tenant's.
#[async_trait]
pub trait OpsStore: Send + Sync {
    /// An order by its id alone, whatever its tenant.
    async fn find_order(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;
    /// The earlier request under `key` in `scope` (an operator's
    /// [`ops_scope`], or a tenant's id), if any.
    async fn ops_request(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Writes `write` atomically: [`PlaceOutcome::Created`]; the key's
    /// earlier response ([`PlaceOutcome::Replayed`], nothing written) or
    /// [`PlaceOutcome::KeyReused`] if the key was used before in the scope;
    /// [`StoreError::Conflict`] if the order changed since it was read.
    async fn act(&self, write: OpsWrite) -> Result<PlaceOutcome, StoreError>;
    /// Orders that need a person ([`Order::needs_attention`]: an open
    /// payment flag or refund request, or stuck), least recently changed
    /// first, at most `limit`. Kept as an index beside the orders, written
    /// in each order's transaction.
    async fn needing_attention(&self, limit: usize) -> Result<Vec<Order>, StoreError>;
    /// Orders on hold, longest held first (least recently changed), at
    /// most `limit`: the stores' index by state and last write (SQLite
    /// `orders_idle`; DynamoDB's `idle` index, which keeps held orders
    /// beside the reconciler's watched states).
    async fn held_orders(&self, limit: usize) -> Result<Vec<Order>, StoreError>;
    /// The orders `query` finds, newest first, a page of at most
    /// `query.limit`; `None` from a store that keeps no search indexes.
    async fn search(&self, query: &SearchQuery) -> Result<Option<SearchPage>, StoreError> {
        let _ = query;
        Ok(None)
    }
    /// Keeps the record of a person's action that changes no order (a
    /// redrive of dead letters) under its key in `scope`: what
    /// [`OpsStore::act`] keeps beside an order's write, alone.
    /// [`PlaceOutcome::Created`], or the key's earlier outcome.
    async fn record_request(
        &self,
        scope: &str,
        idempotency: IdempotencyRecord,
    ) -> Result<PlaceOutcome, StoreError>;
}

/// What an operator searches orders by: any of the keys, narrowed by
/// tenant, state and the days placed (UTC, both included); newest first,
/// after `after` (the last order of the page before).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    pub order_id: Option<OrderId>,
    pub reference: Option<String>,
    /// Compared without case.
    pub email: Option<String>,
    /// A parcel's tracking number.
    pub tracking: Option<String>,
    pub tenant: Option<TenantId>,
    pub state: Option<crate::domain::state::OrderState>,
    pub from: Option<time::Date>,
    pub to: Option<time::Date>,
    /// Placed before this (created_at, id), newest first.
    pub after: Option<(OffsetDateTime, OrderId)>,
    pub limit: usize,
}

/// A page of found orders, and whether more follow.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub orders: Vec<Order>,
    pub more: bool,
}

/// The events as they were published, in that order: what the console's
/// live updates follow. A position is opaque and only grows.
#[async_trait]
pub trait EventFeed: Send + Sync {
    /// The position of the last event published (0 before any): where a
    /// new follower starts.
    async fn feed_end(&self) -> Result<i64, StoreError>;
    /// Events published after `position`, oldest first, at most `limit`,
    /// each with its position.
    async fn feed_after(
        &self,
        position: i64,
        limit: usize,
    ) -> Result<Vec<(i64, EventEnvelope)>, StoreError>;
}

/// The statistics projection's counters ([`crate::domain::stats`]).
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Adds `fact`, of the event `event_id`, to the counters once, in one
    /// transaction with the event's mark: `false` when the event was
    /// counted before, or when it is a shipment of an order whose first
    /// shipment was.
    async fn apply(
        &self,
        event_id: &str,
        fact: &crate::domain::stats::Fact,
    ) -> Result<bool, StoreError>;
    /// The counters of `query`'s days (its tenant's revenue and holds, its
    /// plant's lead times, when it names them).
    async fn counts(
        &self,
        query: &crate::domain::stats::StatsQuery,
    ) -> Result<crate::domain::stats::Counts, StoreError>;
}

/// What the reconciler reads: idle orders by state, and outbox events
/// that were never published. Both are indexes the stores keep in the
/// writes themselves (SQLite: `orders (state, updated_at)` and the outbox
/// table; DynamoDB: the sparse `idle` index), so nothing is scanned.
#[async_trait]
pub trait ReconcileStore: Send + Sync {
    /// Orders in `state` last written at or before `before`, least recently
    /// written first, at most `limit`.
    async fn idle_orders(
        &self,
        state: crate::domain::state::OrderState,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Order>, StoreError>;
    /// Outbox events written before `before` and still unpublished,
    /// oldest first, at most `limit`.
    async fn unpublished(
        &self,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError>;
    /// Takes published events out of the outbox (ids it no longer holds
    /// are skipped).
    async fn mark_published(&self, event_ids: &[String]) -> Result<(), StoreError>;
}

/// The idempotency scope of an operator's requests: never a tenant id
/// (tenant ids have no `:`), so the two kinds of keys cannot meet.
pub fn ops_scope(operator: &OperatorId) -> String {
    format!("ops:{operator}")
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
    /// What a plant's report on `job_id` needs: the order (without its
    /// production), its production record and the job's record, if one is
    /// stored. `None` when the order is unknown, was never dispatched, or
    /// was stored before jobs were records of their own: then the report
    /// is applied to the whole order ([`OrderStore::get`]).
    async fn job_view(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        job_id: &str,
    ) -> Result<Option<JobView>, StoreError>;
    /// Writes one report's change atomically: the job's record, the
    /// production record (only if its revision is still the one read), the
    /// order if it changed (only if still as read), the outbox events and
    /// the plant's open-job count; otherwise [`StoreError::Conflict`].
    async fn record_job(&self, write: JobWrite) -> Result<(), StoreError>;
    /// `plant`'s agent reported at `at` (any report, whether it changed
    /// anything or not): kept as its last report unless a later one is.
    async fn plant_reported(&self, plant: &str, at: OffsetDateTime) -> Result<(), StoreError>;
    /// For each of `plants`: when its agent last reported, and the jobs it
    /// shipped on `day` (UTC), counted by [`ProductionStore::record_job`].
    async fn plant_activity(
        &self,
        plants: &[String],
        day: time::Date,
    ) -> Result<BTreeMap<String, PlantActivity>, StoreError>;
}

/// [`ProductionStore::plant_activity`]: one plant's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlantActivity {
    pub last_report: Option<OffsetDateTime>,
    pub shipped: u32,
}

/// [`ProductionStore::job_view`].
#[derive(Debug, Clone)]
pub struct JobView {
    /// The order; its `production` is not read.
    pub order: Order,
    pub record: crate::domain::job_records::ProductionRecord,
    pub job: Option<crate::domain::production::JobRecord>,
}

/// [`ProductionStore::record_job`].
#[derive(Debug, Clone)]
pub struct JobWrite {
    pub tenant: TenantId,
    pub order_id: OrderId,
    pub job: crate::domain::production::JobRecord,
    /// The new record; written with revision `observed_revision + 1`.
    pub record: crate::domain::job_records::ProductionRecord,
    pub observed_revision: u64,
    /// (next, observed) when the order's state changes.
    pub order: Option<(Order, Order)>,
    pub events: Vec<EventEnvelope>,
    pub plant: String,
    pub open_jobs_delta: i64,
    /// The job shipped with this report (counted as shipped by `plant`
    /// on the day of the job's `status_at`).
    pub shipped: bool,
}

impl JobWrite {
    /// The UTC day a `shipped` write counts for its plant: that of the
    /// job's `status_at` (today if it has none); `None` if not shipped.
    pub fn shipped_on(&self) -> Option<time::Date> {
        self.shipped.then(|| {
            self.job.status_at.map_or_else(
                || OffsetDateTime::now_utc().date(),
                |at| at.to_offset(time::UtcOffset::UTC).date(),
            )
        })
    }
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
    /// The first `len` bytes of the object (all of it if shorter), or
    /// `None` if there is none: enough to tell what kind of file it is.
    async fn get_head(&self, key: &str, len: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(key).await?.map(|mut bytes| {
            bytes.truncate(len);
            bytes
        }))
    }
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

// ---------------------------------------------------------- notifications --

/// A dead-letter queue: the queue its messages gave up on (`queue`, as
/// [`crate::topology`] names it: `render`, `dispatch`, `notify`,
/// `plant-events`, `plant-<id>-jobs`) and how many it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterQueue {
    pub queue: String,
    pub dead_letter_queue: String,
    pub depth: u64,
}

/// A message in a dead-letter queue, as it is (never changed by a look).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub body: String,
    /// How often it was received (SQS's `ApproximateReceiveCount`; the
    /// local bus counts again from 0 in the dead-letter queue).
    pub receive_count: u32,
    /// When it was sent to the queue it failed in (SQS), or dead-lettered
    /// (the local bus).
    pub at: Option<OffsetDateTime>,
}

/// What a redrive started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redrive {
    /// Messages moved back (the local bus moves them at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved: Option<u64>,
    /// SQS's message move task (`TaskHandle`): it moves the messages
    /// in the background.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// The dead-letter queues, for people: their depth, a look at their
/// messages, and sending them back to the queue they came from (the local
/// bus; SQS's message move tasks). Consumers are idempotent, so a message
/// that was handled meanwhile changes nothing when it comes back.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Every dead-letter queue with its depth.
    async fn dead_letter_queues(&self) -> Result<Vec<DeadLetterQueue>, QueueError>;
    /// Up to `max` messages of `queue`'s dead-letter queue, left there;
    /// `None` for a queue that has none.
    async fn dead_letters(
        &self,
        queue: &str,
        max: usize,
    ) -> Result<Option<Vec<DeadLetter>>, QueueError>;
    /// Sends every message of `queue`'s dead-letter queue back to `queue`;
    /// `None` for a queue that has none.
    async fn redrive(&self, queue: &str) -> Result<Option<Redrive>, QueueError>;
}

/// An e-mail ready to send: every channel (SES, SMTP, the outbox folder)
/// sends the same MIME message built from it ([`EmailMessage::to_mime`],
/// in [`crate::adapters::mime`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailMessage {
    /// `"Brand Name" <orders@brand.example>`'s parts.
    pub from_name: String,
    pub from_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    pub to_name: String,
    pub to_address: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// `Content-Language`.
    pub language: String,
    /// `Message-ID` without the angle brackets (`<notification id>@<domain>`):
    /// the same for every attempt of one notification.
    pub message_id: String,
}

/// A text message ready to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsMessage {
    /// The notification's id (the outbox file's name; a provider reference).
    pub id: String,
    /// E.164 (`+4915112345678`).
    pub to: String,
    /// The brand's alphanumeric sender id, where the country allows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    pub text: String,
}

/// A tenant webhook ready to send; signed at each attempt with the
/// tenant's secret (never stored with the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookMessage {
    pub url: String,
    /// The JSON body, the same bytes at every attempt.
    pub body: String,
}

/// What one notification sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "lowercase")]
pub enum Outgoing {
    Email(Box<EmailMessage>),
    Sms(SmsMessage),
    Webhook(WebhookMessage),
}

impl Outgoing {
    pub fn channel(&self) -> crate::domain::notify::Channel {
        use crate::domain::notify::Channel;
        match self {
            Outgoing::Email(_) => Channel::Email,
            Outgoing::Sms(_) => Channel::Sms,
            Outgoing::Webhook(_) => Channel::Webhook,
        }
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The provider refused this message for good (a malformed address, a
    /// refused webhook target): retrying cannot help.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The provider could not be reached or failed; try again later.
    #[error("unavailable: {0:#}")]
    Unavailable(anyhow::Error),
}

/// Sends e-mail (SES, SMTP, or `.eml` files in an outbox folder). Returns
/// the provider's message id.
#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, mail: &EmailMessage) -> Result<String, SendError>;
}

/// Sends text messages (SNS, or files in an outbox folder).
#[async_trait]
pub trait SmsSender: Send + Sync {
    async fn send(&self, sms: &SmsMessage) -> Result<String, SendError>;
}

/// POSTs a signed webhook (`signature` goes in
/// [`crate::domain::notify::WEBHOOK_SIGNATURE_HEADER`]). Returns the
/// receiver's status line.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    async fn post(&self, url: &str, signature: &str, body: &str) -> Result<String, SendError>;
}

/// Where a notification stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NotificationStatus {
    /// Claimed by a sender until `lease_until`; counted on `counted_day`.
    Sending {
        #[serde(with = "time::serde::rfc3339")]
        lease_until: OffsetDateTime,
        counted_day: time::Date,
    },
    Sent {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        provider_id: String,
    },
    /// Over the daily cap: due at `until` (the next day), then sent.
    Deferred {
        #[serde(with = "time::serde::rfc3339")]
        until: OffsetDateTime,
    },
    /// Refused for good (never retried): why.
    Failed { reason: String },
    /// A send failed and was released; the next delivery claims it again.
    Retry,
}

impl NotificationStatus {
    /// What a claim at `now` finds before it looks at the counter: a
    /// [`Claim`] when the record cannot be taken (sent, refused, leased by
    /// another sender, deferred to a later time); `None` when it can (new,
    /// released, its lease or its deferral over). Every store's `claim`
    /// decides by this.
    pub fn blocks_claim(&self, now: OffsetDateTime) -> Option<Claim> {
        match self {
            NotificationStatus::Sent { .. } => Some(Claim::AlreadySent),
            NotificationStatus::Failed { .. } => Some(Claim::AlreadyFailed),
            NotificationStatus::Sending { lease_until, .. } if *lease_until > now => {
                Some(Claim::InFlight(*lease_until))
            }
            NotificationStatus::Deferred { until } if *until > now => Some(Claim::Deferred(*until)),
            _ => None,
        }
    }
}

/// One notification: the key (order, event, channel, recipient) as its
/// id, the rendered message, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// [`crate::domain::notify::notification_id`].
    pub id: String,
    pub tenant: TenantId,
    pub order_id: OrderId,
    pub event_id: String,
    pub event_type: crate::domain::events::EventType,
    pub message: Outgoing,
    #[serde(flatten)]
    pub status: NotificationStatus,
    /// Claims so far.
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl NotificationRecord {
    pub fn channel(&self) -> crate::domain::notify::Channel {
        self.message.channel()
    }
}

/// What [`NotificationStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to send: counted against today's cap, leased to us.
    Acquired(Box<NotificationRecord>),
    AlreadySent,
    /// Refused for good earlier.
    AlreadyFailed,
    /// Another sender holds it (its lease runs until then).
    InFlight(OffsetDateTime),
    /// Over the cap (now or earlier): it waits for this time, and the
    /// deferred sweep sends it then.
    Deferred(OffsetDateTime),
}

/// The notification ledger: one record per (order, event, channel,
/// recipient), and each tenant's per-channel, per-day send counter.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Atomically, for `candidate.id` (created from `candidate` if new):
    /// - sent or failed: say so, change nothing;
    /// - leased by another sender (lease not over): [`Claim::InFlight`];
    /// - deferred to a time still ahead: [`Claim::Deferred`];
    /// - otherwise, if the counter of (tenant, channel, `now`'s UTC day) is
    ///   below `limit`: add one to it and lease the record until
    ///   `now + lease` ([`Claim::Acquired`]); at or above `limit`: defer
    ///   the record to the start of the next day ([`Claim::Deferred`]).
    ///
    /// Two concurrent claims of one id never both acquire, and the counter
    /// never passes `limit` however many claim at once.
    async fn claim(
        &self,
        candidate: &NotificationRecord,
        limit: u32,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<Claim, StoreError>;
    /// Marks an acquired record sent (or failed for good).
    async fn finish(
        &self,
        id: &str,
        status: NotificationStatus,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// A send failed and may be retried: the record goes back to
    /// [`NotificationStatus::Retry`] and its day's counter down by one.
    async fn release(&self, id: &str) -> Result<(), StoreError>;
    /// Deferred records due at `now` (oldest due first), at most `max`.
    async fn due_deferred(
        &self,
        now: OffsetDateTime,
        max: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError>;
    async fn notification(&self, id: &str) -> Result<Option<NotificationRecord>, StoreError>;
    /// Sends counted for (tenant, channel) on `day`.
    async fn sent_on(
        &self,
        tenant: &TenantId,
        channel: crate::domain::notify::Channel,
        day: time::Date,
    ) -> Result<u32, StoreError>;
    /// The notifications of one order (every channel, any status), oldest
    /// first: what the console's order page lists (never the bodies).
    async fn for_order(
        &self,
        tenant: &TenantId,
        order: &OrderId,
    ) -> Result<Vec<NotificationRecord>, StoreError>;
    /// Per UTC day in `from..=to` (of `tenant`, or every tenant's), per
    /// channel: the sends counted against the daily cap and the
    /// notifications deferred to the next day because the cap was reached.
    /// Kept as the claims happen, in their transactions; rows with both
    /// zero may be left out. Sorted by day, tenant, channel.
    async fn send_counts(
        &self,
        from: time::Date,
        to: time::Date,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<SendCount>, StoreError>;
}

/// [`NotificationStore::send_counts`]: one (day, tenant, channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendCount {
    pub day: time::Date,
    pub tenant: TenantId,
    pub channel: crate::domain::notify::Channel,
    pub sent: u32,
    pub deferred: u32,
}
