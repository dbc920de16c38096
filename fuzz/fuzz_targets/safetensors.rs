//! A safetensors file of arbitrary bytes: parsed, then every tensor it declares read and decoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ternlight_core::untrusted::safetensors(data);
});
