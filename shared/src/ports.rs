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
    /// Replaces the order if its stored rank is still `observed_rank`, and
    /// writes `events` to the outbox in the same transaction; otherwise
    /// [`StoreError::Conflict`].
    async fn transition(
        &self,
        next: &Order,
        observed_rank: u32,
        events: Vec<EventEnvelope>,
    ) -> Result<(), StoreError>;
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
