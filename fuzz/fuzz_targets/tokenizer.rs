//! A tokenizer.json of arbitrary bytes: loaded, then a short text encoded and decoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ternlight_core::untrusted::tokenizer(data);
});
