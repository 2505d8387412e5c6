//! SQS receive and delete, for the consumers of the queues subscribed to the
//! topic (and the tests that watch them).

use anyhow::Context;
use aws_sdk_sqs::Client;

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
}
