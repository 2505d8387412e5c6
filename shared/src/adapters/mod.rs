//! The two adapter families. Only [`aws`] imports `aws_sdk_*`.

#[cfg(any(
    feature = "aws-dynamodb",
    feature = "aws-s3",
    feature = "aws-sns",
    feature = "aws-sqs",
    feature = "aws-secretsmanager"
))]
pub mod aws;
#[cfg(feature = "local")]
pub mod local;
