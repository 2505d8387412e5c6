//! SQS queues: the [`MessageQueue`] port (receive, delete, change
//! visibility, send in batches) and queue depth, for the queues subscribed
//! to the topic, the plant job queues and `plant-events` (and the tests
//! that watch them).
//!
//! The inherent [`SqsQueue::receive`] and [`SqsQueue::delete`] predate the
//! port and stay for the tests that use them; through the port (`&dyn
//! MessageQueue`, or `MessageQueue::receive(&queue, ..)`) a receive also
//! reports the receive count and errors are [`QueueError`]s.

use crate::ports::{MessageQueue, QueueError, QueueMessage};
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use std::collections::BTreeSet;
use std::time::Duration;

/// SQS takes at most 10 entries per batch call and receive.
const MAX_BATCH: usize = 10;
/// The longest long poll SQS accepts.
const MAX_WAIT_SECS: u64 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
}

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> SqsQueue {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, url: impl Into<String>) -> SqsQueue {
        SqsQueue::new(Client::new(sdk), url)
    }

    /// The queue URL every call is made on.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Long-polls for up to `max` messages (1..=10) for up to `wait_secs`.
    pub async fn receive(&self, max: i32, wait_secs: i32) -> anyhow::Result<Vec<SqsMessage>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_secs.clamp(0, 20))
            .send()
            .await
            .context("SQS ReceiveMessage")?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(SqsMessage {
                    message_id: m.message_id()?.to_string(),
                    receipt_handle: m.receipt_handle()?.to_string(),
                    body: m.body()?.to_string(),
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt_handle: &str) -> anyhow::Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .context("SQS DeleteMessage")?;
        Ok(())
    }

    /// Messages in the queue, visible or in flight
    /// (`ApproximateNumberOfMessages` + `ApproximateNumberOfMessagesNotVisible`):
    /// approximate, as SQS says.
    pub async fn depth(&self) -> anyhow::Result<u64> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "SQS GetQueueAttributes on {}: {}",
                    self.url,
                    DisplayErrorContext(&e)
                )
            })?;
        let attributes = out.attributes();
        let count = |name: QueueAttributeName| -> anyhow::Result<u64> {
            let value = attributes
                .and_then(|a| a.get(&name))
                .ok_or_else(|| anyhow!("SQS GetQueueAttributes returned no {}", name.as_str()))?;
            value
                .parse::<u64>()
                .with_context(|| format!("SQS {} is {value:?}", name.as_str()))
        };
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)?
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?)
    }

    /// Maps the error of a call on a receipt: a receipt SQS no longer
    /// accepts is [`QueueError::StaleReceipt`], anything else
    /// [`QueueError::Unavailable`].
    fn receipt_error<E>(&self, action: &str, e: &E) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if is_stale_receipt(e.code(), e.message()) {
            return QueueError::StaleReceipt;
        }
        QueueError::Unavailable(anyhow!(
            "SQS {action} on {}: {}",
            self.url,
            DisplayErrorContext(e)
        ))
    }
}

/// Whether an SQS error code (and message) says the receipt handle is no
/// longer good: it is malformed or expired (`ReceiptHandleIsInvalid`),
/// refused as a parameter (`InvalidParameterValue`, what SQS answers a
/// visibility change on an expired receipt: "Value ... for parameter
/// ReceiptHandle is invalid. Reason: Message does not exist or is not
/// available for visibility timeout change."), or its message is no longer
/// in flight (`MessageNotInflight`).
///
/// Note that SQS answers a `DeleteMessage` with the receipt of an earlier
/// delivery with success (and keeps the message): on AWS a stale delete is
/// not always reported.
fn is_stale_receipt(code: Option<&str>, message: Option<&str>) -> bool {
    match code {
        Some("ReceiptHandleIsInvalid")
        | Some("AWS.SimpleQueueService.MessageNotInflight")
        | Some("MessageNotInflight") => true,
        Some("InvalidParameterValue") | Some("ValidationException") => {
            message.is_some_and(|m| m.to_ascii_lowercase().contains("receipt"))
        }
        _ => false,
    }
}

#[async_trait]
impl MessageQueue for SqsQueue {
    /// Long-polls; `max` is clamped to 1..=10 and `wait` to whole seconds
    /// in 0..=20 (a wait under a second is a short poll).
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(MAX_WAIT_SECS) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| {
                QueueError::Unavailable(anyhow!(
                    "SQS ReceiveMessage on {}: {}",
                    self.url,
                    DisplayErrorContext(&e)
                ))
            })?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Some(QueueMessage {
                    message_id: m.message_id()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body()?.to_string(),
                    receive_count,
                })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| self.receipt_error("DeleteMessage", &e))?;
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        // SQS takes whole seconds, at most 12 hours.
        let seconds = timeout.as_secs().min(12 * 60 * 60) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| self.receipt_error("ChangeMessageVisibility", &e))?;
        Ok(())
    }

    /// `SendMessageBatch` per 10 bodies, entry ids being the indexes in
    /// `bodies`. Every chunk is tried; a body is reported failed when its
    /// entry failed or its whole call did.
    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        let mut failed = Vec::new();
        let mut causes = Vec::new();
        for (chunk_no, chunk) in bodies.chunks(MAX_BATCH).enumerate() {
            let first = chunk_no * MAX_BATCH;
            let indexes = first..first + chunk.len();
            let entries = chunk
                .iter()
                .zip(indexes.clone())
                .map(|(body, i)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>();
            let entries = match entries {
                Ok(entries) => entries,
                Err(e) => {
                    failed.extend(indexes);
                    causes.push(format!("building the batch: {}", DisplayErrorContext(&e)));
                    continue;
                }
            };
            match self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    let sent: BTreeSet<usize> = out
                        .successful()
                        .iter()
                        .filter_map(|s| s.id().parse().ok())
                        .collect();
                    for f in out.failed() {
                        causes.push(format!(
                            "entry {}: {}{}",
                            f.id(),
                            f.code(),
                            f.message().map(|m| format!(": {m}")).unwrap_or_default()
                        ));
                    }
                    // Anything not reported sent counts as failed, listed or not.
                    failed.extend(indexes.filter(|i| !sent.contains(i)));
                }
                Err(e) => {
                    failed.extend(indexes);
                    causes.push(format!(
                        "SendMessageBatch of entries {first}..{}: {}",
                        first + chunk.len(),
                        DisplayErrorContext(&e)
                    ));
                }
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        if causes.is_empty() {
            causes.push("SQS did not report the entries as sent".into());
        }
        Err(QueueError::NotSent {
            failed,
            cause: anyhow!("SQS send to {}: {}", self.url, causes.join("; ")),
        })
    }
}

/// The stack's dead-letter queues on SQS, by the queue each serves
/// (`DEAD_LETTER_QUEUES`: `render=<url>,dispatch=<url>,...`). A look
/// receives with a visibility timeout of 0, so the messages stay
/// visible where they are; a redrive is SQS's message move task from the
/// dead-letter queue back to the queue whose redrive policy names it (one
/// running task per queue: a second redrive answers the running one).
pub struct SqsDeadLetters {
    client: Client,
    queues: std::collections::BTreeMap<String, String>,
}

impl SqsDeadLetters {
    pub fn from_sdk(
        sdk: &aws_config::SdkConfig,
        queues: std::collections::BTreeMap<String, String>,
    ) -> SqsDeadLetters {
        SqsDeadLetters {
            client: Client::new(sdk),
            queues,
        }
    }

    fn unavailable<E>(action: &str, e: E) -> QueueError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        QueueError::Unavailable(anyhow!("SQS {action}: {}", DisplayErrorContext(e)))
    }

    async fn arn(&self, url: &str) -> Result<String, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| Self::unavailable("GetQueueAttributes", e))?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| QueueError::Unavailable(anyhow!("{url} has no QueueArn")))
    }
}

fn queue_name_of(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_string()
}

#[async_trait]
impl crate::ports::DeadLetters for SqsDeadLetters {
    async fn dead_letter_queues(&self) -> Result<Vec<crate::ports::DeadLetterQueue>, QueueError> {
        let mut out = Vec::with_capacity(self.queues.len());
        for (queue, url) in &self.queues {
            let depth = SqsQueue::new(self.client.clone(), url)
                .depth()
                .await
                .map_err(QueueError::Unavailable)?;
            out.push(crate::ports::DeadLetterQueue {
                queue: queue.clone(),
                dead_letter_queue: queue_name_of(url),
                depth,
            });
        }
        Ok(out)
    }

    async fn dead_letters(
        &self,
        queue: &str,
        max: usize,
    ) -> Result<Option<Vec<crate::ports::DeadLetter>>, QueueError> {
        let Some(url) = self.queues.get(queue) else {
            return Ok(None);
        };
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| Self::unavailable("ReceiveMessage", e))?;
        Ok(Some(
            out.messages()
                .iter()
                .map(|m| {
                    let attribute = |name: MessageSystemAttributeName| {
                        m.attributes().and_then(|a| a.get(&name)).cloned()
                    };
                    crate::ports::DeadLetter {
                        message_id: m.message_id().unwrap_or_default().to_string(),
                        body: m.body().unwrap_or_default().to_string(),
                        receive_count: attribute(
                            MessageSystemAttributeName::ApproximateReceiveCount,
                        )
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0),
                        at: attribute(MessageSystemAttributeName::SentTimestamp)
                            .and_then(|t| t.parse::<i128>().ok())
                            .and_then(|ms| {
                                time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()
                            }),
                    }
                })
                .collect(),
        ))
    }

    async fn redrive(&self, queue: &str) -> Result<Option<crate::ports::Redrive>, QueueError> {
        let Some(url) = self.queues.get(queue) else {
            return Ok(None);
        };
        let arn = self.arn(url).await?;
        let running = self
            .client
            .list_message_move_tasks()
            .source_arn(&arn)
            .max_results(1)
            .send()
            .await
            .map_err(|e| Self::unavailable("ListMessageMoveTasks", e))?;
        if let Some(task) = running
            .results()
            .iter()
            .find(|t| t.status() == Some("RUNNING"))
        {
            return Ok(Some(crate::ports::Redrive {
                moved: None,
                task: task.task_handle().map(str::to_string),
            }));
        }
        // Back to the queue whose redrive policy names this one, named
        // outright: a message sent to the dead-letter queue by hand has no
        // source of its own to go back to.
        let sources = self
            .client
            .list_dead_letter_source_queues()
            .queue_url(url)
            .send()
            .await
            .map_err(|e| Self::unavailable("ListDeadLetterSourceQueues", e))?;
        let destination = match sources.queue_urls() {
            [source] => Some(self.arn(source).await?),
            _ => None,
        };
        let started = self
            .client
            .start_message_move_task()
            .source_arn(&arn)
            .set_destination_arn(destination)
            .send()
            .await
            .map_err(|e| Self::unavailable("StartMessageMoveTask", e))?;
        tracing::info!(
            queue,
            task = started.task_handle(),
            "message move task started"
        );
        Ok(Some(crate::ports::Redrive {
            moved: None,
            task: started.task_handle().map(str::to_string),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::is_stale_receipt;

    #[test]
    fn receipt_errors_that_mean_the_hold_is_gone() {
        assert!(is_stale_receipt(Some("ReceiptHandleIsInvalid"), None));
        assert!(is_stale_receipt(
            Some("AWS.SimpleQueueService.MessageNotInflight"),
            None
        ));
        assert!(is_stale_receipt(
            Some("InvalidParameterValue"),
            Some(
                "Value abc for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."
            )
        ));
        assert!(!is_stale_receipt(
            Some("InvalidParameterValue"),
            Some("Value 99 for parameter VisibilityTimeout is invalid.")
        ));
        assert!(!is_stale_receipt(
            Some("AWS.SimpleQueueService.NonExistentQueue"),
            None
        ));
        assert!(!is_stale_receipt(None, None));
    }
}
