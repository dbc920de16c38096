//! A GGUF file of arbitrary bytes: header parsed, tensors read, metadata mapped to a model spec.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ternlight_core::untrusted::gguf(data);
});
