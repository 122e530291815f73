//! The GoHighLevel marketplace normalizer: always an event, the same again on replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::normalize_gohighlevel(data);
});
