//! Dead letters for people: the dead-letter queues with their depths, a
//! look at a queue's messages (what each is, never its personal data), and
//! a redrive back to the queue it came from, once per Idempotency-Key and
//! kept in the operator's key scope as the record of who did it, when.
//! Consumers are idempotent, so a message handled meanwhile (an order that
//! moved on) changes nothing when it comes back.

use crate::Answer;
use crate::ops::{Ops, internal, not_for_role, replay_or_refuse, rfc3339};
use axum::http::StatusCode;
use order_api::ApiError;
use printworks::domain::events::EventEnvelope;
use printworks::domain::operator::{Operator, OpsAction};
use printworks::domain::production::{Job, JobCancel, JobStatusReport};
use printworks::ports::{
    DeadLetter, DeadLetters, IdempotencyRecord, PlaceOutcome, QueueError, StoredResponse, ops_scope,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The most messages one look shows.
pub const SHOWN: usize = 10;

fn unavailable(e: QueueError) -> ApiError {
    tracing::error!(error = %e, "dead-letter queues unavailable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "queues_unavailable",
        "the queues could not be reached; try again",
    )
}

fn no_such_queue(queue: &str, known: &[String]) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no queue {queue:?} with a dead-letter queue; the queues are: {}",
            known.join(", ")
        ),
    )
    .with_details(json!({ "queues": known }))
}

/// What a dead letter is, from its body, without the personal data some
/// bodies carry (a job's address): an event's id, type and order; a
/// job's or a report's id; or only its size.
pub fn describe(letter: &DeadLetter) -> Value {
    let what = if let Ok(event) = serde_json::from_str::<EventEnvelope>(&letter.body) {
        json!({
            "kind": "event", "event_id": event.id, "type": event.event_type.as_str(),
            "order_id": event.order_id, "tenant": event.tenant,
            "occurred_at": rfc3339(event.occurred_at),
        })
    } else if let Ok(job) = serde_json::from_str::<Job>(&letter.body) {
        json!({ "kind": "job", "job_id": job.job_id, "order_id": job.order_id, "plant": job.plant })
    } else if let Ok(cancel) = serde_json::from_str::<JobCancel>(&letter.body) {
        json!({ "kind": "job_cancel", "order_id": cancel.order_id, "jobs": cancel.cancel_jobs.len() })
    } else if let Ok(report) = JobStatusReport::parse(&letter.body) {
        json!({ "kind": "job_report", "job_id": report.job_id, "status": report.status.as_str() })
    } else {
        json!({ "kind": "unreadable" })
    };
    json!({
        "message_id": letter.message_id,
        "receive_count": letter.receive_count,
        "at": letter.at.map(rfc3339),
        "bytes": letter.body.len(),
        "message": what,
    })
}

impl Ops {
    /// The dead-letter queues' port, with `queue` in it (else 404 naming
    /// the queues), to an operator who may redrive (support, admin).
    async fn queues_for(
        &self,
        operator: &Operator,
        queue: Option<&str>,
    ) -> Result<
        (
            Arc<dyn DeadLetters>,
            Vec<printworks::ports::DeadLetterQueue>,
        ),
        ApiError,
    > {
        if !operator.role.may(OpsAction::Redrive, None) {
            return Err(not_for_role(operator, "look at or redrive dead letters"));
        }
        let port = self.dead_letters.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queues_unavailable",
                "the dead-letter queues are not reachable from here: use the deployment's operator API",
            )
        })?;
        let queues = port.dead_letter_queues().await.map_err(unavailable)?;
        if let Some(queue) = queue
            && !queues.iter().any(|q| q.queue == queue)
        {
            let known: Vec<String> = queues.iter().map(|q| q.queue.clone()).collect();
            return Err(no_such_queue(queue, &known));
        }
        Ok((port, queues))
    }

    /// Every dead-letter queue with its depth.
    pub async fn dead_letter_queues(&self, operator: &Operator) -> Result<Value, ApiError> {
        let (_, queues) = self.queues_for(operator, None).await?;
        Ok(json!({ "queues": queues }))
    }

    /// A look at `queue`'s dead letters (at most [`SHOWN`]), left there.
    pub async fn dead_letters(&self, operator: &Operator, queue: &str) -> Result<Value, ApiError> {
        let (port, queues) = self.queues_for(operator, Some(queue)).await?;
        let letters = port
            .dead_letters(queue, SHOWN)
            .await
            .map_err(unavailable)?
            .unwrap_or_default();
        let depth = queues
            .iter()
            .find(|q| q.queue == queue)
            .map_or(0, |q| q.depth);
        Ok(json!({
            "queue": queue,
            "depth": depth,
            "messages": letters.iter().map(describe).collect::<Vec<_>>(),
        }))
    }

    /// Sends `queue`'s dead letters back to it, once per `key` (a repeat
    /// gets the first answer; the key with another queue a 422).
    pub async fn redrive(
        &self,
        operator: &Operator,
        queue: &str,
        key: &str,
    ) -> Result<Answer, ApiError> {
        let scope = ops_scope(&operator.id);
        let fingerprint = hex::encode(Sha256::digest(format!("redrive\n{queue}")));
        if let Some(earlier) = self.store.ops_request(&scope, key).await? {
            return replay_or_refuse(earlier.request_hash == fingerprint, earlier.response);
        }
        let (port, queues) = self.queues_for(operator, Some(queue)).await?;
        let depth = queues
            .iter()
            .find(|q| q.queue == queue)
            .map_or(0, |q| q.depth);
        let redrive = port
            .redrive(queue)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| no_such_queue(queue, &[]))?;
        let body = json!({
            "queue": queue,
            "depth_before": depth,
            "redrive": redrive,
            "action": {
                "action": "redrive", "operator": operator.id,
                "at": rfc3339(self.clock.now()),
            },
        });
        let response = StoredResponse {
            status: 200,
            body: serde_json::to_string(&body).map_err(internal)?,
        };
        let record = IdempotencyRecord {
            key: key.to_string(),
            request_hash: fingerprint,
            response: response.clone(),
        };
        tracing::info!(
            operator = operator.id.as_str(),
            queue,
            depth,
            "dead letters redriven"
        );
        match self.store.record_request(&scope, record).await? {
            PlaceOutcome::Created => Ok(Answer {
                response,
                replayed: false,
            }),
            PlaceOutcome::Replayed(stored) => replay_or_refuse(true, stored),
            PlaceOutcome::KeyReused => replay_or_refuse(false, response),
        }
    }
}
