//! AWS adapters: the only code that imports `aws_sdk_*`. Clients are built
//! once per cold start from one `SdkConfig` ([`load_sdk_config`]), which
//! honours `AWS_ENDPOINT_URL` (the emulator in tests).
//!
//! - [`dynamodb`]: orders, idempotency records, tenants, API keys and the
//!   outbox in one table, written with `TransactWriteItems`
//! - [`s3`]: blobs and presigned URLs
//! - [`sns`]: the event topic publisher
//! - [`sqs`]: queue receive and delete
//! - [`secrets`]: the payment webhook secrets from Secrets Manager

#[cfg(feature = "aws-dynamodb")]
pub mod dynamodb;
#[cfg(feature = "aws-s3")]
pub mod s3;
#[cfg(feature = "aws-secretsmanager")]
pub mod secrets;
#[cfg(feature = "aws-sns")]
pub mod sns;
#[cfg(feature = "aws-sqs")]
pub mod sqs;

/// The shared SDK configuration: region, credentials, endpoint override.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
