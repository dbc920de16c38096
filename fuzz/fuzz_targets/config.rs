//! A config.json of arbitrary bytes: mapped to a model spec, whose tensor list and state sizes are then computed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ternlight_core::untrusted::config(data);
});
