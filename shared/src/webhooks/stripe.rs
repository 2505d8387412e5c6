//! Stripe: `Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]`, each
//! `v1` an HMAC-SHA256 of `"{t}.{raw body}"` keyed with a webhook secret
//! (`whsec_...`, used as it is). Any `v1` matching any configured secret
//! verifies; the timestamp must be within 300 s of now, either way.
//!
//! Events read (others are acknowledged as unknown):
//!
//! | Stripe type | kind | amount |
//! |---|---|---|
//! | `payment_intent.amount_capturable_updated` | authorized | `amount_capturable` |
//! | `payment_intent.succeeded` | captured | `amount_received` |
//! | `payment_intent.payment_failed` | failed | - |
//! | `payment_intent.requires_action` | action required | - |
//! | `charge.refunded` | refunded (total so far) | `amount_refunded` |
//! | `charge.dispute.created` | chargeback | `amount` |
//!
//! The order is found by `metadata.order_reference` (set on the
//! PaymentIntent; Stripe copies it to the charge), else by the
//! PaymentIntent id of an earlier event (a dispute carries no metadata).

use super::{Acknowledgement, PaymentProvider, Secret, WebhookError};
use crate::domain::payment::{PaymentEventKind, PaymentNotification, ProviderAmount};
use crate::domain::signature;
use time::OffsetDateTime;

pub const SIGNATURE_HEADER: &str = "stripe-signature";

pub struct Stripe {
    secrets: Vec<Secret>,
}

impl Stripe {
    pub fn new(secrets: Vec<Secret>) -> Stripe {
        Stripe { secrets }
    }
}

/// The scheme itself (HMAC-SHA256 of `"{t}.{body}"`, the `t=...,v1=...`
/// header) is [`crate::domain::signature`], shared with the tenant webhooks
/// printworks signs; these are its names in Stripe's terms.
pub use crate::domain::signature::{TOLERANCE_SECS, sign, signature_header};

/// Checks a `Stripe-Signature` header against `body`: the timestamp within
/// [`TOLERANCE_SECS`] of `now`, and some `v1` equal (in constant time) to
/// the HMAC-SHA256 of `"{t}.{body}"` under some secret
/// ([`signature::verify_signature`]). The scheme of Stripe's webhooks and of
/// printworks' own tenant webhooks.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now: OffsetDateTime,
) -> Result<(), WebhookError> {
    Ok(signature::verify_signature(header, body, secrets, now)?)
}

impl PaymentProvider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn verify(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Vec<PaymentNotification>, WebhookError> {
        let raw =
            header(SIGNATURE_HEADER).ok_or(WebhookError::MissingSignature("Stripe-Signature"))?;
        let secrets: Vec<&[u8]> = self.secrets.iter().map(Secret::expose).collect();
        let signer = signature::verify_signature_by(&raw, body, &secrets, now)?;
        let mut event = parse_event(body)?;
        // Verified for the account whose endpoint secret signed it.
        event.merchant_account = self.secrets[signer].account().map(str::to_string);
        Ok(vec![event])
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement {
            content_type: "application/json",
            body: r#"{"received":true}"#,
        }
    }
}

fn invalid(reason: impl Into<String>) -> WebhookError {
    WebhookError::InvalidBody {
        provider: "stripe",
        reason: reason.into(),
    }
}

/// A Stripe event (already verified) in our terms.
pub fn parse_event(body: &[u8]) -> Result<PaymentNotification, WebhookError> {
    let event: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let id = text(&event["id"])
        .filter(|id| !id.is_empty() && id.len() <= 255)
        .ok_or_else(|| invalid("no event id"))?;
    let event_type = text(&event["type"]).ok_or_else(|| invalid("no event type"))?;
    let object = &event["data"]["object"];
    let (kind, amount_field) = match event_type.as_str() {
        "payment_intent.amount_capturable_updated" => {
            (PaymentEventKind::Authorized, Some("amount_capturable"))
        }
        "payment_intent.succeeded" => (PaymentEventKind::Captured, Some("amount_received")),
        "payment_intent.payment_failed" => (PaymentEventKind::Failed, None),
        "payment_intent.requires_action" => (PaymentEventKind::ActionRequired, None),
        "charge.refunded" => (PaymentEventKind::RefundedTotal, Some("amount_refunded")),
        "charge.dispute.created" => (PaymentEventKind::Chargeback, Some("amount")),
        _ => (PaymentEventKind::Unknown, None),
    };
    let amount = match amount_field {
        Some(field) if kind != PaymentEventKind::Unknown => {
            let value = object[field]
                .as_i64()
                .ok_or_else(|| invalid(format!("data.object.{field} is not an integer")))?;
            let currency = text(&object["currency"])
                .ok_or_else(|| invalid("data.object.currency is missing"))?;
            Some(ProviderAmount {
                value,
                currency: currency.to_ascii_uppercase(),
            })
        }
        _ => None,
    };
    let payment_id = if event_type.starts_with("payment_intent.") {
        text(&object["id"])
    } else {
        text(&object["payment_intent"])
    };
    let reason = object["last_payment_error"]["message"]
        .as_str()
        .or_else(|| object["last_payment_error"]["code"].as_str())
        .map(|r| r.chars().take(200).collect());
    Ok(PaymentNotification {
        provider: "stripe".into(),
        event_id: id,
        event_type,
        kind,
        reference: text(&object["metadata"]["order_reference"]),
        payment_id,
        amount,
        reason,
        merchant_account: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const NOW: i64 = 1_700_000_000;

    fn at(t: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(t).unwrap()
    }

    fn body() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": "evt_1", "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_1", "amount_received": 4990, "currency": "eur",
                                "metadata": {"order_reference": "demo-brand:ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f90"}}}
        }))
        .unwrap()
    }

    fn verify(
        secrets: &[&[u8]],
        header: Option<String>,
        body: &[u8],
        now: i64,
    ) -> Result<Vec<PaymentNotification>, WebhookError> {
        let stripe = Stripe::new(secrets.iter().map(|s| Secret::new(*s)).collect());
        stripe.verify(
            &|name| (name == SIGNATURE_HEADER).then(|| header.clone()).flatten(),
            body,
            at(now),
        )
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
    }

    #[test]
    fn signature_vectors() {
        let body = body();
        let good = signature_header(&[SECRET], NOW, &body);
        let ok = verify(&[SECRET], Some(good.clone()), &body, NOW).unwrap();
        assert_eq!(ok[0].kind, PaymentEventKind::Captured);
        assert_eq!(
            ok[0].amount,
            Some(ProviderAmount {
                value: 4990,
                currency: "EUR".into()
            })
        );
        assert_eq!(ok[0].payment_id.as_deref(), Some("pi_1"));

        // One byte of the body changed.
        let mut tampered = body.clone();
        let i = tampered.iter().position(|b| *b == b'4').unwrap();
        tampered[i] = b'5';
        assert_eq!(
            verify(&[SECRET], Some(good.clone()), &tampered, NOW),
            Err(WebhookError::BadSignature)
        );

        // The same JSON re-serialized (pretty): other bytes, so no match.
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert_ne!(pretty, body);
        assert_eq!(
            verify(&[SECRET], Some(good.clone()), &pretty, NOW),
            Err(WebhookError::BadSignature)
        );

        // Wrong secret.
        assert_eq!(
            verify(&[b"whsec_other"], Some(good.clone()), &body, NOW),
            Err(WebhookError::BadSignature)
        );

        // 301 s old and 301 s ahead; 300 s either way is still fine.
        for (skew, result) in [
            (301, Err(WebhookError::StaleTimestamp(301))),
            (-301, Err(WebhookError::StaleTimestamp(-301))),
        ] {
            let header = signature_header(&[SECRET], NOW - skew, &body);
            assert_eq!(
                verify(&[SECRET], Some(header), &body, NOW).map(|_| ()),
                result
            );
        }
        for skew in [300, -300] {
            let header = signature_header(&[SECRET], NOW - skew, &body);
            assert!(verify(&[SECRET], Some(header), &body, NOW).is_ok());
        }

        // Rotation: Stripe signs with the old and the new secret; we know
        // either one, or both.
        let old: &[u8] = b"whsec_old";
        let new: &[u8] = b"whsec_new";
        let both = signature_header(&[old, new], NOW, &body);
        assert!(verify(&[new], Some(both.clone()), &body, NOW).is_ok());
        assert!(verify(&[old], Some(both.clone()), &body, NOW).is_ok());
        assert!(verify(&[b"whsec_unrelated", new], Some(both.clone()), &body, NOW).is_ok());
        let only_new = signature_header(&[new], NOW, &body);
        assert!(verify(&[old, new], Some(only_new), &body, NOW).is_ok());
        assert_eq!(
            verify(&[b"whsec_unrelated"], Some(both), &body, NOW),
            Err(WebhookError::BadSignature)
        );

        // Missing t, missing v1, garbage, no header.
        let v1 = sign(SECRET, NOW, &body);
        assert!(matches!(
            verify(&[SECRET], Some(format!("v1={v1}")), &body, NOW),
            Err(WebhookError::MalformedSignature(_))
        ));
        assert!(matches!(
            verify(&[SECRET], Some(format!("t={NOW}")), &body, NOW),
            Err(WebhookError::MalformedSignature(_))
        ));
        assert!(matches!(
            verify(&[SECRET], Some(format!("t={NOW},v0={v1}")), &body, NOW),
            Err(WebhookError::MalformedSignature(_))
        ));
        assert!(matches!(
            verify(&[SECRET], Some(format!("t=soon,v1={v1}")), &body, NOW),
            Err(WebhookError::MalformedSignature(_))
        ));
        assert!(matches!(
            verify(
                &[SECRET],
                Some(format!("t={NOW},t={NOW},v1={v1}")),
                &body,
                NOW
            ),
            Err(WebhookError::MalformedSignature(_))
        ));
        assert!(matches!(
            verify(&[SECRET], Some("\u{0}=,,==".into()), &body, NOW),
            Err(WebhookError::MalformedSignature(_))
        ));
        assert_eq!(
            verify(&[SECRET], None, &body, NOW),
            Err(WebhookError::MissingSignature("Stripe-Signature"))
        );
        // A short or non-hex v1 next to the right one does not hurt.
        assert!(
            verify(
                &[SECRET],
                Some(format!("t={NOW},v1=zz,v1=abcd,v1={v1}")),
                &body,
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn events_map_to_kinds() {
        let parse = |v: serde_json::Value| parse_event(&serde_json::to_vec(&v).unwrap());
        let e = parse(serde_json::json!({"id": "evt_2", "type": "charge.dispute.created",
            "data": {"object": {"id": "dp_1", "amount": 4990, "currency": "eur", "payment_intent": "pi_1", "metadata": {}}}})).unwrap();
        assert_eq!(
            (e.kind, e.payment_id.as_deref(), e.reference),
            (PaymentEventKind::Chargeback, Some("pi_1"), None)
        );
        let e = parse(serde_json::json!({"id": "evt_3", "type": "payment_intent.payment_failed",
            "data": {"object": {"id": "pi_1", "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}}})).unwrap();
        assert_eq!(
            (e.kind, e.reason.as_deref()),
            (PaymentEventKind::Failed, Some("Your card was declined."))
        );
        let e = parse(
            serde_json::json!({"id": "evt_4", "type": "customer.created", "data": {"object": {}}}),
        )
        .unwrap();
        assert_eq!(e.kind, PaymentEventKind::Unknown);
        assert!(parse(serde_json::json!({"type": "charge.refunded"})).is_err());
        assert!(parse(serde_json::json!({"id": "evt_5", "type": "charge.refunded", "data": {"object": {"amount_refunded": "lots", "currency": "eur"}}})).is_err());
        assert!(parse_event(b"not json").is_err());
    }
}
