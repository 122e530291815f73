//! The GoHighLevel verifier, Ed25519 (`X-GHL-Signature`) and legacy RSA (`X-WH-Signature`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::verify_gohighlevel(data);
});
