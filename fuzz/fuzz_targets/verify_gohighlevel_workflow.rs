//! The GoHighLevel workflow token check, header and query.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = edge::fuzzing::verify_gohighlevel_workflow(data);
});
