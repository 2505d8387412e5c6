//! The two adapter families, `aws` and `local`, and `smtp` (a shop's own
//! mail server). Only `aws` imports `aws_sdk_*`. [`mime`] builds the one
//! MIME message all of their mailers send.

#[cfg(any(
    feature = "aws-dynamodb",
    feature = "aws-s3",
    feature = "aws-sns",
    feature = "aws-sqs",
    feature = "aws-secretsmanager",
    feature = "aws-sesv2"
))]
pub mod aws;
#[cfg(feature = "local")]
pub mod local;
pub mod mime;
#[cfg(feature = "smtp")]
pub mod smtp;
