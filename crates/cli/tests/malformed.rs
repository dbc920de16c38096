//! The committed corpus of malformed models (`tests/fixtures/malformed`, written by `tools/malformed_corpus.py`):
//! `ternlight run` on every case exits non-zero within a second with a one-line error naming the problem, and
//! no case makes the process allocate what a lying header claims. Its own test binary, so that the memory
//! high-water mark of its child processes is theirs alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/malformed")
}

/// `ternlight run` on `model` for one token: (exit success, stderr, wall time).
fn run(model: &Path) -> (bool, String, Duration) {
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_ternlight"))
        .args(["--quiet", "run", "--model", model.to_str().unwrap(), "--prompt", "hi", "--max-tokens", "1"])
        .output()
        .expect("binary runs");
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned(), started.elapsed())
}

/// The case's model: its own GGUF file, or the base directory with the case's files put over it.
fn model_of(case: &Path, scratch: &Path) -> PathBuf {
    let gguf = case.join("model.gguf");
    if gguf.exists() {
        return gguf;
    }
    let dir = scratch.join(case.file_name().unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    for base in [corpus().join("base"), case.to_path_buf()] {
        for entry in std::fs::read_dir(base).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() != "expect" {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    dir
}

/// The largest resident set of any child process waited for so far, in bytes.
fn children_peak_rss() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn every_malformed_model_is_refused_quickly_with_a_one_line_error() {
    for base in [corpus().join("base"), corpus().join("base.gguf")] {
        let (ok, err, _) = run(&base);
        assert!(ok, "the unmodified base model {} must run: {err}", base.display());
    }
    let base_peak = children_peak_rss();
    let scratch = tempfile::tempdir().unwrap();
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(corpus().join("cases")).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let expect = std::fs::read_to_string(case.join("expect")).unwrap();
        let (ok, err, took) = run(&model_of(case, scratch.path()));
        let name = case.file_name().unwrap().to_string_lossy();
        let err = err.trim();
        if ok || !err.contains(expect.trim()) || err.lines().count() != 1 || took > Duration::from_secs(1) {
            failures.push(format!("{name} (want `{}`, {took:?}, success {ok}): {err}", expect.trim()));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // Lying headers claim up to exabytes; refusing them must cost no more than running the real model did.
    let peak = children_peak_rss();
    assert!(peak <= base_peak + (64 << 20), "a malformed case peaked at {peak} bytes; the base model at {base_peak}");
}
