//! The Stripe normalizer: always an event, the same again from the recorded headers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::normalize_stripe(data);
});
