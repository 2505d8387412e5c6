//! The payment providers' signature checks on any header and body: Stripe's
//! `t=...,v1=...` header parser and verifier, Adyen's per-item HMAC check
//! over any JSON, and both event mappers must never panic, and must never
//! accept what was not signed with the secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use printworks::webhooks::adyen::Adyen;
use printworks::webhooks::stripe::{self, Stripe};
use printworks::webhooks::{PaymentProvider, Secret};

fuzz_target!(|data: &[u8]| {
    // The first line is the header, the rest the body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let header = String::from_utf8_lossy(&data[..split]).into_owned();
    let body = data.get(split + 1..).unwrap_or_default();
    let now = time::OffsetDateTime::from_unix_timestamp(1_795_341_661).expect("a valid time");

    let secret = b"whsec_fuzz";
    if stripe::verify_signature(&header, body, &[secret], now).is_ok() {
        // Only a real signature gets through: the fuzzer cannot forge one.
        let t = header
            .split(',')
            .find_map(|p| p.trim().strip_prefix("t="))
            .and_then(|t| t.parse::<i64>().ok())
            .expect("an accepted header has a timestamp");
        assert!(
            header
                .to_ascii_lowercase()
                .contains(&stripe::sign(secret, t, body))
        );
    }
    let stripe = Stripe::new(vec![Secret::new(secret.to_vec())]);
    let _ = stripe.verify(
        &|name: &str| (name == stripe::SIGNATURE_HEADER).then(|| header.clone()),
        body,
        now,
    );
    let _ = stripe::parse_event(body);
    let adyen = Adyen::new(vec![Secret::new(vec![0x44; 32])]);
    let _ = adyen.verify(&|_: &str| None, body, now);
});
