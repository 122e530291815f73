//! The configuration loader on any text, as `edge --check-config` reads a file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::config(data);
});
