//! Replays the fuzz corpora (`fuzz/corpus/<target>`) and every crash the fuzzers found (`fuzz/regressions/
//! <target>`) through the same entry points the fuzz targets drive, on stable Rust: no input panics, and every
//! refusal is a non-empty one-line message. Found crashes must now be refused.

use std::path::PathBuf;
use ternlight_core::{untrusted, Result};

type Entry = fn(&[u8]) -> Result<()>;

const TARGETS: [(&str, Entry); 5] = [
    ("safetensors", untrusted::safetensors),
    ("gguf", untrusted::gguf),
    ("config", untrusted::config),
    ("tokenizer", untrusted::tokenizer),
    ("chat_template", untrusted::chat_template),
];

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn fuzz_corpora_and_found_crashes_replay_without_panics() {
    for (target, entry) in TARGETS {
        let corpus = inputs("corpus", target);
        assert!(corpus.len() >= 3, "{target}: the corpus has {} inputs", corpus.len());
        let mut accepted = 0;
        for (path, bytes) in &corpus {
            match entry(bytes) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    let m = e.to_string();
                    assert!(!m.trim().is_empty() && !m.contains('\n'), "{}: {m:?}", path.display());
                }
            }
        }
        assert!(accepted > 0, "{target}: not even the seeds parse");
        for (path, bytes) in inputs("regressions", target) {
            assert!(entry(&bytes).is_err(), "{} is accepted", path.display());
        }
    }
}
