//! The generic HMAC verifier, as the github, shopify and slack presets and a custom source.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::verify_hmac(data);
});
