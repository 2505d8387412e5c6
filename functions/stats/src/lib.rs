//! The stats function: the business statistics kept as the events happen.
//! The `stats` queue receives the events the statistics count
//! ([`printworks::domain::stats::STATS_EVENTS`]) from the topic; each is
//! turned into its fact ([`printworks::domain::stats::fact`]) and added to
//! the counters of a [`StatsStore`] once per event id (the store writes
//! the event's mark and the counters in one transaction), so a message
//! delivered twice, or events in any order, count the same. Reading the
//! statistics (ops-api, `GET /v1/ops/stats`) reads those counters only.
//!
//! An event the projection cannot read (a field it counts missing) fails
//! and reaches the dead-letter queue after the queue's receives: it is
//! never half-counted, and a person sees it (`GET /v1/ops/dlq`).
//!
//! On AWS a Lambda of its own on the `stats` queue; locally a consumer of
//! the bus's `stats` queue in `printworks up`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use printworks::config::{ConfigError, Vars};
use printworks::domain::events::EventEnvelope;
use printworks::domain::stats::fact;
use printworks::ports::{StatsStore, StoreError};
use std::sync::Arc;

/// What handling one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its fact was added to the counters.
    Counted,
    /// Counted before (a delivery again), or a shipment of an order whose
    /// first shipment was.
    AlreadyCounted,
    /// An event the statistics do not count.
    NotCounted,
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Not an event, or one missing what is counted: retrying cannot help;
    /// it goes to the dead-letter queue for a person.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Store trouble, or counters busy with other events: retried.
    #[error(transparent)]
    Retry(#[from] anyhow::Error),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Conflict => Failure::Retry(anyhow::anyhow!(
                "the counters stayed busy; the event will come back"
            )),
            StoreError::Unexpected(e) => Failure::Retry(e),
        }
    }
}

/// The AWS resources the stats Lambda uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// The statistics live in the orders table (`STATS#...` items).
    pub orders_table: String,
}

impl Resources {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Resources, ConfigError> {
        Ok(Resources {
            orders_table: vars.required("ORDERS_TABLE")?,
        })
    }
}

pub struct Stats {
    pub store: Arc<dyn StatsStore>,
}

impl Stats {
    pub fn new(store: Arc<dyn StatsStore>) -> Stats {
        Stats { store }
    }

    /// The Lambda's handler: the counters in DynamoDB.
    #[cfg(feature = "aws")]
    pub fn on_aws(sdk: &printworks::adapters::aws::SdkConfig, aws: &Resources) -> Stats {
        Stats::new(Arc::new(
            printworks::adapters::aws::dynamodb::DynamoStore::from_sdk(sdk, &aws.orders_table),
        ))
    }

    /// Handles one message body: an event envelope.
    #[tracing::instrument(skip_all, fields(event_id, event_type))]
    pub async fn handle(&self, body: &str) -> Result<Outcome, Failure> {
        let event: EventEnvelope = serde_json::from_str(body)
            .map_err(|e| Failure::Rejected(format!("not an event envelope: {e}")))?;
        let span = tracing::Span::current();
        span.record("event_id", event.id.as_str());
        span.record("event_type", event.event_type.as_str());
        let Some(fact) = fact(&event).map_err(|e| Failure::Rejected(e.to_string()))? else {
            return Ok(Outcome::NotCounted);
        };
        Ok(if self.store.apply(&event.id, &fact).await? {
            Outcome::Counted
        } else {
            Outcome::AlreadyCounted
        })
    }

    /// The Lambda's batch: failed records are reported back to SQS.
    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        printworks::sqs_batch::each_record("stats", event, |body, _| async move {
            self.handle(&body).await.map_err(anyhow::Error::from)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
