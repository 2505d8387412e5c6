//! E-mail through a shop's own mail server over SMTP (lettre): the same
//! MIME message as SES and the outbox folder get, sent with the envelope
//! sender and recipient of the message. Plain (a relay on the same host),
//! STARTTLS (port 587) or implicit TLS (port 465), with optional login.

use crate::ports::{Clock, EmailMessage, Mailer, SendError};
use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// No TLS: only for a relay on the same host or a test server.
    None,
    /// STARTTLS, required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// Where and how to reach the mail server; parsed from
/// `smtp://[user:password@]host[:port][?tls=none|starttls|tls]`
/// (`smtps://` means `tls=tls`).
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub credentials: Option<(String, String)>,
    /// The name we greet the server with (EHLO).
    pub hello_name: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl SmtpConfig {
    pub fn parse_url(raw: &str) -> Result<SmtpConfig, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
        let default_security = match url.scheme() {
            "smtp" => SmtpSecurity::StartTls,
            "smtps" => SmtpSecurity::Tls,
            other => return Err(format!("scheme {other:?}: smtp or smtps")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("no host")?
            .to_string();
        let mut security = default_security;
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "none") => security = SmtpSecurity::None,
                ("tls", "starttls") => security = SmtpSecurity::StartTls,
                ("tls", "tls") => security = SmtpSecurity::Tls,
                (k, v) => return Err(format!("unknown option {k}={v}")),
            }
        }
        let port = url.port().unwrap_or(match security {
            SmtpSecurity::Tls => 465,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::None => 25,
        });
        let credentials = if url.username().is_empty() {
            None
        } else {
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| "bad percent-encoding in credentials".to_string())
            };
            Some((
                decode(url.username())?,
                decode(url.password().unwrap_or_default())?,
            ))
        };
        Ok(SmtpConfig {
            host,
            port,
            security,
            credentials,
            hello_name: "printworks.localhost".into(),
            timeout: Duration::from_secs(30),
        })
    }
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    clock: Arc<dyn Clock>,
}

impl SmtpMailer {
    pub fn new(config: &SmtpConfig, clock: Arc<dyn Clock>) -> Result<SmtpMailer, String> {
        let tls = |host: &str| {
            TlsParameters::new(host.to_string()).map_err(|e| format!("TLS for {host}: {e}"))
        };
        let security = match config.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls(&config.host)?),
            SmtpSecurity::Tls => Tls::Wrapper(tls(&config.host)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(security)
            .hello_name(ClientId::Domain(config.hello_name.clone()))
            .timeout(Some(config.timeout));
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            clock,
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &EmailMessage) -> Result<String, SendError> {
        let mime = mail
            .to_mime(self.clock.now())
            .map_err(|e| SendError::Rejected(e.to_string()))?;
        let envelope = mail
            .envelope()
            .map_err(|e| SendError::Rejected(e.to_string()))?;
        match self.transport.send_raw(&envelope, &mime).await {
            Ok(response) => {
                let text: Vec<&str> = response.message().collect();
                Ok(format!("{} {}", response.code(), text.join(" ")))
            }
            // 5xx: the server refuses this message (an unknown mailbox):
            // retrying cannot help.
            Err(e) if e.is_permanent() => Err(SendError::Rejected(e.to_string())),
            Err(e) => Err(SendError::Unavailable(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_options() {
        let c = SmtpConfig::parse_url("smtp://mail.example.com").unwrap();
        assert_eq!((c.port, c.security), (587, SmtpSecurity::StartTls));
        let c = SmtpConfig::parse_url("smtps://shop%40x:p%3Ass@mail.example.com").unwrap();
        assert_eq!((c.port, c.security), (465, SmtpSecurity::Tls));
        assert_eq!(c.credentials, Some(("shop@x".into(), "p:ss".into())));
        assert!(!format!("{c:?}").contains("p:ss"));
        let c = SmtpConfig::parse_url("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.security),
            ("127.0.0.1", 2525, SmtpSecurity::None)
        );
        assert!(SmtpConfig::parse_url("http://x").is_err());
        assert!(SmtpConfig::parse_url("smtp://x?tls=maybe").is_err());
        assert!(SmtpConfig::parse_url("smtp://x:y%zz@h").is_err());
    }
}
