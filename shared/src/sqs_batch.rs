//! SQS-triggered Lambdas: records are handled one at a time and only the
//! failed ones are reported back (`ReportBatchItemFailures`), so SQS
//! redelivers those and dead-letters them after the queue's limit.
//!
//! The fault switch ([`crate::faults`], `PRINTWORKS_FAULTS`) applies here
//! for every SQS-triggered Lambda: each record handled twice, or a handled
//! record reported failed (its acknowledgement lost).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use std::fmt::Debug;
use std::future::Future;

/// Runs `handle(body, receive_count)` for every record of `event`, with
/// the process's fault switch (`PRINTWORKS_FAULTS`; off when unset).
pub async fn each_record<F, Fut, T>(function: &str, event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: FnMut(String, u32) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
    T: Debug,
{
    each_record_with(function, event, crate::faults::Faults::global(), handle).await
}

/// [`each_record`] with the given fault switch.
pub async fn each_record_with<F, Fut, T>(
    function: &str,
    event: SqsEvent,
    faults: &crate::faults::Faults,
    mut handle: F,
) -> SqsBatchResponse
where
    F: FnMut(String, u32) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
    T: Debug,
{
    let mut failures = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let attempt = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let result = match record.body {
            // With the fault switch's duplicate deliveries, each record is
            // handled twice, as if SQS had delivered it again.
            Some(body) => match faults.copies(1) {
                1 => handle(body, attempt).await,
                _ => match handle(body.clone(), attempt).await {
                    Ok(_) => handle(body, attempt).await,
                    Err(e) => Err(e),
                },
            },
            None => Err(anyhow::anyhow!("empty message")),
        };
        let result = match result {
            Ok(_) if faults.lose_ack() => Err(anyhow::anyhow!(
                "injected fault: handled, and the acknowledgement lost"
            )),
            other => other,
        };
        match result {
            Ok(outcome) => tracing::info!(function, message_id = %id, ?outcome, "handled"),
            Err(e) => {
                tracing::error!(function, message_id = %id, attempt, error = %format!("{e:#}"), "failed; the message will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failures.push(failure);
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{FaultPlan, Faults};
    use aws_lambda_events::event::sqs::SqsMessage;

    #[tokio::test]
    async fn the_fault_switch_handles_each_record_twice_and_loses_acknowledgements() {
        let mut event = SqsEvent::default();
        for id in ["a", "b"] {
            let mut m = SqsMessage::default();
            m.message_id = Some(id.into());
            m.body = Some(id.into());
            event.records.push(m);
        }
        let faults = Faults::on(FaultPlan {
            duplicate_deliveries: true,
            lost_acks: 1.0,
            ..FaultPlan::default()
        });
        let mut handled = Vec::new();
        let response = each_record_with("test", event, &faults, |body, _| {
            handled.push(body);
            async { Ok(()) }
        })
        .await;
        assert_eq!(handled, ["a", "a", "b", "b"]);
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(
            failed,
            ["a", "b"],
            "handled, and reported failed: the ack is lost"
        );
        let counts = faults.counts();
        assert_eq!((counts.duplicate_deliveries, counts.lost_acks), (2, 2));
    }

    #[tokio::test]
    async fn only_failed_records_are_reported() {
        let mut event = SqsEvent::default();
        for (id, body) in [("a", Some("ok")), ("b", Some("bad")), ("c", None)] {
            let mut m = SqsMessage::default();
            m.message_id = Some(id.into());
            m.body = body.map(str::to_string);
            m.attributes
                .insert("ApproximateReceiveCount".into(), "3".into());
            event.records.push(m);
        }
        let mut seen = Vec::new();
        let response = each_record("test", event, |body, attempt| {
            seen.push((body.clone(), attempt));
            async move {
                if body == "ok" {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("no"))
                }
            }
        })
        .await;
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["b", "c"]);
        assert_eq!(seen, [("ok".to_string(), 3), ("bad".to_string(), 3)]);
    }
}
