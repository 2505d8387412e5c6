//! Timestamped HMAC-SHA256 signatures of a body: the scheme Stripe signs
//! its webhook events with, which printworks also signs its own tenant
//! webhook calls with. A header `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`
//! carries, per secret, the HMAC-SHA256 of `"{t}.{body}"` keyed with the
//! secret as it is.
//!
//! It lives in the domain because two layers need it and the domain is
//! below both: `domain::notify` signs outgoing tenant calls, the Stripe
//! provider of the payment-webhook layer verifies incoming events. Kept
//! there, the domain would have to import a layer above it; the domain
//! imports nothing above it. It is pure computation on bytes, no I/O, and
//! imports nothing else of the crate.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// Seconds a signature's timestamp may be away from now, in either direction.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature header was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    #[error("the signature timestamp is {0} s away from now (at most 300 s allowed)")]
    Stale(i64),
    #[error("the signature does not match")]
    Mismatch,
}

/// HMAC-SHA256 of the concatenated `parts`, keyed with `key` (any length).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The hex `v1` signature of `body` at `timestamp` with `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    hex::encode(hmac_sha256(
        secret,
        &[timestamp.to_string().as_bytes(), b".", body],
    ))
}

/// A whole `t=...,v1=...` header for `body`, one `v1` per secret.
pub fn signature_header(secrets: &[&[u8]], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&sign(secret, timestamp, body));
    }
    header
}

/// The header's timestamp and its `v1` signatures (decoded); other schemes
/// (`v0`) are ignored, as Stripe says.
fn parse_header(raw: &str) -> Result<(i64, Vec<Vec<u8>>), SignatureError> {
    let malformed = |why: &str| SignatureError::Malformed(why.to_string());
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in raw.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" if timestamp.is_some() => return Err(malformed("more than one t")),
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| malformed("t is not a number"))?,
                )
            }
            "v1" => {
                // A v1 that is not 64 hex digits can never match; skip it.
                if let Ok(sig) = hex::decode(value)
                    && sig.len() == 32
                {
                    signatures.push(sig);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| malformed("no t"))?;
    if signatures.is_empty() {
        return Err(malformed("no v1 signature"));
    }
    Ok((timestamp, signatures))
}

/// Checks a `t=...,v1=...` header against `body`: the timestamp within
/// [`TOLERANCE_SECS`] of `now`, and some `v1` equal (in constant time) to
/// the HMAC-SHA256 of `"{t}.{body}"` under some secret.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now: OffsetDateTime,
) -> Result<(), SignatureError> {
    verify_signature_by(header, body, secrets, now).map(drop)
}

/// [`verify_signature`], saying which of `secrets` signed (the first that
/// did): every secret is tried, in constant time each.
pub fn verify_signature_by(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now: OffsetDateTime,
) -> Result<usize, SignatureError> {
    let (timestamp, signatures) = parse_header(header)?;
    let age = now.unix_timestamp().saturating_sub(timestamp);
    if age.unsigned_abs() > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Stale(age));
    }
    let t = timestamp.to_string();
    let mut signer = None;
    for (index, secret) in secrets.iter().enumerate() {
        let expected = hmac_sha256(secret, &[t.as_bytes(), b".", body]);
        let mut matched = subtle::Choice::from(0);
        for sig in &signatures {
            matched |= expected.as_slice().ct_eq(sig);
        }
        if bool::from(matched) && signer.is_none() {
            signer = Some(index);
        }
    }
    signer.ok_or(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const NOW: i64 = 1_700_000_000;

    fn at(t: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(t).unwrap()
    }

    /// Stripe's SDKs compute `v1` as `HMAC-SHA256(secret, "{t}.{payload}")`
    /// in hex (stripe-python `WebhookSignature._compute_signature`); with the
    /// SDKs' own test constants (secret `whsec_test_secret`, payload
    /// `{"id": "evt_test_webhook", "object": "event"}`) and t = 1492774577
    /// (the timestamp of the header in Stripe's docs), stripe-python 16.1
    /// gives this value, and `Webhook.construct_event` accepts the header.
    #[test]
    fn the_sdk_reference_vector() {
        let payload = br#"{"id": "evt_test_webhook", "object": "event"}"#;
        assert_eq!(
            sign(SECRET, 1_492_774_577, payload),
            "c137b1b62277d523cf8fed4dfbd0170a9a5b8a380e00cc3711d4bf0652f2ce7a"
        );
        assert_eq!(
            signature_header(&[SECRET, b"whsec_other"], 1_492_774_577, payload),
            format!(
                "t=1492774577,v1={},v1={}",
                sign(SECRET, 1_492_774_577, payload),
                sign(b"whsec_other", 1_492_774_577, payload)
            )
        );
    }

    #[test]
    fn verification_checks_time_secret_and_shape() {
        let body = br#"{"id":"evt_1"}"#;
        let good = signature_header(&[SECRET], NOW, body);
        assert_eq!(verify_signature(&good, body, &[SECRET], at(NOW)), Ok(()));
        assert_eq!(
            verify_signature(&good, b"{\"id\":\"evt_2\"}", &[SECRET], at(NOW)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&good, body, &[b"whsec_other"], at(NOW)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&good, body, &[SECRET], at(NOW + 301)),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify_signature(&good, body, &[SECRET], at(NOW - 301)),
            Err(SignatureError::Stale(-301))
        );
        assert_eq!(
            verify_signature(&good, body, &[SECRET], at(NOW + 300)),
            Ok(())
        );
        for malformed in [
            format!("v1={}", sign(SECRET, NOW, body)),
            format!("t={NOW}"),
            format!("t=soon,v1={}", sign(SECRET, NOW, body)),
            format!("t={NOW},t={NOW},v1={}", sign(SECRET, NOW, body)),
        ] {
            assert!(
                matches!(
                    verify_signature(&malformed, body, &[SECRET], at(NOW)),
                    Err(SignatureError::Malformed(_))
                ),
                "{malformed}"
            );
        }
    }
}
