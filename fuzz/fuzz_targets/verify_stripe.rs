//! The Stripe verifier: a delivery that verifies carries the HMAC of `t.body` in a `v1`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::verify_stripe(data);
});
