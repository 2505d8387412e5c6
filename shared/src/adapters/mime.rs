//! The MIME message every mailer sends (SES as raw content, SMTP, the
//! local outbox folder as `.eml` files): [`EmailMessage::to_mime`] builds it
//! with lettre, [`EmailMessage::envelope`] gives the SMTP envelope. The
//! message's fields are the port's data ([`crate::ports::EmailMessage`]);
//! only the building lives here.

use crate::ports::EmailMessage;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
#[error("cannot build the e-mail: {0}")]
pub struct MimeError(String);

impl EmailMessage {
    /// The message as `multipart/alternative` MIME (plain text, then HTML),
    /// UTF-8, with `Date` at `date`.
    pub fn to_mime(&self, date: OffsetDateTime) -> Result<Vec<u8>, MimeError> {
        use lettre::message::{Mailbox, MultiPart};
        let bad = |what: &str, e: &dyn std::fmt::Display| MimeError(format!("{what}: {e}"));
        let from = Mailbox::new(
            Some(self.from_name.clone()),
            self.from_address
                .parse()
                .map_err(|e| bad("from address", &e))?,
        );
        let to = Mailbox::new(
            Some(self.to_name.clone()),
            self.to_address.parse().map_err(|e| bad("to address", &e))?,
        );
        let mut builder = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(self.subject.clone())
            .message_id(Some(format!("<{}>", self.message_id)))
            .date(date.into())
            .header(ContentLanguage(self.language.clone()));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(Mailbox::new(
                None,
                reply_to.parse().map_err(|e| bad("reply-to address", &e))?,
            ));
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(
                self.text.clone(),
                self.html.clone(),
            ))
            .map_err(|e| bad("message", &e))?;
        Ok(message.formatted())
    }

    /// The recipient's address, for the SMTP envelope.
    pub fn envelope(&self) -> Result<lettre::address::Envelope, MimeError> {
        let parse = |raw: &str| {
            raw.parse::<lettre::Address>()
                .map_err(|e| MimeError(format!("address: {e}")))
        };
        lettre::address::Envelope::new(
            Some(parse(&self.from_address)?),
            vec![parse(&self.to_address)?],
        )
        .map_err(|e| MimeError(format!("envelope: {e}")))
    }
}

/// The `Content-Language` header.
#[derive(Debug, Clone)]
struct ContentLanguage(String);

impl lettre::message::header::Header for ContentLanguage {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ContentLanguage(s.to_string()))
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), self.0.clone())
    }
}
