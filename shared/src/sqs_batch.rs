//! SQS-triggered Lambdas: records are handled one at a time and only the
//! failed ones are reported back (`ReportBatchItemFailures`), so SQS
//! redelivers those and dead-letters them after the queue's limit.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use std::fmt::Debug;
use std::future::Future;

/// Runs `handle(body, receive_count)` for every record of `event`.
pub async fn each_record<F, Fut, T>(
    function: &str,
    event: SqsEvent,
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
            Some(body) => handle(body, attempt).await,
            None => Err(anyhow::anyhow!("empty message")),
        };
        match result {
            Ok(outcome) => tracing::info!(function, message = %id, ?outcome, "handled"),
            Err(e) => {
                tracing::error!(function, message = %id, attempt, error = %format!("{e:#}"), "failed; the message will be retried");
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
    use aws_lambda_events::event::sqs::SqsMessage;

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
