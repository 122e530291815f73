//! `Stripe-Signature` parsing: parsed or refused, and what parses is written back the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::stripe_header(data);
});
