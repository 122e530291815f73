//! contacts-svc's done marker decoder: what decodes is written and read back the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = contacts_svc::fuzzing::done_marker(data);
});
