//! The GPU session reproduces the transformers logits of each fixture: one prefill over the prompt, token by
//! token from the first position, the greedy generation, and chunked prefill.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use ternlight_core::oracle::{max_abs_diff, Oracle};
use ternlight_core::sampling::{Sampler, SamplingParams};
use ternlight_core::spec::{MixerSpec, ModelSpec};
use ternlight_core::tensors::SafetensorsCheckpoint;
use ternlight_gpu::kernels::sample::Draw;
use ternlight_gpu::kernels::Tuning;
use ternlight_gpu::{Gpu, GpuOptions};
use ternlight_runtime::generate::generate;
use ternlight_runtime::{Session, SessionOptions};

fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Arc::new(Gpu::new_blocking().expect("a GPU adapter"))).clone()
}

/// A fixture's directory; `demo` is the shipped demo model, whose oracle comes from the PyTorch code that trained it.
fn fixture(arch: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    match arch {
        "demo" => root.join("models/demo"),
        _ => root.join("tests/fixtures").join(arch),
    }
}

fn session_on(gpu: Arc<Gpu>, arch: &str, options: SessionOptions) -> Session {
    let dir = fixture(arch);
    let spec = ModelSpec::from_config_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let ck = SafetensorsCheckpoint::open_dir(&dir).unwrap();
    Session::new(gpu, spec, &ck, &options, &mut |_| {}).unwrap()
}

fn session(arch: &str, options: SessionOptions) -> Session {
    session_on(gpu(), arch, options)
}

/// The logits of `ids` fed one token at a time from an empty context.
fn step_through(s: &mut Session, ids: &[u32]) -> Vec<f32> {
    s.reset();
    let mut stepped = pollster::block_on(s.prefill(&ids[..1], &[0])).unwrap();
    for &id in &ids[1..] {
        stepped.extend(pollster::block_on(s.step(id)).unwrap());
    }
    stepped
}

fn check(arch: &str) {
    let oracle = Oracle::open(&fixture(arch)).unwrap();
    let mut s = session(arch, SessionOptions::default());
    let vocab = s.spec().vocab;
    let t = oracle.input_ids.len();
    let all: Vec<usize> = (0..t).collect();

    let logits = pollster::block_on(s.prefill(&oracle.input_ids, &all)).unwrap();
    let d = max_abs_diff(&logits, &oracle.logits);
    eprintln!("{arch} prefill diff {d}");
    assert!(d < 1e-3, "{arch} prefill: max abs diff {d}");

    let stepped = step_through(&mut s, &oracle.input_ids);
    let d = max_abs_diff(&stepped, &oracle.logits);
    assert!(d < 1e-3, "{arch} token-by-token: max abs diff {d}");

    let n = oracle.gen_logits.len() / vocab;
    let mut gen = stepped[(t - 1) * vocab..].to_vec();
    for &id in &oracle.gen_ids[t..t + n - 1] {
        gen.extend(pollster::block_on(s.step(id)).unwrap());
    }
    let d = max_abs_diff(&gen, &oracle.gen_logits);
    assert!(d < 1e-3, "{arch} generation: max abs diff {d}");

    // The generation loop draws greedily on the GPU: the same tokens transformers generated.
    s.reset();
    let mut sampler = Sampler::new(SamplingParams::default());
    let known = &oracle.gen_ids[t..];
    let (tokens, _) =
        pollster::block_on(generate(&mut s, &oracle.input_ids, &mut sampler, known.len(), &[], |_| true)).unwrap();
    assert_eq!(tokens, known, "{arch}: greedy generation on the GPU");

    let mut chunked = session(arch, SessionOptions { prefill_capacity: 7, ..Default::default() });
    let rows = [0, 6, 7, 8, 40, t - 1];
    let got = pollster::block_on(chunked.prefill(&oracle.input_ids, &rows)).unwrap();
    let want: Vec<f32> = rows.iter().flat_map(|&r| oracle.logits[r * vocab..(r + 1) * vocab].to_vec()).collect();
    let d = max_abs_diff(&got, &want);
    assert!(d < 1e-3, "{arch} chunked prefill: max abs diff {d}");
    eprintln!("{arch}: prefill/step/generate/chunked max abs diffs within 1e-3 (last {d})");
}

#[test]
fn llama_matches_transformers_on_the_gpu() {
    check("llama");
}

#[test]
fn qwen3_matches_transformers_on_the_gpu() {
    check("qwen3");
}

#[test]
fn gemma3_matches_transformers_on_the_gpu() {
    check("gemma3");
}

#[test]
fn qwen3_5_matches_transformers_on_the_gpu() {
    check("qwen3_5");
}

#[test]
fn fla_gated_deltanet_matches_fla_on_the_gpu() {
    check("gated_deltanet");
}

#[test]
fn fla_gated_deltanet_hybrid_matches_fla_on_the_gpu() {
    check("gated_deltanet_hybrid");
}

#[test]
fn fla_deltanet_matches_fla_on_the_gpu() {
    check("deltanet");
}

#[test]
fn gemma3_sliding_layers_run_in_a_wrapping_ring_buffer() {
    // Capacity 7 gives the window-16 layers rings of 23 rows: the 80-token prompt wraps them several times.
    let oracle = Oracle::open(&fixture("gemma3")).unwrap();
    let options = SessionOptions { prefill_capacity: 7, ..Default::default() };
    let mut s = session("gemma3", options.clone());
    // Per row: k and v, 2 KV heads x 16 channels, f32. Three sliding layers hold 16 + 7 rows, the global one 512.
    let row = 2 * 2 * 16 * 4;
    assert_eq!(s.memory().state, (3 * 23 + 512) * row);
    assert_eq!((s.memory().kv_cache_live, s.memory().recurrent), (0, 0));
    let vocab = s.spec().vocab;
    let t = oracle.input_ids.len();
    let all: Vec<usize> = (0..t).collect();
    let d = max_abs_diff(&pollster::block_on(s.prefill(&oracle.input_ids, &all)).unwrap(), &oracle.logits);
    assert!(d < 1e-3, "ring prefill: max abs diff {d}");
    // The sliding layers still read their 16-position windows; the global layer holds all 80 positions.
    assert_eq!(s.memory().kv_cache_live, (3 * 16 + 80) * row);
    let mut s = session("gemma3", options);
    let mut stepped = pollster::block_on(s.prefill(&oracle.input_ids[..1], &[0])).unwrap();
    for &id in &oracle.input_ids[1..] {
        stepped.extend(pollster::block_on(s.step(id)).unwrap());
    }
    let n = oracle.gen_logits.len() / vocab;
    for &id in &oracle.gen_ids[t..t + n - 1] {
        stepped.extend(pollster::block_on(s.step(id)).unwrap());
    }
    let d = max_abs_diff(&stepped[..t * vocab], &oracle.logits);
    assert!(d < 1e-3, "ring token-by-token: max abs diff {d}");
    let d = max_abs_diff(&stepped[(t - 1) * vocab..], &oracle.gen_logits);
    assert!(d < 1e-3, "ring generation: max abs diff {d}");
}

#[test]
fn fla_gla_matches_fla_on_the_gpu() {
    check("gla");
}

#[test]
fn fla_hgrn2_matches_fla_on_the_gpu() {
    check("hgrn2");
}

/// Sampling on the GPU draws what the reference sampler draws from the same model's logits read back, with every
/// filter and the repetition penalty on, after an earlier turn (so the penalty's context starts mid-session).
#[test]
fn gpu_sampling_matches_the_reference_sampler_on_model_logits() {
    let params =
        SamplingParams { temperature: 0.9, top_k: 40, top_p: 0.9, min_p: 0.02, repetition_penalty: 1.3, seed: 5 };
    for arch in ["llama", "qwen3_5"] {
        let oracle = Oracle::open(&fixture(arch)).unwrap();
        let (turn, prompt) = oracle.input_ids[..40].split_at(12);
        let mut s = session(arch, SessionOptions::default());
        pollster::block_on(s.prefill(turn, &[])).unwrap();
        let mut sampler = Sampler::new(params.clone());
        let (drawn, _) = pollster::block_on(generate(&mut s, prompt, &mut sampler, 24, &[], |_| true)).unwrap();

        let mut s = session(arch, SessionOptions::default());
        pollster::block_on(s.prefill(turn, &[])).unwrap();
        let mut reference = Sampler::new(params.clone());
        let mut context = prompt.to_vec();
        let mut logits = pollster::block_on(s.prefill(prompt, &[prompt.len() - 1])).unwrap();
        for _ in 0..drawn.len() {
            let id = reference.sample(&logits, &context);
            context.push(id);
            logits = pollster::block_on(s.step(id)).unwrap();
        }
        assert_eq!(drawn, context[prompt.len()..], "{arch}");
        let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
        assert!(distinct.len() > 3, "{arch}: the draws hardly vary ({drawn:?})");
    }
}

/// Decode's fused kernels (norms folded into projections, projections of one input stacked, gate and up in one
/// product, normed heads rotated at once, one-dispatch convs; for BitNet, one int8 quantisation shared by the
/// ternary projections of one input, q, k and v in one integer matvec, gate and up with the activation in another,
/// sub-norms applied by the next quantiser) keep softmax, gated-attention, Gated DeltaNet, GLA and BitNet layers
/// within ten dispatches per token, beside one each for the embedding, the head and the sampler. A structural count,
/// not a timing.
#[test]
fn decode_takes_at_most_ten_dispatches_per_layer() {
    let archs = [
        "llama",
        "qwen3",
        "gemma3",
        "qwen3_5",
        "gated_deltanet",
        "gla",
        "bitnet_packed",
        "bitnet_online",
        "bitnet_hgf",
        "demo",
    ];
    for arch in archs {
        let s = session(arch, SessionOptions::default());
        let layers = s.spec().layers.len();
        let dispatches = s.decode_dispatches();
        assert!(dispatches <= 10 * layers + 3, "{arch}: {dispatches} dispatches for {layers} layers");
    }
}

/// Decode fuses Hybrid Gated Flow projections (the demo's, and BitNet's with per-channel gates) as far as the
/// device's storage-buffer limit allows: where the stacked projections' corrections would take a binding each, they
/// share one copy of their `diag(g) B` matrices. Under SwiftShader's 10 storage buffers per kernel that keeps every
/// dispatch of the full device, and under WebGPU's guaranteed 8 at most one more per token; every device decodes the
/// oracle's logits.
#[test]
fn hgf_decode_fuses_within_the_storage_buffer_limit() {
    let limited = |n: u32| {
        let options = GpuOptions { max_storage_buffers: Some(n), ..Default::default() };
        let g = Arc::new(pollster::block_on(Gpu::with_options(&options)).unwrap());
        assert_eq!(g.info.max_storage_buffers, n);
        g
    };
    assert!(gpu().info.max_storage_buffers > 10);
    let devices = [gpu(), limited(10), limited(8)];
    for arch in ["demo", "bitnet_hgf"] {
        let oracle = Oracle::open(&fixture(arch)).unwrap();
        let mut counts = Vec::new();
        for g in &devices {
            let mut s = session_on(g.clone(), arch, SessionOptions::default());
            let d = max_abs_diff(&step_through(&mut s, &oracle.input_ids), &oracle.logits);
            assert!(d < 1e-3, "{arch} with {} storage buffers: max abs diff {d}", g.info.max_storage_buffers);
            counts.push(s.decode_dispatches());
        }
        assert!(counts[1] == counts[0] && counts[2] <= counts[0] + 1, "{arch}: dispatches {counts:?}");
    }
}

#[test]
fn load_progress_ends_at_its_totals() {
    for arch in ["qwen3_5", "hgrn2", "llama"] {
        let dir = fixture(arch);
        let spec = ModelSpec::from_config_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let ck = SafetensorsCheckpoint::open_dir(&dir).unwrap();
        let mut seen = Vec::new();
        Session::new(gpu(), spec, &ck, &SessionOptions::default(), &mut |p| seen.push(p.clone())).unwrap();
        let p = seen.last().unwrap();
        assert_eq!((p.tensors_done, p.bytes_done), (p.tensors_total, p.bytes_total), "{arch}");
        // Layers become ready one by one, in order, and all of them do.
        let ready: Vec<usize> = seen.iter().map(|p| p.layers_ready).collect();
        assert!(ready.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1), "{arch}: {ready:?}");
        assert_eq!(p.layers_ready, p.layers_total, "{arch}");
    }
}

#[test]
fn lfm2_matches_transformers_on_the_gpu() {
    check("lfm2");
}

#[test]
fn fla_linear_attn_matches_fla_on_the_gpu() {
    check("linear_attn");
}

#[test]
fn gemma3_matches_with_kv_tiled_prefill_attention() {
    let mut g = Gpu::new_blocking().unwrap();
    g.tuning.attn_kv_tile = 32;
    let oracle = Oracle::open(&fixture("gemma3")).unwrap();
    let mut s = session_on(Arc::new(g), "gemma3", SessionOptions::default());
    let all: Vec<usize> = (0..oracle.input_ids.len()).collect();
    let d = max_abs_diff(&pollster::block_on(s.prefill(&oracle.input_ids, &all)).unwrap(), &oracle.logits);
    assert!(d < 1e-3, "gemma3 tiled prefill: max abs diff {d}");
}

/// Decode with each head's keys split over several workgroups (flash-decoding) from the first token on: with GPUs'
/// default tuning (64 invocations, so the 80-token fixtures split in two past 64 keys) and in CPU adapters'
/// workgroups of 8 (up to ten splits), for gated attention (Qwen3.5), sliding-window and global layers (Gemma 3)
/// and MLA (Kimi Linear). The long-context plan takes one more dispatch per attention layer, the second pass.
#[test]
fn split_decode_attention_matches_transformers() {
    let cpu = Gpu::new_blocking().unwrap().tuning;
    let from_the_start = |t: Tuning| Tuning { attn_split_from: 1, ..t };
    for tuning in [from_the_start(Tuning::default()), from_the_start(Tuning { attn_splits: 32, ..cpu })] {
        let mut g = Gpu::new_blocking().unwrap();
        g.tuning = tuning.clone();
        let g = Arc::new(g);
        for arch in ["qwen3_5", "gemma3", "kimi_linear"] {
            let oracle = Oracle::open(&fixture(arch)).unwrap();
            let mut s = session_on(g.clone(), arch, SessionOptions::default());
            let d = max_abs_diff(&step_through(&mut s, &oracle.input_ids), &oracle.logits);
            assert!(d < 1e-3, "{arch} token-by-token with {tuning:?}: max abs diff {d}");
            let kinds = s.spec().layers.iter().map(|l| l.mixer.kind());
            let softmax = kinds.filter(|k| k.contains("attention") || k == "mla").count();
            assert_eq!(s.long_decode_dispatches(), Some((s.decode_dispatches() + softmax, 1)), "{arch}");
        }
    }
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let mut s = session("llama", SessionOptions { max_context: Some(10), ..Default::default() });
    let e = pollster::block_on(s.prefill(&[], &[])).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let e = pollster::block_on(s.prefill(&[1, 256], &[1])).unwrap_err().to_string();
    assert!(e.contains("256") && e.contains("vocabulary"), "{e}");
    let e = pollster::block_on(s.prefill(&[1; 11], &[10])).unwrap_err().to_string();
    assert!(e.contains("11") && e.contains("10"), "{e}");
    let e = pollster::block_on(s.prefill(&[1, 2], &[1, 0])).unwrap_err().to_string();
    assert!(e.contains("ascending"), "{e}");
    let hot = SamplingParams { temperature: f32::INFINITY, ..Default::default() };
    let draw = Draw { params: &hot, uniform: 0.5, context_start: 0 };
    let e = pollster::block_on(s.prefill_sample(&[1, 2], &draw)).unwrap_err().to_string();
    assert!(e.contains("temperature"), "{e}");
    let e = pollster::block_on(s.prefill_sample(&[1, 2], &Draw { uniform: 1.0, ..Draw::greedy() })).unwrap_err();
    assert!(e.to_string().contains("[0, 1)"), "{e}");
    pollster::block_on(s.prefill(&[1; 10], &[9])).unwrap();
    let e = pollster::block_on(s.step(3)).unwrap_err().to_string();
    assert!(e.contains("exceeds"), "{e}");
}

#[test]
fn snapshots_restore_a_prefix_for_many_continuations() {
    for arch in ["qwen3_5", "gemma3"] {
        let oracle = Oracle::open(&fixture(arch)).unwrap();
        let ids = &oracle.input_ids;
        let (prefix, a, b) = (&ids[..40], &ids[40..60], &ids[60..75]);
        let mut s = session(arch, SessionOptions::default());
        pollster::block_on(s.prefill(prefix, &[])).unwrap();
        let snap = s.snapshot();
        assert_eq!(snap.position(), 40);
        let last = |n: usize| [n - 1];
        let after_a = pollster::block_on(s.prefill(a, &last(a.len()))).unwrap();
        s.restore(&snap).unwrap();
        assert_eq!(s.position(), 40);
        let after_b = pollster::block_on(s.prefill(b, &last(b.len()))).unwrap();
        s.restore(&snap).unwrap();
        let step_a: Vec<f32> = a.iter().map(|&id| pollster::block_on(s.step(id)).unwrap()).last().unwrap();

        let vocab = s.spec().vocab;
        let row = |p: usize| &oracle.logits[p * vocab..(p + 1) * vocab];
        for (got, what) in [(&after_a, "prefix+A"), (&step_a, "prefix+A stepped")] {
            let d = max_abs_diff(got, row(59));
            assert!(d < 1e-3, "{arch} {what}: max abs diff {d}");
        }
        // B follows the prefix directly: compare with a fresh session over prefix ++ B.
        let joined: Vec<u32> = prefix.iter().chain(b).copied().collect();
        let mut fresh = session(arch, SessionOptions::default());
        let want = pollster::block_on(fresh.prefill(&joined, &[joined.len() - 1])).unwrap();
        let d = max_abs_diff(&after_b, &want);
        assert!(d < 1e-4, "{arch} prefix+B: max abs diff {d}");
    }
}

#[test]
fn qwen3_next_matches_transformers_on_the_gpu() {
    check("qwen3_next");
}

#[test]
fn minimax_matches_transformers_on_the_gpu() {
    check("minimax");
}

#[test]
fn olmo_hybrid_matches_transformers_on_the_gpu() {
    check("olmo_hybrid");
}

#[test]
fn fla_kda_matches_fla_on_the_gpu() {
    check("kda");
}

#[test]
fn kimi_linear_matches_transformers_on_the_gpu() {
    check("kimi_linear");
}

#[test]
fn falcon_h1_matches_transformers_on_the_gpu() {
    check("falcon_h1");
}

#[test]
fn fla_gsa_matches_fla_on_the_gpu() {
    check("gsa");
}

#[test]
fn bitnet_packed_matches_transformers_on_the_gpu() {
    check("bitnet_packed");
}

#[test]
fn bitnet_online_matches_transformers_on_the_gpu() {
    check("bitnet_online");
}

#[test]
fn fla_bitnet_matches_fla_on_the_gpu() {
    check("fla_bitnet");
}

#[test]
fn bitnet_hgf_matches_its_numpy_generator_on_the_gpu() {
    check("bitnet_hgf");
}

/// The shipped demo model: Qwen3.5 layout with ternary projections and HGF corrections, including a gated q_proj
/// whose ternary rows are split between query and gate.
#[test]
fn demo_model_matches_its_training_framework_on_the_gpu() {
    check("demo");
}

#[test]
fn fla_rwkv7_matches_fla_on_the_gpu() {
    check("rwkv7");
}

/// Attention maps and head entropies from the GPU's taps equal the CPU reference's, on the prefill path (in
/// chunks) and token by token: softmax layers (llama; gemma3's window-16 layer under an 80-token prompt), whose
/// rows sum to 1, and the implicit attention of recurrent layers (Gated DeltaNet, DeltaNet, Kimi Delta Attention,
/// Qwen3.5's linear layer, GLA, HGRN2, Lightning, fla's linear attention, RWKV-7, GSA), and Falcon-H1's attention beside
/// Mamba2 in a parallel layer, and the demo model's ternary Gated DeltaNet (whose decode reads its gate inputs from the
/// quantiser's side products) and gated attention layers. Entropies lie in [0, 1].
#[test]
fn attention_taps_match_the_reference() {
    use ternlight_core::reference::model::ReferenceModel;
    let cases = [
        ("llama", 1, true),
        ("gemma3", 0, true),
        ("gated_deltanet", 0, false),
        ("deltanet", 1, false),
        ("kda", 0, false),
        ("qwen3_5", 0, false),
        ("gla", 1, false),
        ("hgrn2", 1, false),
        ("minimax", 2, false),
        ("linear_attn", 0, false),
        ("rwkv7", 1, false),
        ("falcon_h1", 1, true),
        ("gsa", 1, false),
        ("demo", 0, false),
        ("demo", 3, true),
    ];
    for (arch, layer, softmax) in cases {
        let oracle = Oracle::open(&fixture(arch)).unwrap();
        let ids = &oracle.input_ids;
        let spec =
            ModelSpec::from_config_json(&std::fs::read_to_string(fixture(arch).join("config.json")).unwrap()).unwrap();
        // Falcon-H1's parallel layer maps its attention heads (rows summing to 1), then its Mamba2 heads.
        let softmax_heads = match &spec.layers[layer].mixer {
            MixerSpec::Parallel(parts) => parts
                .iter()
                .find_map(|m| match m {
                    MixerSpec::Attention(a) => Some(a.n_heads),
                    _ => None,
                })
                .unwrap(),
            _ => usize::MAX,
        };
        let mut reference =
            ReferenceModel::new(spec, &SafetensorsCheckpoint::open_dir(&fixture(arch)).unwrap()).unwrap();
        reference.set_attention_tap(Some(layer)).unwrap();
        reference.forward(ids).unwrap();
        let want = reference.attention_tap().unwrap();

        let mut s = session(arch, SessionOptions { prefill_capacity: 33, ..Default::default() });
        s.set_attention_taps(&[layer]).unwrap();
        pollster::block_on(s.prefill(ids, &[ids.len() - 1])).unwrap();
        let prefilled = s.attention_tap(layer).unwrap().clone();
        s.reset();
        pollster::block_on(s.prefill(&ids[..1], &[0])).unwrap();
        for &id in &ids[1..] {
            pollster::block_on(s.step(id)).unwrap();
        }
        let stepped = s.attention_tap(layer).unwrap();
        // The last 50 queries' rows (the demo's prompt is shorter: all of them).
        let n = 50.min(ids.len());
        for head in [0, want.heads() - 1] {
            let w = want.map(head, n).unwrap();
            assert_eq!((w.queries, w.keys, w.first_query), (n, ids.len(), ids.len() - n));
            if softmax && head < softmax_heads {
                for row in w.weights.chunks(w.keys) {
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{arch} row sum");
                }
            }
            let scale = w.weights.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(scale > 0.0, "{arch}: an empty map");
            for got in [&prefilled, stepped] {
                let g = got.map(head, n).unwrap();
                assert_eq!((g.queries, g.keys), (w.queries, w.keys));
                let d = max_abs_diff(&g.weights, &w.weights);
                assert!(
                    d < 1e-4 * scale.max(1.0),
                    "{arch} layer {layer} head {head}: max abs diff {d} (scale {scale})"
                );
            }
        }
        let entropies = stepped.entropies();
        assert_eq!(entropies.len(), want.heads());
        assert!(entropies.iter().all(|&e| (0.0..=1.0 + 1e-5).contains(&e)), "{entropies:?}");
        let d = max_abs_diff(&entropies, &want.entropies());
        assert!(d < 1e-3, "{arch} entropies: max abs diff {d}");
        let e = s.set_attention_taps(&[layer, 99]).unwrap_err().to_string();
        assert!(e.contains("past the model"), "{e}");
        assert!(s.attention_tap(layer).is_some(), "a refused change keeps the taps");
    }
    let s = session("hgrn2", SessionOptions::default());
    let m = s.memory();
    assert!(m.recurrent > 0 && m.recurrent == m.state && m.kv_cache_live == 0, "{m:?}");
    let mut s = session("lfm2", SessionOptions::default());
    let e = s.set_attention_taps(&[0]).unwrap_err().to_string();
    assert!(e.contains("has no attention map") && e.contains("short_conv"), "{e}");
}

/// Ablated heads: the GPU session with heads switched off matches the CPU reference with the same heads off, on
/// both paths, and the logits move away from the intact model's; clearing the ablation restores them.
#[test]
fn ablated_heads_match_the_reference_and_change_the_logits() {
    // Softmax-attention heads (llama), and a hybrid's Gated DeltaNet value heads beside its gated attention's.
    for (arch, heads) in [("llama", vec![(0, 1), (1, 0), (1, 3)]), ("qwen3_5", vec![(0, 1), (2, 3), (3, 0)])] {
        check_ablation(arch, &heads);
    }
    let mut s = session("lfm2", SessionOptions::default());
    let e = s.set_ablation(&[(0, 0)]).unwrap_err().to_string();
    assert!(e.contains("no heads to switch off") && e.contains("short_conv"), "{e}");
}

fn check_ablation(arch: &str, heads: &[(usize, usize)]) {
    use ternlight_core::reference::model::ReferenceModel;
    let oracle = Oracle::open(&fixture(arch)).unwrap();
    let ids = &oracle.input_ids;
    let all: Vec<usize> = (0..ids.len()).collect();
    let mut reference =
        ReferenceModel::new(spec_of(arch), &SafetensorsCheckpoint::open_dir(&fixture(arch)).unwrap()).unwrap();
    reference.set_ablation(heads).unwrap();
    let want = reference.forward(ids).unwrap();
    assert!(max_abs_diff(&want, &oracle.logits) > 1e-2, "{arch}: ablation left the reference logits unchanged");

    let mut s = session(arch, SessionOptions::default());
    s.set_ablation(heads).unwrap();
    assert_eq!(s.ablation(), heads);
    let d = max_abs_diff(&pollster::block_on(s.prefill(ids, &all)).unwrap(), &want);
    assert!(d < 1e-3, "{arch} ablated prefill: max abs diff {d}");
    s.reset();
    let mut stepped = pollster::block_on(s.prefill(&ids[..1], &[0])).unwrap();
    for &id in &ids[1..] {
        stepped.extend(pollster::block_on(s.step(id)).unwrap());
    }
    let d = max_abs_diff(&stepped, &want);
    assert!(d < 1e-3, "{arch} ablated token by token: max abs diff {d}");

    s.set_ablation(&[]).unwrap();
    s.reset();
    let d = max_abs_diff(&pollster::block_on(s.prefill(ids, &all)).unwrap(), &oracle.logits);
    assert!(d < 1e-3, "{arch} restored: max abs diff {d}");
    let e = s.set_ablation(&[(0, 99)]).unwrap_err().to_string();
    assert!(e.contains("past layer 0"), "{e}");
}

/// Profiling times the embedding, every layer and the head of each forward (timestamp queries, which lavapipe
/// has) without changing the logits, on both paths.
#[test]
fn profiling_times_every_layer_and_leaves_the_logits_alone() {
    let oracle = Oracle::open(&fixture("qwen3_5")).unwrap();
    let ids = &oracle.input_ids;
    let all: Vec<usize> = (0..ids.len()).collect();
    let mut s = session("qwen3_5", SessionOptions::default());
    let stages = s.spec().layers.len() + 2;
    assert_eq!(s.set_profiling(true), s.gpu().info.timestamps);
    if !s.gpu().info.timestamps {
        return;
    }
    let d = max_abs_diff(&pollster::block_on(s.prefill(ids, &all)).unwrap(), &oracle.logits);
    assert!(d < 1e-3, "profiled prefill: max abs diff {d}");
    let times = s.stage_times().to_vec();
    eprintln!("qwen3_5 prefill GPU seconds by stage: {times:?}");
    assert_eq!(times.len(), stages, "{times:?}");
    assert!(times[1..stages - 1].iter().all(|&t| t > 0.0), "every layer took time: {times:?}");
    pollster::block_on(s.step(ids[0])).unwrap();
    assert_eq!(s.stage_times().len(), stages);
    // Dispatch by dispatch: every one timed, the stages their sums, and the linear layers' declared weight bytes
    // add up to most of the weights and never more (each is read once per step).
    let dispatches = s.dispatch_times();
    assert_eq!(dispatches.len(), s.decode_dispatches());
    assert_eq!(ternlight_gpu::plan::stage_times(dispatches), s.stage_times());
    let linear: Vec<_> = dispatches.iter().filter(|d| d.weight_bytes > 0).collect();
    assert!(linear.iter().all(|d| d.flops > 0 && d.kernel.contains("matvec")), "{linear:?}");
    let read: u64 = linear.iter().map(|d| d.weight_bytes).sum();
    let weights = s.memory().weights;
    eprintln!("qwen3_5 decode: linear kernels read {read} of {weights} weight bytes");
    assert!(read <= weights && read * 10 > weights * 8, "{read} of {weights} weight bytes");
    // Taps re-record the plans; profiling follows them.
    s.set_attention_taps(&[3]).unwrap();
    pollster::block_on(s.step(ids[1])).unwrap();
    assert_eq!(s.stage_times().len(), stages);
    assert!(!s.set_profiling(false) && s.stage_times().is_empty());
}

fn spec_of(arch: &str) -> ModelSpec {
    ModelSpec::from_config_json(&std::fs::read_to_string(fixture(arch).join("config.json")).unwrap()).unwrap()
}

/// Runtime attention policies on the GPU equal the CPU reference under the same policy (a literal StreamingLLM:
/// unrotated keys, rotation by cache position; InfLLM-V2 with blocks of 8 past 24 positions; a window whose
/// evicted keys go to the Taylor memory), on the chunked prefill path (a capacity of 7, so rings wrap inside forwards) and token by token, for the llama, qwen3, gemma3 (own window-16 layers) and qwen3_5 (gated
/// attention beside Gated DeltaNet) fixtures; each policy moves the logits away from full attention.
#[test]
fn attention_policies_match_the_reference() {
    use ternlight_core::reference::model::ReferenceModel;
    use ternlight_core::spec::AttentionPolicy;
    let policies = [
        "sliding:9+sinks:3",
        "sliding:12",
        "layers:0-0=sliding:5+sinks:1",
        "sparse:infllmv2@24+block:8+topk:3+local:2",
        "sliding:9+sinks:2+absorb",
    ];
    for arch in ["llama", "qwen3", "gemma3", "qwen3_5"] {
        let oracle = Oracle::open(&fixture(arch)).unwrap();
        let ids = &oracle.input_ids;
        let all: Vec<usize> = (0..ids.len()).collect();
        for text in policies {
            let policy = AttentionPolicy::parse(text).unwrap();
            let ck = SafetensorsCheckpoint::open_dir(&fixture(arch)).unwrap();
            let applied = policy.apply(&spec_of(arch)).unwrap();
            // Masks as they select keys (cache positions alone leave a window's distances as they were).
            let masks = |s: &ModelSpec| -> Vec<_> {
                s.attention_layers().map(|a| (a.mask.window, a.mask.sinks, a.mask.sparse)).collect()
            };
            let touched = masks(&applied) != masks(&spec_of(arch));
            // Attention maps follow the policy too: the last layer's tap equals the reference's.
            let tapped = applied.layers.len() - 1;
            let mut reference = ReferenceModel::new(applied, &ck).unwrap();
            let mapped = reference.set_attention_tap(Some(tapped)).is_ok();
            let want = reference.forward(ids).unwrap();
            // Layer 0 of Qwen3.5 is linear attention and of Gemma 3 a window of its own: the per-layer policy
            // leaves them as they are.
            let untouched = text.starts_with("layers") && matches!(arch, "qwen3_5" | "gemma3");
            assert_eq!(touched, !untouched, "{arch} {text}");
            if let Some(dropping) = text.strip_suffix("+absorb") {
                // Small random-init scores can make 1 + s + s²/2 close to e^s, so compare with the same window
                // dropping its evicted keys: the memory changes the logits.
                let applied = AttentionPolicy::parse(dropping).unwrap().apply(&spec_of(arch)).unwrap();
                let dropped = ReferenceModel::new(applied, &ck).unwrap().forward(ids).unwrap();
                assert!(max_abs_diff(&want, &dropped) > 1e-4, "{arch} {text}: the memory changed nothing");
            } else if touched {
                assert!(max_abs_diff(&want, &oracle.logits) > 1e-4, "{arch} {text}: the policy changed nothing");
            }

            let options = SessionOptions { prefill_capacity: 7, attention_policy: policy, ..Default::default() };
            let mut s = session(arch, options);
            if mapped {
                s.set_attention_taps(&[tapped]).unwrap();
            }
            let d = max_abs_diff(&pollster::block_on(s.prefill(ids, &all)).unwrap(), &want);
            assert!(d < 1e-3, "{arch} {text} chunked prefill: max abs diff {d}");
            if mapped {
                let (got, expected) = (s.attention_tap(tapped).unwrap(), reference.attention_tap().unwrap());
                for head in [0, expected.heads() - 1] {
                    let d = max_abs_diff(&got.map(head, 40).unwrap().weights, &expected.map(head, 40).unwrap().weights);
                    assert!(d < 1e-4, "{arch} {text} layer {tapped} head {head} map: max abs diff {d}");
                }
            }
            s.reset();
            let mut stepped = pollster::block_on(s.prefill(&ids[..1], &[0])).unwrap();
            for &id in &ids[1..] {
                stepped.extend(pollster::block_on(s.step(id)).unwrap());
            }
            let d = max_abs_diff(&stepped, &want);
            assert!(d < 1e-3, "{arch} {text} token by token: max abs diff {d}");
        }
    }
}

/// Policy `full` leaves every logit as it was; switching a session's policy starts a new context that matches a
/// session loaded with that policy, and switching back restores the model.
#[test]
fn full_policy_is_the_model_and_policies_switch_at_run_time() {
    use ternlight_core::spec::AttentionPolicy;
    let oracle = Oracle::open(&fixture("gemma3")).unwrap();
    let ids = &oracle.input_ids;
    let all: Vec<usize> = (0..ids.len()).collect();
    let full = AttentionPolicy::parse("full").unwrap();
    let mut s = session("gemma3", SessionOptions { attention_policy: full.clone(), ..Default::default() });
    let plain = pollster::block_on(s.prefill(ids, &all)).unwrap();
    let mut default = session("gemma3", SessionOptions::default());
    assert_eq!(plain, pollster::block_on(default.prefill(ids, &all)).unwrap(), "policy full changed logits");
    assert!(max_abs_diff(&plain, &oracle.logits) < 1e-3);

    let sliding = AttentionPolicy::parse("sliding:6+sinks:2").unwrap();
    s.set_attention_policy(&sliding).unwrap();
    assert_eq!(s.position(), 0);
    let switched = pollster::block_on(s.prefill(ids, &all)).unwrap();
    let mut loaded = session("gemma3", SessionOptions { attention_policy: sliding.clone(), ..Default::default() });
    assert_eq!(switched, pollster::block_on(loaded.prefill(ids, &all)).unwrap());
    let mut forked = default.fork(&sliding).unwrap();
    assert_eq!(switched, pollster::block_on(forked.prefill(ids, &all)).unwrap(), "a fork shares the weights");
    s.set_attention_policy(&full).unwrap();
    assert_eq!(plain, pollster::block_on(s.prefill(ids, &all)).unwrap());
    let e = s.set_attention_policy(&AttentionPolicy::parse("layers:0-40=sliding:4").unwrap()).unwrap_err();
    assert!(e.to_string().contains("past the model"), "{e}");
}

/// With every attention layer in a StreamingLLM ring, generation runs past the trained context (here a llama
/// whose spec claims 24 positions) with KV memory that does not grow, and equals the reference token by token;
/// without the policy the same session refuses position 25.
#[test]
fn streaming_policy_runs_past_the_trained_context_with_bounded_memory() {
    use ternlight_core::reference::model::ReferenceModel;
    use ternlight_core::spec::AttentionPolicy;
    let oracle = Oracle::open(&fixture("llama")).unwrap();
    let ids: Vec<u32> = oracle.input_ids.iter().cycle().take(70).copied().collect();
    let mut spec = spec_of("llama");
    spec.max_positions = 24;
    let policy = AttentionPolicy::parse("sliding:8+sinks:2").unwrap();
    let ck = SafetensorsCheckpoint::open_dir(&fixture("llama")).unwrap();
    let want = ReferenceModel::new(policy.apply(&spec).unwrap(), &ck).unwrap().forward(&ids).unwrap();

    let options = SessionOptions { prefill_capacity: 4, attention_policy: policy, ..Default::default() };
    let mut s = Session::new(gpu(), spec.clone(), &ck, &options, &mut |_| {}).unwrap();
    assert_eq!(s.max_context(), 24);
    let mut got = pollster::block_on(s.prefill(&ids[..10], &(0..10).collect::<Vec<_>>())).unwrap();
    let memory = s.memory().state;
    for &id in &ids[10..] {
        got.extend(pollster::block_on(s.step(id)).unwrap());
    }
    assert_eq!(s.position(), 70);
    assert_eq!(s.memory().state, memory, "the KV cache grew");
    let d = max_abs_diff(&got, &want);
    assert!(d < 1e-3, "streaming past the context: max abs diff {d}");

    let mut bounded = Session::new(gpu(), spec, &ck, &SessionOptions::default(), &mut |_| {}).unwrap();
    pollster::block_on(bounded.prefill(&ids[..24], &[23])).unwrap();
    let e = pollster::block_on(bounded.step(ids[24])).unwrap_err().to_string();
    assert!(e.contains("exceeds this session's maximum"), "{e}");
}

/// A random checkpoint for `spec` (norm weights near 1, everything else small).
fn random_checkpoint(spec: &ModelSpec, seed: u64) -> Vec<u8> {
    random_checkpoint_scaled(spec, seed, |_| 1.0)
}

/// [`random_checkpoint`] with each tensor's random part multiplied by `scale(name)`.
fn random_checkpoint_scaled(spec: &ModelSpec, seed: u64, scale: impl Fn(&str) -> f32) -> Vec<u8> {
    use ternlight_core::sampling::Rng;
    let mut rng = Rng::new(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = spec
        .tensors()
        .into_iter()
        .map(|d| {
            let n: usize = d.shape.iter().product();
            let norm = d.name.ends_with("norm.weight") || d.name.ends_with("subln.weight");
            let k = scale(&d.name);
            let values = (0..n).map(|_| (rng.next_f32() - 0.5) * 0.4 * k + if norm { 1.0 } else { 0.0 }).collect();
            (d.name, d.shape, values)
        })
        .collect();
    let views: Vec<(&str, Vec<usize>, &[f32])> =
        tensors.iter().map(|(n, s, v)| (n.as_str(), s.clone(), v.as_slice())).collect();
    ternlight_core::tensors::write_f32_safetensors(&views).unwrap()
}

/// Checkpoints declaring extra mixers in their config (`ternlight_mixers`) load as such: on random llamas whose
/// layers are differential attention (MHA, layer 1), Mixture-of-Head attention (GQA, both layers, one shared head,
/// top 2 of 3 routed), Based (layer 0, Taylor map, beside a sliding window), Hedgehog (layer 1) or RAT (chunks of
/// 7, two q/k groups, both layers), the GPU session
/// equals the CPU reference on chunked prefill and token by token, and the logits differ from the same weights read
/// as plain attention.
#[test]
fn mixers_declared_in_the_config_match_the_reference() {
    use ternlight_core::reference::model::ReferenceModel;
    let base = r#""model_type": "llama", "hidden_size": 64, "vocab_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "head_dim": 16, "intermediate_size": 80, "max_position_embeddings": 128,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6"#;
    // Per case: the layout and the mixers declared on it.
    let cases = [
        (r#""num_key_value_heads": 4"#, r#"{"differential_attention": [1]}"#),
        (r#""num_key_value_heads": 2"#, r#"{"moh": {"layers": [0, 1], "shared_heads": 1, "top_k": 2}}"#),
        (
            r#""num_key_value_heads": 4, "ternlight_attention": "layers:1-1=sliding:6""#,
            r#"{"based": {"layers": [0], "feature_dim": 16}}"#,
        ),
        (r#""num_key_value_heads": 4"#, r#"{"hedgehog": [1]}"#),
        (r#""num_key_value_heads": 4"#, r#"{"rat": {"layers": [0, 1], "chunk_size": 7, "groups": 2}}"#),
    ];
    let kinds = ["differential_attention", "moh_attention", "based", "hedgehog", "rat"];
    for (n, (layout, mixers)) in cases.iter().enumerate() {
        let config = format!(r#"{{{base}, {layout}, "ternlight_mixers": {mixers}}}"#);
        let spec = ModelSpec::from_config_json(&config).unwrap();
        let schedule: Vec<String> = spec.layers.iter().map(|l| l.mixer.kind()).collect();
        assert!(schedule.iter().any(|k| k.starts_with(kinds[n])), "{config}: {schedule:?}");
        let bytes = random_checkpoint(&spec, 91 + n as u64);
        let checkpoint =
            || SafetensorsCheckpoint::from_files(vec![("model.safetensors".into(), bytes.clone())]).unwrap();
        let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 96).collect();
        let all: Vec<usize> = (0..ids.len()).collect();
        let want = ReferenceModel::new(spec.clone(), &checkpoint()).unwrap().forward(&ids).unwrap();

        let options = SessionOptions { prefill_capacity: 9, ..Default::default() };
        let mut s = Session::new(gpu(), spec.clone(), &checkpoint(), &options, &mut |_| {}).unwrap();
        let d = max_abs_diff(&pollster::block_on(s.prefill(&ids, &all)).unwrap(), &want);
        assert!(d < 1e-3, "{schedule:?} chunked prefill: max abs diff {d}");
        s.reset();
        let mut stepped = pollster::block_on(s.prefill(&ids[..1], &[0])).unwrap();
        for &id in &ids[1..] {
            stepped.extend(pollster::block_on(s.step(id)).unwrap());
        }
        let d = max_abs_diff(&stepped, &want);
        assert!(d < 1e-3, "{schedule:?} token by token: max abs diff {d}");

        // Read as plain attention, the weights give other logits (or, for RAT's own tensors, no model at all).
        let plain_spec = ModelSpec::from_config_json(&format!("{{{base}, {layout}}}")).unwrap();
        match ReferenceModel::new(plain_spec, &checkpoint()) {
            Ok(mut plain) => {
                let plain = plain.forward(&ids).unwrap();
                assert!(max_abs_diff(&plain, &want) > 1e-3, "{config}: the declared mixer changed nothing");
            }
            Err(e) => assert!(kinds[n] == "rat" && e.to_string().contains("q_proj"), "{config}: {e}"),
        }
    }
}

/// The `route:` policy's router on a random llama whose layer 0 has sharp attention (q and k weights scaled up)
/// and layer 1 nearly uniform: the GPU's per-layer entropies at the last prompt token equal those of the
/// reference's dense attention maps; a threshold between the two switches only layer 0 to block-sparse, and decoding
/// then equals the reference run dense through the prompt and with that layer sparse afterwards; thresholds of 0
/// and 1.01 route no layer and every layer.
#[test]
fn routed_policy_measures_entropy_and_switches_concentrated_layers_to_sparse() {
    use ternlight_core::reference::model::ReferenceModel;
    use ternlight_core::spec::AttentionPolicy;
    let spec = ModelSpec::from_config_json(
        r#"{"model_type": "llama", "hidden_size": 64, "vocab_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 80,
        "max_position_embeddings": 128, "rope_theta": 10000.0, "rms_norm_eps": 1e-6}"#,
    )
    .unwrap();
    let sharp =
        |name: &str| if name.starts_with("model.layers.0.self_attn.") && !name.contains("o_proj") { 6.0 } else { 1.0 };
    let bytes = random_checkpoint_scaled(&spec, 17, sharp);
    let ck = || SafetensorsCheckpoint::from_files(vec![("model.safetensors".into(), bytes.clone())]).unwrap();
    let ids: Vec<u32> = (0..45).map(|i| (i * 29 + 3) % 96).collect();
    let prompt = 40;
    let layers = spec.layers.len();
    let expected: Vec<f32> = (0..layers)
        .map(|layer| {
            let mut r = ReferenceModel::new(spec.clone(), &ck()).unwrap();
            r.set_attention_tap(Some(layer)).unwrap();
            r.forward(&ids[..prompt]).unwrap();
            let tap = r.attention_tap().unwrap();
            let per_head: Vec<f32> = (0..tap.heads())
                .map(|h| {
                    let w = tap.map(h, 1).unwrap().weights;
                    -w.iter().filter(|&&x| x > 0.0).map(|x| x * x.ln()).sum::<f32>() / (prompt as f32).ln()
                })
                .collect();
            per_head.iter().sum::<f32>() / per_head.len() as f32
        })
        .collect();
    assert!(expected[0] + 0.05 < expected[1], "layer 0 attends more sharply: {expected:?}");
    let settings = "route:infllmv2@16+block:8+topk:2+local:1+init:1";
    for threshold in [0.0, (expected[0] + expected[1]) / 2.0, 1.01] {
        let text = format!("{settings}+entropy:{threshold}");
        let policy = AttentionPolicy::parse(&text).unwrap();
        let options = SessionOptions { prefill_capacity: 7, attention_policy: policy.clone(), ..Default::default() };
        let mut s = Session::new(gpu(), spec.clone(), &ck(), &options, &mut |_| {}).unwrap();
        pollster::block_on(s.prefill(&ids[..prompt], &[prompt - 1])).unwrap();
        let routes = s.routes().to_vec();
        assert_eq!(routes.len(), layers, "{text}");
        for (r, want) in routes.iter().zip(&expected) {
            assert!((r.entropy - want).abs() < 1e-3, "{text} layer {}: entropy {} vs {want}", r.layer, r.entropy);
            assert_eq!(r.sparse, r.entropy < threshold, "{text}: {routes:?}");
        }
        let sparse: Vec<usize> = routes.iter().filter(|r| r.sparse).map(|r| r.layer).collect();
        let expected_sparse: Vec<usize> = match threshold {
            0.0 => vec![],
            t if t > 1.0 => (0..layers).collect(),
            _ => vec![0],
        };
        assert_eq!(sparse, expected_sparse, "{text}: {routes:?}");
        let mut reference = ReferenceModel::new(policy.apply_routes(&spec, &[]).unwrap(), &ck()).unwrap();
        let mut dense = ReferenceModel::new(spec.clone(), &ck()).unwrap();
        reference.forward(&ids[..prompt]).unwrap();
        dense.forward(&ids[..prompt]).unwrap();
        reference.set_attention_masks(&policy.apply_routes(&spec, &sparse).unwrap());
        let mut moved = 0.0f32;
        for &id in &ids[prompt..] {
            let (got, want) = (pollster::block_on(s.step(id)).unwrap(), reference.forward(&[id]).unwrap());
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-3, "{text} decode after routing {sparse:?}: max abs diff {d}");
            moved = moved.max(max_abs_diff(&want, &dense.forward(&[id]).unwrap()));
        }
        assert_eq!(moved > 1e-4, !sparse.is_empty(), "{text}: sparse layers change decoding ({moved})");
    }
}
