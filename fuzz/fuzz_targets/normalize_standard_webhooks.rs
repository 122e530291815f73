//! The Standard Webhooks normalizer and its mapping: always an event, the same again on replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::normalize_standard_webhooks(data);
});
