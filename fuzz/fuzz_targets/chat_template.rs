//! A chat template of arbitrary bytes rendered with a short conversation, under the renderer's limits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ternlight_core::untrusted::chat_template(data);
});
