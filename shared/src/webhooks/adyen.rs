//! Adyen: a JSON body of `notificationItems`, each item signed on its own:
//! `additionalData.hmacSignature` is base64 of HMAC-SHA256 over
//! `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
//! (absent fields empty), keyed with the hex-decoded HMAC key. Every item
//! must verify, or the whole request is refused. The answer is
//! `[accepted]`, sent only after the events are stored.
//!
//! | eventCode | success | kind | payment id |
//! |---|---|---|---|
//! | `AUTHORISATION` | true | authorized | `pspReference` |
//! | `AUTHORISATION` | false | failed (`reason`) | `pspReference` |
//! | `OFFER_CLOSED` | true | failed | `pspReference` |
//! | `CAPTURE` | true | captured | `originalReference` |
//! | `REFUND` | true | refunded (this refund) | `originalReference` |
//! | `CHARGEBACK` | - | chargeback | `originalReference` |
//!
//! Anything else (a failed capture or refund, reports, ...) is acknowledged
//! as unknown and logged. An event is identified by
//! `pspReference:eventCode:success`: Adyen resends the same triple, and a
//! `false` may be followed by a `true` for the same reference.

use super::{Acknowledgement, PaymentProvider, Secret, WebhookError};
use crate::domain::payment::{PaymentEventKind, PaymentNotification, ProviderAmount};
use crate::domain::signature::hmac_sha256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

pub struct Adyen {
    keys: Vec<Secret>,
}

impl Adyen {
    /// `keys` are the hex-decoded HMAC keys.
    pub fn new(keys: Vec<Secret>) -> Adyen {
        Adyen { keys }
    }
}

fn field<'a>(item: &'a serde_json::Value, name: &str) -> &'a str {
    item[name].as_str().unwrap_or("")
}

/// The string Adyen signs for one notification item.
pub fn signing_string(item: &serde_json::Value) -> String {
    let value = match &item["amount"]["value"] {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => String::new(),
    };
    [
        field(item, "pspReference"),
        field(item, "originalReference"),
        field(item, "merchantAccountCode"),
        field(item, "merchantReference"),
        &value,
        item["amount"]["currency"].as_str().unwrap_or(""),
        field(item, "eventCode"),
        field(item, "success"),
    ]
    .join(":")
}

/// The base64 `hmacSignature` of `item` with the (decoded) `key`.
pub fn sign_item(key: &[u8], item: &serde_json::Value) -> String {
    BASE64.encode(hmac_sha256(key, &[signing_string(item).as_bytes()]))
}

fn invalid(reason: impl Into<String>) -> WebhookError {
    WebhookError::InvalidBody {
        provider: "adyen",
        reason: reason.into(),
    }
}

impl PaymentProvider for Adyen {
    fn name(&self) -> &'static str {
        "adyen"
    }

    fn verify(
        &self,
        _header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        _now: OffsetDateTime,
    ) -> Result<Vec<PaymentNotification>, WebhookError> {
        let doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let items = doc["notificationItems"]
            .as_array()
            .filter(|items| !items.is_empty())
            .ok_or_else(|| invalid("no notificationItems"))?;
        let mut out = Vec::with_capacity(items.len());
        // Verify every item before reading any: one bad item refuses all.
        for (i, wrapper) in items.iter().enumerate() {
            let item = &wrapper["NotificationRequestItem"];
            if !item.is_object() {
                return Err(invalid(format!(
                    "notificationItems[{i}] has no NotificationRequestItem"
                )));
            }
            let Some(given) = item["additionalData"]["hmacSignature"].as_str() else {
                return Err(WebhookError::MissingSignature(
                    "additionalData.hmacSignature",
                ));
            };
            let given = BASE64.decode(given).map_err(|_| {
                WebhookError::MalformedSignature(format!("item {i}: hmacSignature is not base64"))
            })?;
            let data = signing_string(item);
            let mut matched = subtle::Choice::from(0);
            for key in &self.keys {
                let expected = hmac_sha256(key.expose(), &[data.as_bytes()]);
                matched |= expected.as_slice().ct_eq(&given);
            }
            if !bool::from(matched) {
                return Err(WebhookError::BadSignature);
            }
            out.push(notification(item)?);
        }
        Ok(out)
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement {
            content_type: "text/plain",
            body: "[accepted]",
        }
    }
}

fn notification(item: &serde_json::Value) -> Result<PaymentNotification, WebhookError> {
    let psp = field(item, "pspReference");
    let code = field(item, "eventCode");
    if psp.is_empty() || code.is_empty() || psp.len() > 64 || code.len() > 64 {
        return Err(invalid("an item without pspReference or eventCode"));
    }
    let success = field(item, "success") == "true";
    let original = Some(field(item, "originalReference"))
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let (kind, payment_id) = match (code, success) {
        ("AUTHORISATION", true) => (PaymentEventKind::Authorized, Some(psp.to_string())),
        ("AUTHORISATION", false) | ("OFFER_CLOSED", true) => {
            (PaymentEventKind::Failed, Some(psp.to_string()))
        }
        ("CAPTURE", true) => (PaymentEventKind::Captured, original),
        ("REFUND", true) => (PaymentEventKind::Refunded, original),
        ("CHARGEBACK", _) => (PaymentEventKind::Chargeback, original),
        _ => (
            PaymentEventKind::Unknown,
            original.or(Some(psp.to_string())),
        ),
    };
    let amount = match (
        &item["amount"]["value"],
        item["amount"]["currency"].as_str(),
    ) {
        (serde_json::Value::Number(n), Some(currency)) => Some(ProviderAmount {
            value: n
                .as_i64()
                .ok_or_else(|| invalid("amount.value is not an integer"))?,
            currency: currency.to_ascii_uppercase(),
        }),
        _ => None,
    };
    let reason = Some(field(item, "reason"))
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(200).collect());
    Ok(PaymentNotification {
        provider: "adyen".into(),
        event_id: format!("{psp}:{code}:{}", field(item, "success")),
        event_type: code.to_string(),
        kind,
        reference: Some(field(item, "merchantReference"))
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        payment_id,
        amount,
        reason,
        merchant_account: Some(field(item, "merchantAccountCode"))
            .filter(|m| !m.is_empty())
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Adyen's "Verify HMAC signatures" page: this
    /// key, this AUTHORISATION item (no originalReference, so `::`), and
    /// this signature.
    const DOC_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    const DOC_SIGNATURE: &str = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0=";

    fn doc_item() -> serde_json::Value {
        serde_json::json!({
            "additionalData": {"hmacSignature": DOC_SIGNATURE},
            "amount": {"currency": "EUR", "value": 1130},
            "pspReference": "7914073381342284",
            "eventCode": "AUTHORISATION",
            "eventDate": "2019-05-06T17:15:34.121+02:00",
            "merchantAccountCode": "TestMerchant",
            "merchantReference": "TestPayment-1407325143704",
            "paymentMethod": "visa",
            "success": "true"
        })
    }

    fn adyen(keys: &[&str]) -> Adyen {
        Adyen::new(
            keys.iter()
                .map(|k| Secret::new(hex::decode(k).unwrap()))
                .collect(),
        )
    }

    fn body(items: &[serde_json::Value]) -> Vec<u8> {
        let items: Vec<_> = items
            .iter()
            .map(|i| serde_json::json!({"NotificationRequestItem": i}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"live": "false", "notificationItems": items}))
            .unwrap()
    }

    fn verify(a: &Adyen, body: &[u8]) -> Result<Vec<PaymentNotification>, WebhookError> {
        a.verify(&|_| None, body, OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn the_documented_example() {
        assert_eq!(
            signing_string(&doc_item()),
            "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
        );
        assert_eq!(
            sign_item(&hex::decode(DOC_KEY).unwrap(), &doc_item()),
            DOC_SIGNATURE
        );
        let events = verify(&adyen(&[DOC_KEY]), &body(&[doc_item()])).unwrap();
        assert_eq!(events[0].kind, PaymentEventKind::Authorized);
        assert_eq!(events[0].event_id, "7914073381342284:AUTHORISATION:true");
        assert_eq!(
            events[0].reference.as_deref(),
            Some("TestPayment-1407325143704")
        );
    }

    fn signed(key: &str, mut item: serde_json::Value) -> serde_json::Value {
        item["additionalData"]["hmacSignature"] =
            serde_json::json!(sign_item(&hex::decode(key).unwrap(), &item));
        item
    }

    #[test]
    fn every_item_is_verified() {
        let a = adyen(&[DOC_KEY]);
        let capture = signed(
            DOC_KEY,
            serde_json::json!({
                "amount": {"currency": "EUR", "value": 1130}, "pspReference": "8815", "originalReference": "7914073381342284",
                "eventCode": "CAPTURE", "merchantAccountCode": "TestMerchant", "merchantReference": "TestPayment-1407325143704", "success": "true"
            }),
        );
        let events = verify(&a, &body(&[doc_item(), capture.clone()])).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, PaymentEventKind::Captured);
        assert_eq!(events[1].payment_id.as_deref(), Some("7914073381342284"));

        // The second item's amount changed after signing: all refused.
        let mut forged = capture.clone();
        forged["amount"]["value"] = serde_json::json!(1);
        assert_eq!(
            verify(&a, &body(&[doc_item(), forged])),
            Err(WebhookError::BadSignature)
        );
        // The second item unsigned.
        let mut unsigned = capture.clone();
        unsigned["additionalData"] = serde_json::json!({});
        assert!(matches!(
            verify(&a, &body(&[doc_item(), unsigned])),
            Err(WebhookError::MissingSignature(_))
        ));
        // Wrong key; a rotation accepts old and new.
        let other = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";
        assert_eq!(
            verify(&adyen(&[other]), &body(&[doc_item()])),
            Err(WebhookError::BadSignature)
        );
        assert!(verify(&adyen(&[other, DOC_KEY]), &body(&[doc_item()])).is_ok());
        // Garbage.
        assert!(matches!(
            verify(&a, b"[accepted]"),
            Err(WebhookError::InvalidBody { .. })
        ));
        assert!(matches!(
            verify(&a, br#"{"notificationItems": []}"#),
            Err(WebhookError::InvalidBody { .. })
        ));
        let mut not_b64 = doc_item();
        not_b64["additionalData"]["hmacSignature"] = serde_json::json!("%%%");
        assert!(matches!(
            verify(&a, &body(&[not_b64])),
            Err(WebhookError::MalformedSignature(_))
        ));
    }

    #[test]
    fn codes_map_to_kinds() {
        let a = adyen(&[DOC_KEY]);
        let kind = |code: &str, success: &str| {
            let item = signed(
                DOC_KEY,
                serde_json::json!({
                    "amount": {"currency": "EUR", "value": 500}, "pspReference": "9", "originalReference": "1",
                    "eventCode": code, "success": success, "merchantReference": "r", "reason": "Refused"
                }),
            );
            verify(&a, &body(&[item])).unwrap().remove(0)
        };
        assert_eq!(
            kind("AUTHORISATION", "false").kind,
            PaymentEventKind::Failed
        );
        assert_eq!(
            kind("AUTHORISATION", "false").reason.as_deref(),
            Some("Refused")
        );
        assert_eq!(kind("REFUND", "true").kind, PaymentEventKind::Refunded);
        assert_eq!(kind("REFUND", "false").kind, PaymentEventKind::Unknown);
        assert_eq!(
            kind("CHARGEBACK", "true").kind,
            PaymentEventKind::Chargeback
        );
        assert_eq!(
            kind("REPORT_AVAILABLE", "true").kind,
            PaymentEventKind::Unknown
        );
        assert_ne!(
            kind("AUTHORISATION", "false").event_id,
            kind("AUTHORISATION", "true").event_id
        );
    }
}
