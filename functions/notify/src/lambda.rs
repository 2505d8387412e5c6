//! What invokes the notify Lambda, told apart by shape: the notify queue
//! (an SQS batch: partial failures, back-off through the queue) or the
//! 15-minute schedule with the constant input `{"sweep": "deferred"}`
//! (messages over a daily cap whose day has come).

use crate::{Notifier, SWEEP_MAX};
use aws_lambda_events::event::sqs::SqsEvent;
use printworks::ports::MessageQueue;
use serde_json::{Value, json};

/// What invoked the function.
#[derive(Debug)]
pub enum Payload {
    Queue(SqsEvent),
    Sweep,
}

impl Payload {
    pub fn parse(value: Value) -> Result<Payload, lambda_runtime::Error> {
        if value.get("Records").is_some() {
            return Ok(Payload::Queue(serde_json::from_value(value)?));
        }
        if value.get("sweep").and_then(Value::as_str) == Some("deferred") {
            return Ok(Payload::Sweep);
        }
        Err("neither an SQS batch nor {\"sweep\": \"deferred\"}".into())
    }
}

/// One invocation: the batch's partial failures, or how many deferred
/// messages the sweep handled.
pub async fn invoke(
    notifier: &Notifier,
    queue: &dyn MessageQueue,
    payload: Value,
) -> Result<Value, lambda_runtime::Error> {
    Ok(match Payload::parse(payload)? {
        Payload::Queue(batch) => {
            serde_json::to_value(notifier.handle_sqs(batch, Some(queue)).await)?
        }
        Payload::Sweep => json!({ "swept": notifier.sweep(SWEEP_MAX).await?.len() }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_told_apart_by_shape() {
        let schedule = json!({"sweep": "deferred"});
        assert!(matches!(Payload::parse(schedule), Ok(Payload::Sweep)));
        let batch = json!({"Records": [{"messageId": "m-1", "receiptHandle": "r-1", "body": "{}",
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-central-1:123456789012:notify",
            "awsRegion": "eu-central-1"}]});
        assert!(matches!(Payload::parse(batch), Ok(Payload::Queue(e)) if e.records.len() == 1));
        for unknown in [
            json!({"sweep": "everything"}),
            json!({"detail-type": "Scheduled Event"}),
        ] {
            assert!(Payload::parse(unknown).is_err());
        }
    }
}
