//! The image front door on any bytes: format sniffing by magic bytes, the
//! JPEG and PNG header walk (dimensions, pixel limit, ICC, EXIF) and the
//! EXIF orientation parser must never panic, and what they accept must be
//! within the limit they were given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use printworks::render::probe::{exif_orientation, probe};

const MAX_PIXELS: u64 = 100_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = probe(data, MAX_PIXELS) {
        assert!(p.width > 0 && p.height > 0);
        assert!(u64::from(p.width) * u64::from(p.height) <= MAX_PIXELS);
    }
    if let Some(o) = exif_orientation(data) {
        assert!((1..=8).contains(&o.0));
    }
});
