//! E-mail through Amazon SES (v2 `SendEmail`): the message goes as raw
//! MIME, the very bytes every other mail channel sends
//! ([`EmailMessage::to_mime`]), to the one recipient, from the brand's
//! address (a verified SES identity), optionally through a configuration
//! set (event publishing, a dedicated IP pool).
//!
//! Errors: a message SES refuses for what it is (a malformed or refused
//! address, an unverified sender domain) is [`SendError::Rejected`];
//! everything else (throttling, the daily quota, sending paused, network,
//! 5xx) is [`SendError::Unavailable`], so the queue tries again later.

use super::redact_contacts;
use crate::ports::{Clock, EmailMessage, Mailer, SendError};
use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::{DisplayErrorContext, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use std::sync::Arc;

#[derive(Clone)]
pub struct SesMailer {
    client: Client,
    configuration_set: Option<String>,
    /// The MIME `Date`.
    clock: Arc<dyn Clock>,
}

impl SesMailer {
    pub fn new(
        client: Client,
        configuration_set: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> SesMailer {
        SesMailer {
            client,
            configuration_set,
            clock,
        }
    }

    pub fn from_sdk(
        sdk: &aws_config::SdkConfig,
        configuration_set: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> SesMailer {
        SesMailer::new(Client::new(sdk), configuration_set, clock)
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, mail: &EmailMessage) -> Result<String, SendError> {
        let mime = mail
            .to_mime(self.clock.now())
            .map_err(|e| SendError::Rejected(redact_contacts(&e.to_string())))?;
        let raw = RawMessage::builder()
            .data(Blob::new(mime))
            .build()
            .map_err(|e| SendError::Unavailable(anyhow!(e).context("building the SES message")))?;
        let out = self
            .client
            .send_email()
            .from_email_address(&mail.from_address)
            .destination(
                Destination::builder()
                    .to_addresses(&mail.to_address)
                    .build(),
            )
            .content(EmailContent::builder().raw(raw).build())
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(send_error)?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

fn send_error<R>(err: SdkError<SendEmailError, R>) -> SendError
where
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(
            e @ (SendEmailError::MessageRejected(_)
            | SendEmailError::MailFromDomainNotVerifiedException(_)
            | SendEmailError::BadRequestException(_)),
        ) => SendError::Rejected(redact_contacts(&format!("SES refused the message: {e}"))),
        // Throttling, LimitExceeded (the daily quota), SendingPaused,
        // AccountSuspended, NotFound (a missing configuration set), a
        // network failure or a 5xx: none is this message's fault.
        _ => SendError::Unavailable(anyhow!(
            "SES SendEmail: {}",
            redact_contacts(&DisplayErrorContext(&err).to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sesv2::types::error::{
        BadRequestException, LimitExceededException, MessageRejected, TooManyRequestsException,
    };

    fn service(e: SendEmailError) -> SendError {
        send_error(SdkError::service_error(e, "response"))
    }

    #[test]
    fn refusals_are_rejected_and_the_rest_retried() {
        let rejected = service(SendEmailError::MessageRejected(
            MessageRejected::builder()
                .message("Email address is not verified: erika@example.com")
                .build(),
        ));
        match rejected {
            SendError::Rejected(reason) => {
                assert!(reason.contains("not verified"), "{reason}");
                assert!(!reason.contains("erika@"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            service(SendEmailError::BadRequestException(
                BadRequestException::builder().build()
            )),
            SendError::Rejected(_)
        ));
        for e in [
            SendEmailError::TooManyRequestsException(TooManyRequestsException::builder().build()),
            SendEmailError::LimitExceededException(LimitExceededException::builder().build()),
        ] {
            assert!(matches!(service(e), SendError::Unavailable(_)));
        }
        let timeout: SdkError<SendEmailError, &str> =
            SdkError::timeout_error(anyhow!("connect timed out"));
        assert!(matches!(send_error(timeout), SendError::Unavailable(_)));
    }
}
