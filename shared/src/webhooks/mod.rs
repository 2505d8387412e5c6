//! Payment providers' webhooks: signature verification and the mapping of
//! each provider's events to [`PaymentNotification`]s. Pure computation on
//! bytes, no I/O; `functions/payment-webhook` does the rest.
//!
//! - [`stripe`] - `Stripe-Signature` (`t=`, `v1=` HMAC-SHA256 of `"{t}.{body}"`)
//! - [`adyen`] - `additionalData.hmacSignature` of every notification item
//! - [`WebhookSecrets`] - the secrets of every provider, several per provider
//!   during a rotation; never printed.

pub mod adyen;
pub mod stripe;

use crate::domain::payment::PaymentNotification;
use crate::domain::signature::SignatureError;
use serde::Deserialize;
use time::OffsetDateTime;

/// Why a webhook was refused. Every one of them is the sender's problem (a
/// 4xx) and changes nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("unknown payment provider {0:?}")]
    UnknownProvider(String),
    #[error("no webhook secret is configured for {0}")]
    NotConfigured(&'static str),
    #[error("the {0} header is missing")]
    MissingSignature(&'static str),
    #[error("the signature is malformed: {0}")]
    MalformedSignature(String),
    #[error("the signature timestamp is {0} s away from now (at most 300 s allowed)")]
    StaleTimestamp(i64),
    #[error("the signature does not match")]
    BadSignature,
    #[error("the body is not a {provider} notification: {reason}")]
    InvalidBody {
        provider: &'static str,
        reason: String,
    },
}

impl From<SignatureError> for WebhookError {
    fn from(e: SignatureError) -> WebhookError {
        match e {
            SignatureError::Malformed(why) => WebhookError::MalformedSignature(why),
            SignatureError::Stale(age) => WebhookError::StaleTimestamp(age),
            SignatureError::Mismatch => WebhookError::BadSignature,
        }
    }
}

impl WebhookError {
    /// The HTTP status: 404 for a provider we do not take, 401 for anything
    /// about the signature, 400 for a body we cannot read.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::UnknownProvider(_) | WebhookError::NotConfigured(_) => 404,
            WebhookError::InvalidBody { .. } => 400,
            _ => 401,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::UnknownProvider(_) | WebhookError::NotConfigured(_) => "unknown_provider",
            WebhookError::MissingSignature(_) => "signature_missing",
            WebhookError::MalformedSignature(_) => "signature_malformed",
            WebhookError::StaleTimestamp(_) => "signature_expired",
            WebhookError::BadSignature => "signature_mismatch",
            WebhookError::InvalidBody { .. } => "invalid_body",
        }
    }
}

/// The answer a provider expects once its events are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement {
    pub content_type: &'static str,
    pub body: &'static str,
}

/// One provider: verifies a request and reads its events.
pub trait PaymentProvider: Send + Sync {
    fn name(&self) -> &'static str;
    /// Verifies `body` (exactly the bytes received) and returns its events.
    /// `header` looks up a request header by lower-case name.
    fn verify(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Vec<PaymentNotification>, WebhookError>;
    fn acknowledgement(&self) -> Acknowledgement;
}

/// Secret bytes that never appear in `Debug` output or logs, and the
/// merchant account they belong to (a Stripe endpoint secret of one
/// account), if any.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>, Option<String>);

impl Secret {
    /// A secret of the shop's shared account.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into(), None)
    }

    /// A secret of merchant account `account`: what it verifies moves only
    /// the orders of the tenants bound to that account.
    pub fn for_account(bytes: impl Into<Vec<u8>>, account: &str) -> Secret {
        Secret(bytes.into(), Some(account.to_string()))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn account(&self) -> Option<&str> {
        self.1.as_deref()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.1 {
            Some(account) => write!(f, "Secret({account}: ***)"),
            None => f.write_str("Secret(***)"),
        }
    }
}

/// Every provider's webhook secrets. Read from a JSON document
/// `{"stripe": ["whsec_...", {"account": "acct_...", "secret": "whsec_..."}],
/// "adyen": ["<hex HMAC key>"]}` (a Secrets Manager secret on AWS,
/// `payment-secrets.json` locally). Several secrets per provider are all
/// accepted: that is how a rotation works. A Stripe secret with an
/// `account` is that merchant account's endpoint secret: the events it
/// verifies move only the orders of tenants bound to the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookSecrets {
    pub stripe: Vec<Secret>,
    pub adyen: Vec<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "the webhook secrets are not JSON of the form {{\"stripe\": [...], \"adyen\": [...]}}: {0}"
    )]
    Shape(String),
    #[error("adyen HMAC key {index} is not hex")]
    AdyenKeyNotHex { index: usize },
    #[error("a webhook secret is empty")]
    Empty,
}

impl WebhookSecrets {
    pub fn from_json(raw: &str) -> Result<WebhookSecrets, SecretsError> {
        /// A Stripe secret: of the shared account, or of one account.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum StripeSecret {
            Shared(String),
            Account(AccountSecret),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct AccountSecret {
            account: String,
            secret: String,
        }
        impl StripeSecret {
            fn text(&self) -> &str {
                match self {
                    StripeSecret::Shared(s) => s,
                    StripeSecret::Account(a) => &a.secret,
                }
            }
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            #[serde(default)]
            stripe: Vec<StripeSecret>,
            #[serde(default)]
            adyen: Vec<String>,
        }
        // Only the kind and position of an error: serde_json's message may
        // quote the offending value, which would be a secret.
        let doc: Doc = serde_json::from_str(raw).map_err(|e| {
            SecretsError::Shape(format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let empty_account = doc
            .stripe
            .iter()
            .any(|s| matches!(s, StripeSecret::Account(a) if a.account.trim().is_empty()));
        if empty_account
            || doc
                .stripe
                .iter()
                .map(StripeSecret::text)
                .chain(doc.adyen.iter().map(String::as_str))
                .any(|s| s.trim().is_empty())
        {
            return Err(SecretsError::Empty);
        }
        let adyen = doc
            .adyen
            .iter()
            .enumerate()
            .map(|(index, key)| {
                hex::decode(key.trim())
                    .map(Secret::new)
                    .map_err(|_| SecretsError::AdyenKeyNotHex { index })
            })
            .collect::<Result<_, _>>()?;
        Ok(WebhookSecrets {
            stripe: doc
                .stripe
                .iter()
                .map(|s| match s {
                    StripeSecret::Shared(s) => Secret::new(s.trim().as_bytes()),
                    StripeSecret::Account(a) => {
                        Secret::for_account(a.secret.trim().as_bytes(), a.account.trim())
                    }
                })
                .collect(),
            adyen,
        })
    }

    /// The provider called `name`, with its secrets.
    pub fn provider(&self, name: &str) -> Result<Box<dyn PaymentProvider>, WebhookError> {
        match name {
            "stripe" if self.stripe.is_empty() => Err(WebhookError::NotConfigured("stripe")),
            "adyen" if self.adyen.is_empty() => Err(WebhookError::NotConfigured("adyen")),
            "stripe" => Ok(Box::new(stripe::Stripe::new(self.stripe.clone()))),
            "adyen" => Ok(Box::new(adyen::Adyen::new(self.adyen.clone()))),
            other => Err(WebhookError::UnknownProvider(
                other.chars().take(40).collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_and_never_print() {
        let s = WebhookSecrets::from_json(
            r#"{"stripe": ["whsec_old", "whsec_new"], "adyen": ["44782DEF"]}"#,
        )
        .unwrap();
        assert_eq!(s.stripe.len(), 2);
        assert_eq!(s.adyen[0].expose(), &[0x44, 0x78, 0x2d, 0xef]);
        let printed = format!("{s:?}");
        assert!(!printed.contains("whsec"), "{printed}");
        assert!(matches!(
            WebhookSecrets::from_json(r#"{"adyen": ["not hex"]}"#),
            Err(SecretsError::AdyenKeyNotHex { index: 0 })
        ));
        let err = WebhookSecrets::from_json(r#"{"stripe": "whsec_leak"}"#).unwrap_err();
        assert!(!err.to_string().contains("whsec_leak"), "{err}");
        assert!(matches!(
            WebhookSecrets::from_json(r#"{"stripe": [" "]}"#),
            Err(SecretsError::Empty)
        ));
        assert_eq!(
            s.provider("paypal").err(),
            Some(WebhookError::UnknownProvider("paypal".into()))
        );
        // A merchant account's endpoint secret, beside the shared one.
        let bound = WebhookSecrets::from_json(
            r#"{"stripe": ["whsec_shared", {"account": "acct_posters", "secret": "whsec_p"}]}"#,
        )
        .unwrap();
        assert_eq!(bound.stripe[0].account(), None);
        assert_eq!(
            (bound.stripe[1].account(), bound.stripe[1].expose()),
            (Some("acct_posters"), b"whsec_p".as_slice())
        );
        let printed = format!("{bound:?}");
        assert!(
            printed.contains("acct_posters") && !printed.contains("whsec"),
            "{printed}"
        );
        assert!(matches!(
            WebhookSecrets::from_json(r#"{"stripe": [{"account": " ", "secret": "whsec_p"}]}"#),
            Err(SecretsError::Empty)
        ));
        assert!(
            WebhookSecrets::from_json(r#"{"stripe": [{"account": "a", "secret": "s", "x": 1}]}"#)
                .is_err()
        );
        let only_stripe = WebhookSecrets::from_json(r#"{"stripe": ["whsec_x"]}"#).unwrap();
        assert_eq!(
            only_stripe.provider("adyen").err(),
            Some(WebhookError::NotConfigured("adyen"))
        );
    }
}
