//! Text messages through Amazon SNS direct publishing (`Publish` with a
//! phone number, no topic): transactional (delivery over cost), with the
//! brand's alphanumeric sender id where the message has one (SNS drops it
//! in countries that do not allow it).
//!
//! Errors: an invalid number or message (`InvalidParameter`,
//! `InvalidParameterValue`, `ValidationException`; also a number that
//! opted out) is [`SendError::Rejected`]; everything else (throttling,
//! the account's SMS spend limit, authorization, network, 5xx) is
//! [`SendError::Unavailable`].

use super::redact_contacts;
use crate::ports::{SendError, SmsMessage, SmsSender};
use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::error::{DisplayErrorContext, SdkError};
use aws_sdk_sns::operation::publish::PublishError;
use aws_sdk_sns::types::MessageAttributeValue;

#[derive(Clone)]
pub struct SnsSms {
    client: Client,
}

impl SnsSms {
    pub fn new(client: Client) -> SnsSms {
        SnsSms { client }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> SnsSms {
        SnsSms::new(Client::new(sdk))
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, SendError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| SendError::Unavailable(anyhow!(e).context("building an SMS attribute")))
}

#[async_trait]
impl SmsSender for SnsSms {
    async fn send(&self, sms: &SmsMessage) -> Result<String, SendError> {
        let mut publish = self
            .client
            .publish()
            .phone_number(&sms.to)
            .message(&sms.text)
            .message_attributes("AWS.SNS.SMS.SMSType", string_attribute("Transactional")?);
        if let Some(sender) = &sms.sender_id {
            publish = publish.message_attributes("AWS.SNS.SMS.SenderID", string_attribute(sender)?);
        }
        let out = publish.send().await.map_err(publish_error)?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

fn publish_error<R>(err: SdkError<PublishError, R>) -> SendError
where
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(
            e @ (PublishError::InvalidParameterException(_)
            | PublishError::InvalidParameterValueException(_)
            | PublishError::ValidationException(_)),
        ) => SendError::Rejected(redact_contacts(&format!(
            "SNS refused the text message: {e}"
        ))),
        _ => SendError::Unavailable(anyhow!(
            "SNS Publish (SMS): {}",
            redact_contacts(&DisplayErrorContext(&err).to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sns::types::error::{InternalErrorException, InvalidParameterException};

    #[test]
    fn invalid_numbers_are_rejected_and_the_rest_retried() {
        let invalid = publish_error(SdkError::service_error(
            PublishError::InvalidParameterException(
                InvalidParameterException::builder()
                    .message("Invalid parameter: PhoneNumber Reason: +4915112345678 is not valid")
                    .build(),
            ),
            "response",
        ));
        match invalid {
            SendError::Rejected(reason) => {
                assert!(reason.contains("PhoneNumber"), "{reason}");
                assert!(!reason.contains("4915112345678"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let internal = publish_error(SdkError::service_error(
            PublishError::InternalErrorException(InternalErrorException::builder().build()),
            "response",
        ));
        assert!(matches!(internal, SendError::Unavailable(_)));
    }
}
