//! The notify Lambda: wiring only, built once per cold start. Two
//! triggers: the notify queue (an SQS batch: partial failures, back-off
//! through `NOTIFY_QUEUE_URL`) and a 15-minute schedule with the constant
//! input `{"sweep": "deferred"}` (messages over a daily cap whose day has
//! come). E-mail goes through SES, or through the shop's own server when
//! `SMTP_URL` is set; texts through SNS; tenant webhooks through the
//! SSRF-safe fetcher.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use notify::templates::Templates;
use notify::{Channels, Notifier};
use printworks::adapters::aws::dynamodb::DynamoStore;
use printworks::adapters::aws::load_sdk_config;
use printworks::adapters::aws::ses::SesMailer;
use printworks::adapters::aws::sms::SnsSms;
use printworks::adapters::aws::sqs::SqsQueue;
use printworks::adapters::smtp::{SmtpConfig, SmtpMailer};
use printworks::clock::SystemClock;
use printworks::config::{AwsResources, NotifyConfig, process_env};
use printworks::fetch::{FetchPolicy, UrlFetcher};
use printworks::ports::{Clock, Mailer, MessageQueue};
use printworks::webhook_out::HttpWebhooks;
use serde_json::{Value, json};
use std::sync::Arc;

/// Deferred messages one scheduled invocation sends at most.
const SWEEP_MAX: usize = 500;

/// Tenant endpoints get 8 s: a batch of ten events, each with a webhook,
/// then stays inside the function's 120 s even when every endpoint hangs
/// (a hung endpoint's message is retried with back-off like any failure).
fn webhook_policy() -> FetchPolicy {
    FetchPolicy {
        total_timeout: std::time::Duration::from_secs(8),
        connect_timeout: std::time::Duration::from_secs(3),
        ..FetchPolicy::default()
    }
}

/// What invoked the function.
enum Payload {
    Queue(SqsEvent),
    Sweep,
}

impl Payload {
    fn parse(value: Value) -> Result<Payload, lambda_runtime::Error> {
        if value.get("Records").is_some() {
            return Ok(Payload::Queue(serde_json::from_value(value)?));
        }
        if value.get("sweep").and_then(Value::as_str) == Some("deferred") {
            return Ok(Payload::Sweep);
        }
        Err("neither an SQS batch nor {\"sweep\": \"deferred\"}".into())
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let vars = process_env();
    let resources = AwsResources::for_production_events(&vars)?;
    let config = NotifyConfig::from_vars(&vars)?;
    let sdk = load_sdk_config().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(DynamoStore::from_sdk(
        &sdk,
        resources.orders_table.unwrap_or_default(),
    ));
    let mail: Arc<dyn Mailer> = match &config.smtp_url {
        Some(url) => Arc::new(SmtpMailer::new(
            &SmtpConfig::parse_url(url)?,
            clock.clone(),
        )?),
        None => Arc::new(SesMailer::from_sdk(
            &sdk,
            config.ses_configuration_set.clone(),
            clock.clone(),
        )),
    };
    let notifier = Notifier {
        orders: store.clone(),
        tenants: store.clone(),
        ledger: store,
        channels: Channels {
            mail,
            sms: Arc::new(SnsSms::from_sdk(&sdk)),
            webhooks: Arc::new(HttpWebhooks::new(UrlFetcher::new(webhook_policy())?)),
        },
        templates: Arc::new(Templates::builtin()?),
        caps: config.caps,
        clock,
        lease: config.lease,
        backoff: config.backoff,
    };
    let queue = config.queue_url.map(|url| SqsQueue::from_sdk(&sdk, url));
    let (notifier, queue) = (&notifier, queue.as_ref().map(|q| q as &dyn MessageQueue));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(match Payload::parse(event.payload)? {
            Payload::Queue(batch) => serde_json::to_value(notifier.handle_sqs(batch, queue).await)?,
            Payload::Sweep => json!({ "swept": notifier.sweep(SWEEP_MAX).await?.len() }),
        })
    }))
    .await
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
