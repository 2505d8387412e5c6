//! events-publisher: relays outbox records from the orders table's DynamoDB
//! stream to the topic.
//!
//! [`handle`] takes a stream batch, keeps the `INSERT`s of `OUTBOX#` items
//! (the template's filter already drops the rest), publishes their events
//! through an [`EventPublisher`] (SNS on AWS, the local bus locally) and
//! reports the records that failed by sequence number, so Lambda retries
//! from there (partial batch response). Delivery is at least once: a
//! retried batch may publish an event again, and consumers deduplicate on
//! the event id. On AWS it then deletes the outbox items it published
//! ([`handle_and_clear`]): what stays is what the reconciler publishes.
//!
//! - [`config`]: [`Resources`] and `publisher_on_aws` (Lambda wiring).

pub mod config;
pub use config::Resources;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use printworks::domain::events::EventEnvelope;
use printworks::ports::{EventPublisher, ReconcileStore};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// Without a sequence number a failed record cannot be reported alone,
    /// so the whole batch fails and is retried.
    #[error("stream record {0} failed and has no sequence number")]
    MissingSequenceNumber(String),
    /// The fault switch (`PRINTWORKS_FAULTS=publisher-crash=P`): the batch
    /// was published and the invocation dies before the stream checkpoint,
    /// so the stream delivers the batch again.
    #[error("injected fault: crashed after publishing {0} events, before the checkpoint")]
    InjectedCrash(usize),
}

/// What was done with one batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub published: usize,
    pub skipped: usize,
    /// Sequence numbers of the records to retry.
    pub failed: Vec<String>,
    /// The ids of the events published: their outbox items go
    /// ([`handle_and_clear`]).
    pub published_ids: Vec<String>,
}

impl Outcome {
    pub fn response(&self) -> DynamoDbEventResponse {
        let mut response = DynamoDbEventResponse::default();
        response.batch_item_failures = self
            .failed
            .iter()
            .map(|seq| {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(seq.clone());
                failure
            })
            .collect();
        response
    }
}

fn string_attr<'a>(image: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    image.get(name)?.get("S")?.as_str()
}

/// [`handle`], then takes the published events out of the outbox
/// ([`ReconcileStore::mark_published`]), so what stays there is what the
/// reconciler must publish. A failed clean-up only logs: the events went
/// out, and the reconciler publishing them again is a duplicate consumers
/// drop.
pub async fn handle_and_clear(
    event: Event,
    publisher: &dyn EventPublisher,
    outbox: &dyn ReconcileStore,
) -> Result<Outcome, PublisherError> {
    let outcome = handle(event, publisher).await?;
    if !outcome.published_ids.is_empty()
        && let Err(e) = outbox.mark_published(&outcome.published_ids).await
    {
        tracing::warn!(
            error = %format!("{e:#}"),
            events = outcome.published_ids.len(),
            "published events left in the outbox; the reconciler will publish them again"
        );
    }
    Ok(outcome)
}

#[tracing::instrument(skip_all, fields(records = event.records.len()))]
pub async fn handle(
    event: Event,
    publisher: &dyn EventPublisher,
) -> Result<Outcome, PublisherError> {
    handle_with(event, publisher, printworks::faults::Faults::global()).await
}

/// [`handle`] with the given fault switch (a crash after publishing).
pub async fn handle_with(
    event: Event,
    publisher: &dyn EventPublisher,
    faults: &printworks::faults::Faults,
) -> Result<Outcome, PublisherError> {
    let mut outcome = Outcome::default();
    let mut envelopes = Vec::new();
    let mut sequence_of: HashMap<String, String> = HashMap::new();
    let fail = |outcome: &mut Outcome,
                record_id: &str,
                seq: &Option<String>|
     -> Result<(), PublisherError> {
        let seq = seq
            .clone()
            .ok_or_else(|| PublisherError::MissingSequenceNumber(record_id.to_string()))?;
        outcome.failed.push(seq);
        Ok(())
    };
    for record in &event.records {
        let seq = &record.change.sequence_number;
        let image = serde_json::to_value(&record.change.new_image).unwrap_or_default();
        let is_outbox = string_attr(&image, "pk").is_some_and(|pk| pk.starts_with("OUTBOX#"));
        if record.event_name != "INSERT" || !is_outbox {
            outcome.skipped += 1;
            continue;
        }
        match string_attr(&image, "event").map(serde_json::from_str::<EventEnvelope>) {
            Some(Ok(envelope)) => {
                if let Some(seq) = seq {
                    sequence_of.insert(envelope.id.clone(), seq.clone());
                }
                envelopes.push(envelope);
            }
            Some(Err(e)) => {
                tracing::error!(record = %record.event_id, error = %e, "outbox record holds no valid event");
                fail(&mut outcome, &record.event_id, seq)?;
            }
            None => {
                tracing::error!(record = %record.event_id, "outbox record without an event attribute");
                fail(&mut outcome, &record.event_id, seq)?;
            }
        }
    }
    if !envelopes.is_empty() {
        match publisher.publish(&envelopes).await {
            Ok(()) => {
                outcome.published = envelopes.len();
                outcome.published_ids = envelopes.iter().map(|e| e.id.clone()).collect();
            }
            Err(e) => {
                tracing::error!(error = %e, cause = ?e.cause, "publishing failed");
                outcome.published = envelopes.len() - e.failed.len();
                outcome.published_ids = envelopes
                    .iter()
                    .filter(|env| !e.failed.contains(&env.id))
                    .map(|env| env.id.clone())
                    .collect();
                for id in &e.failed {
                    let seq = sequence_of.get(id).cloned();
                    fail(&mut outcome, id, &seq)?;
                }
            }
        }
    }
    if outcome.published > 0 && faults.crash_publisher() {
        return Err(PublisherError::InjectedCrash(outcome.published));
    }
    outcome.failed.sort();
    outcome.failed.dedup();
    tracing::info!(
        published = outcome.published,
        skipped = outcome.skipped,
        failed = outcome.failed.len(),
        "batch relayed"
    );
    Ok(outcome)
}
