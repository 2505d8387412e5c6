//! Publishes events to the SNS topic, ten per `PublishBatch`, each with a
//! `type` message attribute that subscriptions filter on.

use crate::domain::events::EventEnvelope;
use crate::ports::{EventPublisher, PublishError};
use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};

#[derive(Clone)]
pub struct SnsPublisher {
    client: Client,
    topic_arn: String,
}

impl SnsPublisher {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> SnsPublisher {
        SnsPublisher {
            client,
            topic_arn: topic_arn.into(),
        }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, topic_arn: impl Into<String>) -> SnsPublisher {
        SnsPublisher::new(Client::new(sdk), topic_arn)
    }
}

#[async_trait]
impl EventPublisher for SnsPublisher {
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PublishError> {
        let mut failed = Vec::new();
        let mut cause = None;
        for chunk in events.chunks(10) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, event) in chunk.iter().enumerate() {
                let built = serde_json::to_string(event)
                    .map_err(|e| anyhow!(e))
                    .and_then(|message| {
                        let attribute = MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(event.event_type.as_str())
                            .build()?;
                        Ok(PublishBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message(message)
                            .message_attributes("type", attribute)
                            .build()?)
                    });
                match built {
                    Ok(entry) => entries.push(entry),
                    Err(e) => {
                        failed.push(event.id.clone());
                        cause = Some(e);
                    }
                }
            }
            if entries.is_empty() {
                continue;
            }
            match self
                .client
                .publish_batch()
                .topic_arn(&self.topic_arn)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    for f in out.failed() {
                        if let Some(event) = f.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                        {
                            failed.push(event.id.clone());
                            cause = Some(anyhow!(
                                "SNS refused {}: {} {}",
                                event.id,
                                f.code(),
                                f.message().unwrap_or("")
                            ));
                        }
                    }
                }
                Err(e) => {
                    failed.extend(chunk.iter().map(|e| e.id.clone()));
                    cause = Some(anyhow!(e).context("SNS PublishBatch"));
                }
            }
        }
        match cause {
            None => Ok(()),
            Some(cause) => Err(PublishError {
                failed,
                total: events.len(),
                cause,
            }),
        }
    }
}
