//! The two adapter families. Only [`aws`] imports `aws_sdk_*`.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "local")]
pub mod local;
