//! AWS adapters: the only code that imports `aws_sdk_*`. Clients are built
//! once per cold start from one `SdkConfig` ([`load_sdk_config`]), which
//! honours `AWS_ENDPOINT_URL` (the emulator in tests).
//!
//! - [`dynamodb`]: orders, idempotency records, tenants, API keys and the
//!   outbox in one table, written with `TransactWriteItems`
//! - [`s3`]: blobs and presigned URLs
//! - [`sns`]: the event topic publisher
//! - [`sqs`]: `SqsQueue`, the `MessageQueue` port on SQS (receive, delete,
//!   visibility, batched send)
//! - [`secrets`]: the payment webhook secrets from Secrets Manager
//! - [`ses`]: `SesMailer`, the `Mailer` port on SES v2 (`SendEmail`, raw MIME)
//! - [`sms`]: `SnsSms`, the `SmsSender` port on SNS direct SMS publishing
//!
//! The DynamoDB `NotificationStore` (notification records, daily send
//! counters, the deferred index) lives in `dynamodb_notify.rs`, a child
//! module of [`dynamodb`] that shares its table helpers; the
//! `StatsStore` (the statistics projection's counters) in
//! `dynamodb_stats.rs`, another.

#[cfg(feature = "aws-dynamodb")]
pub mod dynamodb;
#[cfg(feature = "aws-s3")]
pub mod s3;
#[cfg(feature = "aws-secretsmanager")]
pub mod secrets;
#[cfg(feature = "aws-sesv2")]
pub mod ses;
#[cfg(feature = "aws-sns")]
pub mod sms;
#[cfg(feature = "aws-sns")]
pub mod sns;
#[cfg(feature = "aws-sqs")]
pub mod sqs;

#[cfg(any(feature = "aws-sesv2", feature = "aws-sns"))]
pub(crate) use crate::domain::notify::redact_contacts;

/// The SDK configuration the functions' `on_aws` constructors take.
pub use aws_config::SdkConfig;

/// The shared SDK configuration: region, credentials, endpoint override.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// An SDK configuration with an explicit region, optionally another
/// endpoint (the local platform, the emulator) and static keys (only for
/// those); otherwise the standard credential chain.
#[cfg(feature = "aws-sqs")]
pub async fn sdk_config_for(
    region: &str,
    endpoint: Option<&str>,
    static_keys: Option<(&str, &str)>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()));
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some((id, secret)) = static_keys {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            id, secret, None, None, "static",
        ));
    }
    loader.load().await
}

#[cfg(all(test, any(feature = "aws-sesv2", feature = "aws-sns")))]
mod tests {
    #[test]
    fn contacts_are_redacted_from_provider_errors() {
        assert_eq!(
            super::redact_contacts(
                "Email address is not verified: erika@example.com, sent to +4915112345678."
            ),
            "Email address is not verified: <address> sent to <number>"
        );
        assert_eq!(
            super::redact_contacts("Rate exceeded (code 400) at 2026-11-22"),
            "Rate exceeded (code 400) at 2026-11-22"
        );
    }
}
