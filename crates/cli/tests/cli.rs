//! The `ternlight` binary end to end: fidelity through `logits` on both paths, `run`, `inspect`, and a clear
//! one-line error with a non-zero exit for every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use ternlight_core::oracle::{max_abs_diff, Oracle};
use ternlight_core::tensors::{SafetensorsCheckpoint, TensorSource};

/// A fixture's directory; `demo` is the shipped demo model, whose oracle comes from the PyTorch code that trained it.
fn fixture(arch: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    match arch {
        "demo" => root.join("models/demo"),
        _ => root.join("tests/fixtures").join(arch),
    }
}

fn ternlight(args: &[&str]) -> Output {
    ternlight_cached(&std::env::temp_dir().join("ternlight-test-cache"), args)
}

fn ids_arg(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn logits_via_cli(dir: &Path, ids: &[u32], step_from: Option<usize>) -> Vec<f32> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let ids = ids_arg(ids);
    let mut args =
        vec!["logits", "--model", dir.to_str().unwrap(), "--ids", &ids, "--out", out.path().to_str().unwrap()];
    let n;
    if let Some(s) = step_from {
        n = s.to_string();
        args.extend(["--step-from", &n]);
    }
    let o = ternlight(&args);
    assert!(o.status.success(), "logits failed: {}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(out.path()).unwrap();
    SafetensorsCheckpoint::from_files(vec![("logits".into(), bytes)]).unwrap().f32("logits").unwrap()
}

fn fidelity(arch: &str) {
    fidelity_of(&fixture(arch), arch);
}

/// Logits of the model at `model` (a directory or a GGUF file) against the oracle of fixture `arch`.
fn fidelity_of(dir: &Path, arch: &str) {
    let oracle = Oracle::open(&fixture(arch)).unwrap();
    let t = oracle.input_ids.len();
    for step_from in [None, Some(1), Some(t / 2)] {
        let got = logits_via_cli(dir, &oracle.input_ids, step_from);
        let d = max_abs_diff(&got, &oracle.logits);
        assert!(d < 1e-3, "{arch} --step-from {step_from:?}: max abs diff {d}");
    }
    let n = oracle.gen_logits.len() / (oracle.logits.len() / t);
    let got = logits_via_cli(dir, &oracle.gen_ids[..t + n - 1], Some(t));
    let vocab = oracle.logits.len() / t;
    let d = max_abs_diff(&got[(t - 1) * vocab..], &oracle.gen_logits);
    assert!(d < 1e-3, "{arch} generation path: max abs diff {d}");
}

#[test]
fn logits_match_transformers_for_llama() {
    fidelity("llama");
}

#[test]
fn logits_match_transformers_for_qwen3() {
    fidelity("qwen3");
}

#[test]
fn logits_match_transformers_for_gemma3() {
    fidelity("gemma3");
}

#[test]
fn logits_match_transformers_for_qwen3_5() {
    fidelity("qwen3_5");
}

#[test]
fn logits_match_transformers_for_qwen3_next() {
    fidelity("qwen3_next");
}

#[test]
fn logits_match_transformers_for_minimax() {
    fidelity("minimax");
}

#[test]
fn logits_match_transformers_for_kimi_linear() {
    fidelity("kimi_linear");
}

#[test]
fn logits_match_transformers_for_falcon_h1() {
    fidelity("falcon_h1");
}

#[test]
fn logits_match_fla_for_gsa() {
    fidelity("gsa");
}

#[test]
fn logits_match_fla_for_rwkv7() {
    fidelity("rwkv7");
}

#[test]
fn logits_match_transformers_for_bitnet_packed_and_online() {
    fidelity("bitnet_packed");
    fidelity("bitnet_online");
}

#[test]
fn logits_match_fla_for_fla_bitnet() {
    fidelity("fla_bitnet");
}

#[test]
fn logits_match_numpy_for_bitnet_with_hybrid_gated_flow() {
    fidelity("bitnet_hgf");
}

#[test]
fn logits_match_fla_for_kda() {
    fidelity("kda");
}

#[test]
fn logits_match_transformers_for_olmo_hybrid() {
    fidelity("olmo_hybrid");
}

#[test]
fn logits_match_fla_for_gated_deltanet() {
    fidelity("gated_deltanet");
}

#[test]
fn logits_match_fla_for_gated_deltanet_hybrid() {
    fidelity("gated_deltanet_hybrid");
}

#[test]
fn logits_match_fla_for_deltanet() {
    fidelity("deltanet");
}

#[test]
fn logits_match_fla_for_gla() {
    fidelity("gla");
}

#[test]
fn logits_match_fla_for_hgrn2() {
    fidelity("hgrn2");
}

#[test]
fn logits_match_transformers_for_lfm2() {
    fidelity("lfm2");
}

#[test]
fn logits_match_fla_for_linear_attn() {
    fidelity("linear_attn");
}

#[test]
fn run_streams_tokens_and_reports_speeds() {
    let dir = fixture("gemma3");
    let args = ["run", "--model", dir.to_str().unwrap(), "--prompt", "Hello", "--max-tokens", "12"];
    let sampled = |seed: &str| ternlight(&[&args[..], &["--temperature", "0.8", "--seed", seed]].concat());
    let o = sampled("3");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!o.stdout.is_empty());
    for what in ["prefill", "decode", "tok/s", "time to first token", "generated 12 tokens"] {
        assert!(err.contains(what), "missing `{what}` in: {err}");
    }
    let again = sampled("3");
    assert_eq!(o.stdout, again.stdout, "same seed, same text");
}

#[test]
fn inspect_reports_schedule_and_needs() {
    let o = ternlight(&["inspect", "--model", fixture("gemma3").to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["model_type"], "gemma3_text");
    assert_eq!(v["layers"].as_array().unwrap().len(), 4);
    assert!(v["layers"][0]["kind"].as_str().unwrap().starts_with("sliding_attention(16)"));
    assert_eq!(v["parameters"], 165056);
    assert_eq!(v["memory"]["kv_cache_bytes_per_token"], 4 * 2 * 2 * 16 * 4);
    assert_eq!(v["memory"]["fixed_state_bytes"], 0);
    // Three window-16 layers keep 16 positions; the global layer keeps them all.
    assert_eq!(v["memory"]["context_bytes"]["32768"], 2 * 2 * 16 * 4 * (3 * 16 + 32768));
    assert_eq!(v["bytes_by_dtype"]["BF16"], 2 * 165056);
}

#[test]
fn inspect_shows_an_attention_policy_and_its_memory() {
    let dir = fixture("gemma3");
    let args = ["inspect", "--model", dir.to_str().unwrap(), "--json", "--attention-policy"];
    let o = ternlight(&[&args[..], &["sliding:64+sinks:4"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["layers"][3]["kind"].as_str().unwrap().starts_with("attention[sliding(64)+sinks(4)+streaming]"));
    // Every layer now keeps a bounded window: three of 16 positions, the global one 64 + 4 sinks.
    assert_eq!(v["memory"]["context_bytes"]["32768"], 2 * 2 * 16 * 4 * (3 * 16 + 68));
    let o = ternlight(&[&args[..], &["sliding:0"]].concat());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least one position"));
}

#[test]
fn inspect_reports_fixed_state_of_linear_attention_layers() {
    let o = ternlight(&["inspect", "--model", fixture("qwen3_5").to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    // GDN: 4 value heads x 16 x 16 state + 128 conv channels x 3 history, f32.
    let gdn_state = 4 * (4 * 16 * 16 + 128 * 3);
    for l in &layers[..3] {
        assert_eq!(l["kind"], "gated_deltanet + gated_mlp(Silu)");
        assert_eq!((l["kv_bytes_per_token"].as_u64(), l["state_bytes"].as_u64()), (Some(0), Some(gdn_state)));
    }
    let kv = 2 * 2 * 16 * 4;
    assert_eq!(layers[3]["kv_bytes_per_token"], kv);
    assert_eq!(v["memory"]["fixed_state_bytes"], 3 * gdn_state);
    assert_eq!(v["memory"]["context_bytes"]["131072"], kv * 131072 + 3 * gdn_state);
}

/// A copy of a fixture that a test may damage.
fn scratch_copy(arch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture(arch).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn assert_clear_failure(args: &[&str], expect: &[&str]) {
    let o = ternlight(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    for e in expect {
        assert!(line.contains(e), "{args:?}: `{e}` not in `{line}`");
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn rewrite_header(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    f(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn bad_input_gets_one_clear_line_and_a_nonzero_exit() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let out = out.path().to_str().unwrap();
    let good = fixture("llama");
    let good = good.to_str().unwrap();

    assert_clear_failure(
        &["logits", "--model", "/no/such/dir", "--ids", "1", "--out", out],
        &["/no/such/dir", "does not exist"],
    );
    assert_clear_failure(&["logits", "--model", good, "--ids", "1,256", "--out", out], &["256", "vocabulary"]);
    assert_clear_failure(&["logits", "--model", good, "--ids", "", "--out", out], &["empty"]);
    assert_clear_failure(&["run", "--model", good, "--prompt", ""], &["no tokens"]);
    assert_clear_failure(&["run", "--model", good, "--prompt", "a long prompt", "--context", "4"], &["exceeds", "4"]);
    assert_clear_failure(&["run", "--model", good, "--prompt", "hi", "--context", "100000"], &["max context", "512"]);

    let d = scratch_copy("llama");
    let p = d.path().to_str().unwrap();
    let st = d.path().join("model.safetensors");
    let full = std::fs::read(&st).unwrap();
    for cut in [4, 100, full.len() / 2, full.len() - 2] {
        std::fs::write(&st, &full[..cut]).unwrap();
        assert_clear_failure(&["inspect", "--model", p], &["model.safetensors", "malformed"]);
    }
    std::fs::write(&st, &full).unwrap();

    rewrite_header(d.path(), |h| h["model.norm.weight"]["data_offsets"][1] = serde_json::json!(999_999_999u64));
    assert_clear_failure(&["inspect", "--model", p], &["model.safetensors", "malformed"]);
    std::fs::write(&st, &full).unwrap();
    rewrite_header(d.path(), |h| h["model.norm.weight"]["dtype"] = serde_json::json!("F32"));
    assert_clear_failure(&["inspect", "--model", p], &["model.safetensors", "malformed"]);
    std::fs::write(&st, &full).unwrap();
    rewrite_header(d.path(), |h| {
        h["model.norm.weight"]["dtype"] = serde_json::json!("I16");
    });
    assert_clear_failure(&["logits", "--model", p, "--ids", "1", "--out", out], &["model.norm.weight", "dtype", "I16"]);
    std::fs::write(&st, &full).unwrap();

    edit_config(d.path(), |c| c["intermediate_size"] = serde_json::json!(96));
    assert_clear_failure(&["logits", "--model", p, "--ids", "1", "--out", out], &["mlp", "[96, 64]", "[128, 64]"]);
    edit_config(d.path(), |c| {
        c["intermediate_size"] = serde_json::json!(128);
        c.as_object_mut().unwrap().remove("num_attention_heads");
    });
    assert_clear_failure(&["inspect", "--model", p], &["config.json", "num_attention_heads", "missing"]);
    edit_config(d.path(), |c| {
        c["num_attention_heads"] = serde_json::json!(4);
        c["model_type"] = serde_json::json!("mamba9");
    });
    assert_clear_failure(&["inspect", "--model", p], &["mamba9", "llama", "qwen3", "gemma3_text"]);
    std::fs::write(d.path().join("config.json"), b"{ \"model_type\": ").unwrap();
    assert_clear_failure(&["inspect", "--model", p], &["config.json", "invalid JSON"]);
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    assert_clear_failure(&["inspect", "--model", p], &["config.json"]);
}

#[test]
fn chat_prompts_are_rendered_through_the_template() {
    let d = scratch_copy("qwen3");
    let template = r#"{"chat_template": "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"}"#;
    std::fs::write(d.path().join("tokenizer_config.json"), template).unwrap();
    let o =
        ternlight(&["run", "--model", d.path().to_str().unwrap(), "--prompt", " hi ", "--chat", "--max-tokens", "3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let rendered = "<|user|>hi\n<|assistant|>";
    assert!(err.contains(&format!("prompt {} tokens", rendered.len())), "{err}");
}

#[test]
fn run_without_a_model_uses_the_built_in_demo_model() {
    let args = ["--prompt", "lighthouse (noun):", "--max-tokens", "12"];
    let built_in = ternlight(&[&["run"], &args[..]].concat());
    assert!(built_in.status.success(), "{}", String::from_utf8_lossy(&built_in.stderr));
    let demo = fixture("demo");
    let from_dir = ternlight(&[&["run", "--model", demo.to_str().unwrap()], &args[..]].concat());
    assert!(from_dir.status.success(), "{}", String::from_utf8_lossy(&from_dir.stderr));
    let text = String::from_utf8_lossy(&built_in.stdout);
    assert!(text.split_whitespace().count() >= 3, "the demo model wrote {text:?}");
    assert_eq!(text, String::from_utf8_lossy(&from_dir.stdout));
}

#[test]
fn bitnet_converts_to_tq1_0_and_tq2_0_gguf_and_keeps_its_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["bitnet_packed", "bitnet_online", "bitnet_hgf", "demo"] {
        for ty in ["tq1-0", "tq2-0"] {
            let out = tmp.path().join(format!("{arch}-{ty}.gguf"));
            let o = ternlight(&[
                "convert",
                "--model",
                fixture(arch).to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--type",
                ty,
            ]);
            assert!(o.status.success(), "convert {arch} {ty}: {}", String::from_utf8_lossy(&o.stderr));
            fidelity_of(&out, arch);
        }
    }
    // The file carries its tokenizer: `run` works from the GGUF alone.
    let gguf = tmp.path().join("bitnet_packed-tq1-0.gguf");
    let o = ternlight(&["run", "--model", gguf.to_str().unwrap(), "--prompt", "hi", "--max-tokens", "3"]);
    assert!(o.status.success(), "run on GGUF: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn malformed_or_foreign_gguf_files_get_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("magic.gguf", b"GGML\x03\x00\x00\x00".to_vec(), "bad magic"),
        ("short.gguf", b"GGUF\x03\x00\x00\x00\x01".to_vec(), "runs past the end"),
        ("bare.gguf", ternlight_core::gguf::GgufWriter::new().to_bytes(), "GGUF architecture"),
    ];
    for (name, bytes, expect) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let o = ternlight(&["inspect", "--model", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(expect) && err.trim().lines().count() == 1, "{name}: {err}");
    }
    let o = ternlight(&[
        "convert",
        "--model",
        fixture("llama").to_str().unwrap(),
        "--out",
        tmp.path().join("x.gguf").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("BitNet"));
}

#[test]
fn bench_state_times_every_recurrent_mixer_against_the_copy_roofline() {
    let o = ternlight(&["bench-state", "--reps", "1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["copy_gb_s"].as_f64().unwrap() > 0.0);
    let rows = report["mixers"].as_array().unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r["mixer"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["gated-deltanet", "gated-deltanet", "kda", "gla", "mamba2", "lightning", "rwkv7"]);
    for r in rows {
        let (us, gb_s) = (r["us"].as_f64().unwrap(), r["state_gb_s"].as_f64().unwrap());
        let bytes = (r["heads"].as_u64().unwrap() * r["dk"].as_u64().unwrap() * r["dv"].as_u64().unwrap() * 8) as f64;
        assert!(us > 0.0 && (gb_s * us * 1e3 / bytes - 1.0).abs() < 1e-6, "{r}");
    }
    // Prefill of two chunks: tokens per second, no state bandwidth.
    let o = ternlight(&["bench-state", "--reps", "1", "--tokens", "70", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for r in report["mixers"].as_array().unwrap() {
        assert!(r["tokens"] == 70 && r["tokens_per_s"].as_f64().unwrap() > 0.0 && r["state_gb_s"].is_null(), "{r}");
    }
    for bad in ["--reps", "--tokens"] {
        let o = ternlight(&["bench-state", bad, "0"]);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(bad));
    }
    let o = ternlight(&["bench-state", "--tokens", "100000"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--tokens 100000") && err.contains("binding limit"), "{err}");
}

#[test]
fn bench_linear_reports_both_weight_kinds_and_the_copy_roofline() {
    let o = ternlight(&["bench-linear", "--shapes", "40x48,17x33", "--reps", "2", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["copy_gb_s"].as_f64().unwrap() > 0.0);
    let shapes = report["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 2);
    for s in shapes {
        assert!(s["bf16_us"].as_f64().unwrap() > 0.0 && s["ternary_us"].as_f64().unwrap() > 0.0);
        // 2 bits per weight plus at most one padding word per block.
        assert!((2.0..2.2).contains(&s["ternary_bits_per_weight"].as_f64().unwrap()), "{s}");
    }
    assert!(ternlight(&["bench-linear", "--shapes", "40by48"]).status.code() == Some(1));
    // A prefill chunk: the tiled kernels, the integer one too (lavapipe has packed integer dot products).
    let o = ternlight(&["bench-linear", "--shapes", "24x64", "--tokens", "5", "--reps", "2", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &report["shapes"][0];
    assert_eq!(s["tokens"], 5, "{s}");
    assert!(s["bf16_us"].as_f64().unwrap() > 0.0 && s["ternary_dp4_us"].as_f64().unwrap() > 0.0, "{s}");
    let o = ternlight(&["bench-linear", "--tokens", "0"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--tokens"));
    let o = ternlight(&["bench-linear", "--tokens", "100000", "--shapes", "24x2560"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--tokens 100000") && err.contains("binding limit"), "{err}");
}

#[test]
fn bench_attention_times_each_spread_and_checks_it_against_the_first() {
    let args = ["--shapes", "4x2x16,3x1x20", "--contexts", "70", "--splits", "1,3", "--heads", "1,8", "--reps", "2"];
    let o = ternlight(&[&["bench-attention"], &args[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8);
    for r in runs {
        assert!(r["us"].as_f64().unwrap() > 0.0 && r["kv_gb_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["max_diff_vs_first"].as_f64().unwrap() < 1e-4, "{r}");
    }
    // Two query heads per KV head share a workgroup in the first shape when allowed; the second's 20 channels are
    // whole quads too.
    let shared: Vec<u64> = runs.iter().map(|r| r["heads_per_workgroup"].as_u64().unwrap()).collect();
    assert_eq!(shared, [1, 1, 2, 2, 1, 1, 3, 3]);
    assert!(ternlight(&["bench-attention", "--shapes", "4x2"]).status.code() == Some(1));
    assert!(ternlight(&["bench-attention", "--splits", "0"]).status.code() == Some(1));
    assert!(ternlight(&["bench-attention", "--prefill", "4", "--contexts", "0"]).status.code() == Some(1));
}

#[test]
fn bench_attention_prefill_times_each_head_grouping_and_checks_it_against_the_first() {
    let args = ["--prefill", "13", "--shapes", "6x2x16,4x4x8", "--contexts", "40,9", "--heads", "1,8", "--reps", "2"];
    let o = ternlight(&[&["bench-attention"], &args[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = report["prefill_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8);
    for r in runs {
        assert!(r["us"].as_f64().unwrap() > 0.0 && r["gflop_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["max_diff_vs_first"].as_f64().unwrap() < 1e-4, "{r}");
    }
    // Three query heads per KV head share an invocation in the first shape; the second has one per KV head. A
    // context shorter than --prefill takes all its tokens.
    let shared: Vec<u64> = runs.iter().map(|r| r["heads_per_invocation"].as_u64().unwrap()).collect();
    assert_eq!(shared, [1, 3, 1, 3, 1, 1, 1, 1]);
    let queries: Vec<u64> = runs.iter().map(|r| r["queries"].as_u64().unwrap()).collect();
    assert_eq!(queries, [13, 13, 9, 9, 13, 13, 9, 9]);
}

/// A fault the test server injects into ranged responses for `model.safetensors` past byte 0 (the download,
/// not its one-byte probe).
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The body stops after this many bytes and the connection closes.
    DropAfter(usize),
    /// The last byte of the body is flipped.
    Corrupt,
    /// The answer is this HTTP status with an empty body.
    Status(u16),
    /// The connection closes before any response.
    Reset,
    /// Half the body, then silence for longer than the client waits.
    Stall,
    /// Content-Length claims 100 bytes more than the body, then the connection closes.
    LongerLength,
}

/// What the test server does wrong.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Injected once, or into every matching response when `repeat`.
    fault: Option<Fault>,
    repeat: bool,
    /// Every request gets the whole file with status 200.
    no_ranges: bool,
    /// Bodies go out in 4 KiB pieces a millisecond apart.
    throttle: bool,
}

impl Faults {
    fn once(fault: Fault) -> Self {
        Faults { fault: Some(fault), ..Default::default() }
    }
}

/// A one-thread HTTP/1.1 file server over `root` for the remote-model tests: Range requests, an ETag holding each
/// file's SHA-256 (as Hugging Face publishes LFS digests), `/moved/<path>` answered by a 302 redirect to `/<path>`
/// (as the hub redirects to its CDN), and [`Faults`]. It counts the body bytes it serves.
struct TestServer {
    base: String,
    /// Set once a fault has been injected.
    faulted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Body bytes served so far.
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TestServer {
    fn start(root: PathBuf, faults: Faults) -> TestServer {
        use sha2::Digest;
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let faulted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (faulted_flag, served_count) = (faulted.clone(), served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut line, mut path, mut range) = (String::new(), String::new(), None);
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    let header = line.trim_end().to_string();
                    line.clear();
                    if header.is_empty() {
                        break;
                    }
                    if let Some(rest) = header.strip_prefix("GET ") {
                        path = rest.split(' ').next().unwrap_or("").to_string();
                    }
                    if let Some(r) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (a, b) = r.split_once('-').unwrap();
                        range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
                    }
                }
                if let Some(target) = path.strip_prefix("/moved") {
                    let head = format!("HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n");
                    let _ = stream.write_all(head.as_bytes());
                    continue;
                }
                let Ok(body) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
                    let _ =
                        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                };
                let fault_here = range.is_some_and(|(a, b)| b > a) && path.ends_with("model.safetensors");
                let first = fault_here && !faulted_flag.swap(true, SeqCst);
                let fault = faults.fault.filter(|_| first || (fault_here && faults.repeat));
                match fault {
                    Some(Fault::Reset) => continue,
                    Some(Fault::Status(code)) => {
                        let head =
                            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        let _ = stream.write_all(head.as_bytes());
                        continue;
                    }
                    _ => {}
                }
                let digest: String = sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
                let (status, mut slice, extra) = match range {
                    Some((a, b)) if !faults.no_ranges => {
                        let b = b.min(body.len() - 1);
                        (
                            "206 Partial Content",
                            body[a..=b].to_vec(),
                            format!("Content-Range: bytes {a}-{b}/{}\r\n", body.len()),
                        )
                    }
                    _ => ("200 OK", body.clone(), String::new()),
                };
                let claimed = slice.len() + if matches!(fault, Some(Fault::LongerLength)) { 100 } else { 0 };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {claimed}\r\nETag: \"{digest}\"\r\n{extra}Connection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes());
                let cut = match fault {
                    Some(Fault::DropAfter(n)) => n.min(slice.len()),
                    Some(Fault::Stall) => slice.len() / 2,
                    _ => slice.len(),
                };
                if let Some(Fault::Corrupt) = fault {
                    let last = slice.len() - 1;
                    slice[last] ^= 0xff;
                }
                served_count.fetch_add(cut, SeqCst);
                let piece = if faults.throttle { 4096 } else { cut.max(1) };
                for part in slice[..cut].chunks(piece) {
                    if stream.write_all(part).is_err() {
                        break;
                    }
                    if faults.throttle {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                if let Some(Fault::Stall) = fault {
                    // Holds the connection open and silent in its own thread; the server goes on serving.
                    std::thread::spawn(move || {
                        std::thread::sleep(std::time::Duration::from_secs(20));
                        drop(stream);
                    });
                }
            }
        });
        TestServer { base, faulted, served }
    }
}

/// `ternlight` with its download cache in `cache`.
fn ternlight_cached(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ternlight"))
        .arg("--quiet")
        .args(args)
        .env("TERNLIGHT_CACHE", cache)
        .output()
        .expect("binary runs")
}

#[test]
fn a_model_behind_an_http_url_streams_resumes_and_matches_the_local_logits() {
    use std::sync::atomic::Ordering::SeqCst;
    let cache = tempfile::tempdir().unwrap();
    let faults = Faults { throttle: true, ..Faults::once(Fault::DropAfter(1000)) };
    let server = TestServer::start(fixture(""), faults);
    let model = format!("{}/llama", server.base);
    let oracle = Oracle::open(&fixture("llama")).unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let ids = ids_arg(&oracle.input_ids);
    let run = |server_note: &str| {
        let args = ["logits", "--model", &model, "--ids", &ids, "--out", out.path().to_str().unwrap()];
        let o = ternlight_cached(cache.path(), &args);
        assert!(o.status.success(), "{server_note}: {}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(out.path()).unwrap();
        let got = SafetensorsCheckpoint::from_files(vec![("logits".into(), bytes)]).unwrap().f32("logits").unwrap();
        let d = max_abs_diff(&got, &oracle.logits);
        assert!(d < 1e-3, "{server_note}: max abs diff {d}");
    };
    run("first run, throttled, one connection dropped mid-file");
    assert!(server.faulted.load(SeqCst), "the fault connection was never cut");
    // The second run reads the cached copy: only the small files and one-byte probes cross the network.
    let before = server.served.load(SeqCst);
    run("second run, from the cache");
    let weights = std::fs::metadata(fixture("llama").join("model.safetensors")).unwrap().len() as usize;
    assert!(server.served.load(SeqCst) - before < weights / 10, "the weights were downloaded again");
}

#[test]
fn a_corrupted_download_fails_its_integrity_check_and_the_retry_matches() {
    let cache = tempfile::tempdir().unwrap();
    let server = TestServer::start(fixture(""), Faults::once(Fault::Corrupt));
    let model = format!("{}/llama", server.base);
    let out = tempfile::NamedTempFile::new().unwrap();
    let args = ["logits", "--model", &model, "--ids", "1,2,3", "--out", out.path().to_str().unwrap()];
    let o = ternlight_cached(cache.path(), &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("integrity check failed"), "{err}");
    let o = ternlight_cached(cache.path(), &args);
    assert!(o.status.success(), "after the bad download was discarded: {}", String::from_utf8_lossy(&o.stderr));
}

/// Downloads under injected faults, each into a fresh cache with a one-second stall timeout: a fault that passes
/// (a reset, a 5xx or 404, a stall, a lying Content-Length, a redirect) gives exactly the model (logits as the
/// local copy's); a fault that persists, a server that never answers or corrupted bytes give a one-line error
/// naming the trouble. Never a silently different model.
#[test]
fn downloads_under_injected_faults_give_the_exact_model_or_a_clear_error() {
    let oracle = Oracle::open(&fixture("llama")).unwrap();
    let ids = ids_arg(&oracle.input_ids);
    let attempt = |base: &str, model: &str| {
        let cache = tempfile::tempdir().unwrap();
        let out = tempfile::NamedTempFile::new().unwrap();
        let model = format!("{base}/{model}");
        let args = ["--quiet", "logits", "--model", &model, "--ids", &ids, "--out", out.path().to_str().unwrap()];
        let o = Command::new(env!("CARGO_BIN_EXE_ternlight"))
            .args(args)
            .env("TERNLIGHT_CACHE", cache.path())
            .env("TERNLIGHT_NET_TIMEOUT", "1")
            .output()
            .expect("binary runs");
        let logits = o.status.success().then(|| {
            let bytes = std::fs::read(out.path()).unwrap();
            SafetensorsCheckpoint::from_files(vec![("logits".into(), bytes)]).unwrap().f32("logits").unwrap()
        });
        (logits, String::from_utf8_lossy(&o.stderr).trim().to_string())
    };
    let passing = [Fault::Reset, Fault::Status(500), Fault::Status(404), Fault::Stall, Fault::LongerLength];
    for fault in passing {
        let server = TestServer::start(fixture(""), Faults::once(fault));
        let (logits, err) = attempt(&server.base, "llama");
        let logits = logits.unwrap_or_else(|| panic!("{fault:?} once: {err}"));
        assert!(max_abs_diff(&logits, &oracle.logits) < 1e-3, "{fault:?} once: the logits differ");
    }
    let server = TestServer::start(fixture(""), Faults::default());
    let (logits, err) = attempt(&server.base, "moved/llama");
    assert!(logits.is_some_and(|l| max_abs_diff(&l, &oracle.logits) < 1e-3), "through a redirect: {err}");
    let persisting = [
        (Fault::Reset, "gave up after 5 attempts"),
        (Fault::Status(503), "HTTP status 503"),
        (Fault::Corrupt, "integrity check failed"),
    ];
    for (fault, expect) in persisting {
        let server = TestServer::start(fixture(""), Faults { repeat: true, ..Faults::once(fault) });
        let (logits, err) = attempt(&server.base, "llama");
        assert!(logits.is_none() && err.contains(expect) && err.lines().count() == 1, "{fault:?} always: {err}");
    }
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", silent.local_addr().unwrap());
    let (logits, err) = attempt(&base, "llama");
    assert!(logits.is_none() && err.contains("gave up") && err.lines().count() == 1, "a silent server: {err}");
}

#[test]
fn unreachable_or_range_less_servers_get_one_line_errors() {
    let cache = tempfile::tempdir().unwrap();
    let plain = TestServer::start(fixture(""), Faults { no_ranges: true, ..Default::default() });
    let ranged = TestServer::start(fixture(""), Faults::default());
    for (model, expect) in [
        (format!("{}/llama", plain.base), "ignores Range requests"),
        (format!("{}/no_such_model", ranged.base), "config.json: not found"),
    ] {
        let o = ternlight_cached(cache.path(), &["inspect", "--model", &model]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(expect) && err.trim().lines().count() == 1, "{model}: {err}");
    }
}

#[test]
fn a_model_over_the_memory_budget_is_refused_before_loading() {
    let o =
        ternlight(&["run", "--model", fixture("llama").to_str().unwrap(), "--prompt", "hi", "--max-memory-mib", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("needs about") && err.contains("budget is 0.0 MiB"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let o =
        ternlight(&["run", "--model", fixture("llama").to_str().unwrap(), "--prompt", "hi", "--max-memory-mib", "64"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_gguf_file_behind_an_http_url_matches_the_hf_logits() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("bitnet.gguf");
    let src = fixture("bitnet_packed");
    let o = ternlight(&["convert", "--model", src.to_str().unwrap(), "--out", gguf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let server = TestServer::start(dir.path().to_path_buf(), Faults::default());
    fidelity_of(Path::new(&format!("{}/bitnet.gguf", server.base)), "bitnet_packed");
}

#[test]
fn a_prompt_prefilled_in_small_chunks_generates_the_same_text() {
    let model = fixture("llama");
    let run = |extra: &[&str]| {
        let mut args =
            vec!["run", "--model", model.to_str().unwrap(), "--prompt", "chunked prefill check", "--max-tokens", "6"];
        args.extend_from_slice(extra);
        let o = ternlight(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    assert_eq!(run(&["--prefill-chunk", "5"]), run(&[]));
}

/// `eval-policy` on the llama fixture: full attention agrees with itself exactly, a window moves the next-token
/// distributions, the absorbing window's memory is fixed-size state beside its ring, and the router reports its
/// decisions (every layer sparse under a threshold above 1) with an exact dense prefill.
#[test]
fn eval_policy_reports_quality_cost_per_policy() {
    let dir = std::env::temp_dir().join(format!("ternlight-eval-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, "The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire.")
        .unwrap();
    let model = fixture("llama");
    let route = "route:infllmv2@16+block:8+topk:2+local:1+entropy:1.01";
    let args = ["eval-policy", "--model", model.to_str().unwrap(), "--text", text.to_str().unwrap()];
    let policies = ["--policy", "full", "--policy", "sliding:8+sinks:2", "--policy", "sliding:8+sinks:2+absorb"];
    let rest = ["--policy", route, "--tokens", "48", "--chunk", "16", "--decode-steps", "6", "--json"];
    let o = ternlight(&[&args[..], &policies[..], &rest[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["policies"].as_array().unwrap();
    let get = |i: usize, key: &str| rows[i][key].as_f64().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(get(0, "kl_mean") < 1e-9 && get(0, "top1_agreement") == 1.0, "{}", rows[0]);
    assert!(get(1, "kl_mean") > 0.0 && get(1, "policy_kv_bytes") < get(1, "full_kv_bytes"), "{}", rows[1]);
    assert!(get(2, "kl_mean") > 0.0 && get(2, "kl_mean") != get(1, "kl_mean"), "{}", rows[2]);
    assert!(get(3, "kl_mean") < 1e-9, "the routed prefill is dense: {}", rows[3]);
    assert_eq!(rows[3]["routes"].as_str().unwrap().matches(":sparse(").count(), 2, "{}", rows[3]);
    assert!(get(3, "decode_kl_mean") > 0.0, "sparse decoding past 16 positions moves the logits: {}", rows[3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bench` on a fixture reports the copy roofline and decode as a fraction of it; an unknown synthetic model is
/// refused with the known names, and `--model` with `--synthetic` together is refused.
#[test]
fn bench_reports_the_roofline_and_names_synthetic_models() {
    let model = fixture("llama");
    let args = ["bench", "--model", model.to_str().unwrap(), "--contexts", "16", "--decode-steps", "2"];
    let o = ternlight(&[&args[..], &["--compare-tokens", "8", "--reps", "1", "--json", "--quiet"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["roofline"]["copy_bytes_per_s"].as_f64().unwrap() > 0.0, "{v}");
    let fraction = v["contexts"][0]["decode_fraction_of_roofline"].as_f64().unwrap();
    assert!(fraction > 0.0 && fraction.is_finite(), "{v}");
    let o = ternlight(&["bench", "--synthetic", "gpt-5"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("smollm2-135m"));
    let o = ternlight(&["bench", "--synthetic", "smollm2-135m", "--model", model.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
}

/// `bench --max-storage-buffers` holds kernels to a browser's limit natively: at WebGPU's guaranteed 8 the fused
/// ternary products of the default model (four corrected projections of one input) split into more dispatches,
/// and the report says which limit it ran under; a limit below 8 is refused.
#[test]
fn bench_takes_a_browser_storage_buffer_limit() {
    let model = fixture("demo");
    let args = ["bench", "--model", model.to_str().unwrap(), "--contexts", "8", "--decode-steps", "1"];
    let args = [&args[..], &["--compare-tokens", "4", "--reps", "1", "--json", "--quiet"]].concat();
    let report = |extra: &[&str]| {
        let o = ternlight(&[&args[..], extra].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let (full, capped) = (report(&[]), report(&["--max-storage-buffers", "8"]));
    assert_eq!(capped["device"]["max_storage_buffers"], 8, "{capped}");
    assert!(full["device"]["max_storage_buffers"].as_u64().unwrap() > 8, "{full}");
    let dispatches = |r: &serde_json::Value| r["decode_dispatches_per_token"].as_u64().unwrap();
    assert!(dispatches(&capped) > dispatches(&full), "{full} {capped}");
    // Below WebGPU's guarantee no browser runs the model: refused up front, naming the flag.
    let o = ternlight(&[&args[..], &["--max-storage-buffers", "4"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--max-storage-buffers") && err.contains("8.."), "{err}");
}

/// `tune` times every candidate, caches the fastest of each kernel for the adapter, and later runs on the device
/// start with it (`bench` reports it as from the cache, and `run` still generates with it); `TERNLIGHT_TUNING=default`
/// ignores the cache.
#[test]
fn tune_caches_the_fastest_sizes_and_later_runs_use_them() {
    let cache = tempfile::tempdir().unwrap();
    let o = ternlight_cached(cache.path(), &["tune", "--reps", "1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let trials = v["trials"].as_array().unwrap();
    let kinds = [
        ("matvec", &["wg", "nr", "vw"][..]),
        ("matmul", &["tm", "tn", "wg_x", "wg_y", "broadcast"][..]),
        ("ternary_matvec", &["ternary_wg", "ternary_nr", "ternary_rows", "ternary_swar"][..]),
        ("decode_attention", &["attn_splits"][..]),
    ];
    for (kernel, fields) in kinds {
        let of_kernel: Vec<_> = trials.iter().filter(|t| t["kernel"] == kernel).collect();
        // The ternary kernel is tried only where the adapter has packed integer dot products (lavapipe does).
        if of_kernel.is_empty() && kernel == "ternary_matvec" {
            continue;
        }
        assert!(of_kernel.len() >= 4, "{v}");
        let fastest = of_kernel.iter().min_by(|a, b| a["ms"].as_f64().unwrap().total_cmp(&b["ms"].as_f64().unwrap()));
        for f in fields {
            assert_eq!(v["chosen"][f], fastest.unwrap()["tuning"][f], "{kernel} {f}: {v}");
        }
    }
    // Decode attention at its fastest split count above 1, and unsplit, at shorter contexts: splitting starts at
    // the shortest from which the split kernel never lost (4096 keys where it lost at the longest).
    let split_trials: Vec<_> = trials.iter().filter(|t| t["kernel"] == "split_from").collect();
    let split = split_trials.iter().map(|t| t["tuning"]["attn_splits"].as_u64().unwrap()).max().unwrap();
    let ms = |keys: u64, splits: u64| {
        let at =
            |t: &&&serde_json::Value| t["tuning"]["attn_split_from"] == keys && t["tuning"]["attn_splits"] == splits;
        split_trials.iter().find(at).unwrap()["ms"].as_f64().unwrap()
    };
    let mut contexts: Vec<u64> =
        split_trials.iter().map(|t| t["tuning"]["attn_split_from"].as_u64().unwrap()).collect();
    contexts.dedup();
    assert!(split > 1 && contexts.len() >= 4 && split_trials.len() == 2 * contexts.len(), "{v}");
    let from = v["chosen"]["attn_split_from"].as_u64().unwrap();
    assert!(contexts.contains(&from) || from == 4096, "{v}");
    for &keys in &contexts {
        assert!(keys < from || ms(keys, split) <= ms(keys, 1), "split lost at {keys} keys: {v}");
    }
    let below = contexts.iter().filter(|&&k| k < from).max();
    assert!(below.is_none_or(|&k| ms(k, split) > ms(k, 1)), "{v}");
    assert!(Path::new(v["cache"].as_str().unwrap()).starts_with(cache.path()));
    let model = fixture("llama");
    let bench = ["bench", "--model", model.to_str().unwrap(), "--contexts", "8", "--decode-steps", "1"];
    let bench = [&bench[..], &["--compare-tokens", "4", "--reps", "1", "--json"]].concat();
    let o = ternlight_cached(cache.path(), &bench);
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["device"]["tuning_from_cache"], true, "{b}");
    assert_eq!(b["device"]["tuning"], v["chosen"]);
    let o = ternlight_cached(
        cache.path(),
        &["run", "--model", model.to_str().unwrap(), "--prompt", "Hi", "--max-tokens", "4"],
    );
    assert!(o.status.success() && !o.stdout.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(env!("CARGO_BIN_EXE_ternlight"))
        .args(["--quiet"])
        .args(&bench)
        .env("TERNLIGHT_CACHE", cache.path())
        .env("TERNLIGHT_TUNING", "default")
        .output()
        .unwrap();
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["device"]["tuning_from_cache"], false, "{b}");
}

/// `soak`: after generating, every cycle holds the same GPU buffers, every unload returns them all and the Rust
/// heap to where it was, cycle after cycle, on one device and on a fresh device per load. (The resident set is
/// reported, not asserted: lavapipe keeps growing its own allocations while a device lives; docs/reliability.md.)
#[test]
fn soak_cycles_return_every_gpu_buffer() {
    let model = fixture("llama");
    for fresh in [false, true] {
        let mut args = vec!["soak", "--model", model.to_str().unwrap(), "--cycles", "3", "--tokens", "120"];
        args.extend(["--max-context", "64", "--json"]);
        if fresh {
            args.push("--fresh-device");
        }
        let o = ternlight(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let cycles = v["cycles"].as_array().unwrap();
        let at = |i: usize, when: &str, what: &str| cycles[i][when][what].as_u64().unwrap();
        assert_eq!(cycles.len(), 3);
        for (i, cycle) in cycles.iter().enumerate() {
            assert_eq!(cycle["tokens"].as_u64(), Some(120));
            assert!(at(i, "generated", "gpu_buffers") > at(i, "unloaded", "gpu_buffers") + 200_000, "{v}");
            assert!(at(i, "loaded", "host_rss") > 0);
            for (when, what) in [("generated", "gpu_buffers"), ("generated", "buffer_count")] {
                assert_eq!(at(i, when, what), at(0, when, what), "cycle {i} {when} {what}: {v}");
            }
            // The Rust heap (Ternlight and wgpu) returns to where it was, but for collections' capacity growth.
            let heap = |i: usize| at(i, "unloaded", "rust_heap");
            assert!(heap(i) <= heap(0) + (64 << 10), "cycle {i}: the Rust heap grew: {v}");
            // Unloaded, only what the device itself keeps (less than before the first load) remains.
            for what in ["gpu_buffers", "buffer_count"] {
                assert_eq!(at(i, "unloaded", what), at(0, "unloaded", what), "cycle {i} {what}: {v}");
                assert!(at(i, "unloaded", what) <= v["before"][what].as_u64().unwrap(), "{v}");
            }
        }
    }
}
