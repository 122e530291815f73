//! contacts-svc's stored contact decoder: what decodes encodes to the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = contacts_svc::fuzzing::contact_value(data);
});
