//! Tenants (white-label brands and B2B customers) and their API keys.
//!
//! A key reads `pw_<env>_<keyid>_<secret>` (an operator's, `pwop_...`:
//! [`KeyKind`]). Only the SHA-256 of the secret is
//! stored: the secret is 40 random alphanumerics (about 238 bits), so a fast
//! hash is as safe as a slow password hash and does not cap throughput;
//! and no key is stored in the clear. The comparison is in constant time.

use super::locale::{CountryCode, Locale};
use super::money::Currency;
use super::notify::NotifySettings;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantKind {
    /// A consumer brand: customers pay through a payment provider.
    B2c,
    /// A business customer: pays by invoice.
    B2b,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum PaymentSetup {
    /// The order is paid when it is placed; the tenant is invoiced.
    Invoice,
    /// The customer pays through this provider (`stripe`, `adyen`).
    Provider {
        provider: String,
        /// The merchant account the tenant is bound to: a provider event
        /// moves the tenant's orders only if it was verified for this
        /// account (Stripe: the account whose endpoint secret signed it;
        /// Adyen: the item's `merchantAccountCode`). `None`: the shop's
        /// shared account (Stripe: secrets without an account).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merchant_account: Option<String>,
    },
}

/// A tenant id: lowercase letters, digits and dashes, 2 to 40 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> Result<TenantId, TenantError> {
        let ok = (2..=40).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(TenantId(raw.to_string()))
        } else {
            Err(TenantError::BadId(raw.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub kind: TenantKind,
    /// Brand used for customer-facing communication.
    pub brand: String,
    pub countries: Vec<CountryCode>,
    pub currencies: Vec<Currency>,
    pub default_locale: Locale,
    pub payment: PaymentSetup,
    /// Who is told what (`functions/notify`); absent in older records.
    #[serde(default, skip_serializing_if = "NotifySettings::is_default")]
    pub notifications: NotifySettings,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("tenant id {0:?} must be 2-40 lowercase letters, digits or dashes")]
    BadId(String),
    #[error("a tenant needs at least one country and one currency")]
    Empty,
    #[error("a B2B tenant pays by invoice, a B2C tenant through a payment provider")]
    PaymentMismatch,
    #[error("unknown payment provider {0:?}: stripe or adyen")]
    UnknownProvider(String),
}

impl Tenant {
    pub fn check(&self) -> Result<(), TenantError> {
        if self.countries.is_empty() || self.currencies.is_empty() {
            return Err(TenantError::Empty);
        }
        match (&self.kind, &self.payment) {
            (TenantKind::B2c, PaymentSetup::Provider { provider, .. })
                if !super::payment::provider_known(provider) =>
            {
                Err(TenantError::UnknownProvider(provider.clone()))
            }
            (TenantKind::B2b, PaymentSetup::Invoice)
            | (TenantKind::B2c, PaymentSetup::Provider { .. }) => Ok(()),
            _ => Err(TenantError::PaymentMismatch),
        }
    }

    pub fn pays_by_invoice(&self) -> bool {
        matches!(self.payment, PaymentSetup::Invoice)
    }
}

/// What the store keeps of a key: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub tenant_id: TenantId,
    pub env: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub revoked: bool,
}

/// Whose key it is: a tenant's (`pw_...`, the tenant API) or an
/// operator's (`pwop_...`, the operator API). The prefix is part of the
/// key, and each kind is looked up in its own records: a key of one kind
/// never authenticates as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Tenant,
    Operator,
}

impl KeyKind {
    fn prefix(self) -> &'static str {
        match self {
            KeyKind::Tenant => "pw",
            KeyKind::Operator => "pwop",
        }
    }
}

/// A key as a client presents it, parsed but not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    pub kind: KeyKind,
    pub env: String,
    pub key_id: String,
    secret: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("API key is malformed")]
    Malformed,
}

const KEY_ID_LEN: usize = 16;
const SECRET_LEN: usize = 40;

fn alnum(s: &str, lower_only: bool) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_digit() || b.is_ascii_lowercase() || (!lower_only && b.is_ascii_uppercase())
    })
}

impl PresentedKey {
    /// Parses a key of either kind (`pw_<env>_<key id>_<secret>` or
    /// `pwop_...`); the caller checks [`PresentedKey::kind`].
    pub fn parse(raw: &str) -> Result<PresentedKey, KeyError> {
        let mut parts = raw.split('_');
        let (Some(prefix), Some(env), Some(key_id), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(KeyError::Malformed);
        };
        let kind = [KeyKind::Tenant, KeyKind::Operator]
            .into_iter()
            .find(|k| k.prefix() == prefix)
            .ok_or(KeyError::Malformed)?;
        let env_ok = (1..=12).contains(&env.len()) && env.bytes().all(|b| b.is_ascii_lowercase());
        if !env_ok
            || key_id.len() != KEY_ID_LEN
            || !alnum(key_id, true)
            || secret.len() != SECRET_LEN
            || !alnum(secret, false)
        {
            return Err(KeyError::Malformed);
        }
        Ok(PresentedKey {
            kind,
            env: env.to_string(),
            key_id: key_id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// Constant-time check of the secret against a stored hash, and of
    /// everything else the key names.
    fn matches_secret(&self, kind: KeyKind, key_id: &str, env: &str, sha256_hex: &str) -> bool {
        let Ok(stored) = hex::decode(sha256_hex) else {
            return false;
        };
        let presented = Sha256::digest(self.secret.as_bytes());
        let same: bool = presented.as_slice().ct_eq(&stored).into();
        same && self.kind == kind && key_id == self.key_id && env == self.env
    }

    /// Whether this is the tenant key `record` keeps (constant time).
    pub fn matches(&self, record: &ApiKeyRecord) -> bool {
        !record.revoked
            && self.matches_secret(
                KeyKind::Tenant,
                &record.key_id,
                &record.env,
                &record.secret_sha256,
            )
    }

    /// Whether this is the operator key `record` keeps (constant time).
    pub fn matches_operator(&self, record: &super::operator::OperatorKeyRecord) -> bool {
        !record.revoked
            && self.matches_secret(
                KeyKind::Operator,
                &record.key_id,
                &record.env,
                &record.secret_sha256,
            )
    }
}

/// A freshly minted key of `kind`: its full text (shown once), its id and
/// the hex SHA-256 of its secret (stored).
pub(crate) struct MintedKey {
    pub full: String,
    pub key_id: String,
    pub secret_sha256: String,
}

pub(crate) fn mint_key(kind: KeyKind, env: &str) -> MintedKey {
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    const MIXED: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let mut pick = |alphabet: &[u8], n: usize| -> String {
        (0..n)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect()
    };
    let key_id = pick(LOWER, KEY_ID_LEN);
    let secret = pick(MIXED, SECRET_LEN);
    MintedKey {
        full: format!("{}_{env}_{key_id}_{secret}", kind.prefix()),
        key_id,
        secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
    }
}

/// A freshly minted key: the full text is shown once, the record is stored.
pub struct NewApiKey {
    pub full: String,
    pub record: ApiKeyRecord,
}

pub fn mint_api_key(env: &str, tenant_id: &TenantId) -> NewApiKey {
    let minted = mint_key(KeyKind::Tenant, env);
    let record = ApiKeyRecord {
        key_id: minted.key_id,
        tenant_id: tenant_id.clone(),
        env: env.to_string(),
        secret_sha256: minted.secret_sha256,
        revoked: false,
    };
    NewApiKey {
        full: minted.full,
        record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_key_parses_and_verifies() {
        let tenant = TenantId::parse("demo-brand").unwrap();
        let key = mint_api_key("local", &tenant);
        assert!(key.full.starts_with("pw_local_"));
        assert!(!key.full.contains(&key.record.secret_sha256));
        let presented = PresentedKey::parse(&key.full).unwrap();
        assert_eq!(presented.key_id, key.record.key_id);
        assert!(presented.matches(&key.record));
    }

    #[test]
    fn wrong_secret_env_or_revoked_key_does_not_verify() {
        let tenant = TenantId::parse("demo-brand").unwrap();
        let key = mint_api_key("local", &tenant);
        let mut tampered = key.full.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'a' { 'b' } else { 'a' });
        assert!(!PresentedKey::parse(&tampered).unwrap().matches(&key.record));

        let mut other_env = key.record.clone();
        other_env.env = "live".into();
        assert!(!PresentedKey::parse(&key.full).unwrap().matches(&other_env));

        let mut revoked = key.record.clone();
        revoked.revoked = true;
        assert!(!PresentedKey::parse(&key.full).unwrap().matches(&revoked));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for raw in [
            "",
            "pw_local",
            "xx_local_aaaaaaaaaaaaaaaa_",
            "pw_local_short_secret",
            "pw_LOCAL_aaaaaaaaaaaaaaaa_0123456789012345678901234567890123456789",
            "pw_local_aaaaaaaaaaaaaaaa_0123456789012345678901234567890123456789_x",
        ] {
            assert_eq!(PresentedKey::parse(raw), Err(KeyError::Malformed), "{raw}");
        }
    }

    #[test]
    fn tenant_ids_and_payment_setup_are_checked() {
        assert!(TenantId::parse("acme-gmbh").is_ok());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("-x").is_err());
        let tenant = Tenant {
            id: TenantId::parse("acme").unwrap(),
            name: "ACME".into(),
            kind: TenantKind::B2b,
            brand: "acme".into(),
            countries: vec![CountryCode::DE],
            currencies: vec![Currency::Eur],
            default_locale: Locale::De,
            payment: PaymentSetup::Provider {
                provider: "stripe".into(),
                merchant_account: None,
            },
            notifications: Default::default(),
        };
        assert_eq!(tenant.check(), Err(TenantError::PaymentMismatch));
    }
}
