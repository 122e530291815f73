//! contacts-svc's event record decoder: what decodes reads back from its done marker.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = contacts_svc::fuzzing::event_record(data);
});
