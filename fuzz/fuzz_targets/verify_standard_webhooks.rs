//! The Standard Webhooks verifier, v1 (HMAC) and v1a (Ed25519).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::verify_standard_webhooks(data);
});
