//! The native CPU peer of `docs/perf.md`: candle (a well-known Rust ML runtime, CPU backend) runs the same Llama
//! checkpoint Ternlight runs, so both can be timed on one machine in one run.
//!
//! - `write DIR SHAPE` writes a random-init Hugging Face Llama (config.json, model.safetensors in bf16) with the
//!   shapes of `llama-6x256` (the browser peer's) or `smollm2-135m` (SmolLM2-135M's published sizes).
//! - `run DIR PROMPT DECODE` prefills `PROMPT` token ids (the ones `ternlight bench` uses), then decodes `DECODE`
//!   tokens greedily, and prints JSON: timings and the tokens (for checking against Ternlight's).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Sizes of a Llama: vocab, hidden, intermediate, layers, heads, kv heads, tied head, rope theta, eps.
struct Shape {
    vocab: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    tied: bool,
    rope_theta: f64,
    eps: f64,
}

fn shape(name: &str) -> Result<Shape> {
    Ok(match name {
        "llama-6x256" => Shape {
            vocab: 2048,
            hidden: 256,
            intermediate: 688,
            layers: 6,
            heads: 4,
            kv_heads: 2,
            tied: false,
            rope_theta: 10000.0,
            eps: 1e-6,
        },
        "smollm2-135m" => Shape {
            vocab: 49152,
            hidden: 576,
            intermediate: 1536,
            layers: 30,
            heads: 9,
            kv_heads: 3,
            tied: true,
            rope_theta: 100000.0,
            eps: 1e-5,
        },
        _ => bail!("unknown shape `{name}` (known: llama-6x256, smollm2-135m)"),
    })
}

fn write(dir: &Path, name: &str) -> Result<()> {
    let s = shape(name)?;
    let dev = Device::Cpu;
    let head_dim = s.hidden / s.heads;
    let mut tensors = HashMap::new();
    let mut put = |name: String, dims: &[usize], ones: bool| -> Result<()> {
        let t = match ones {
            true => Tensor::ones(dims, DType::F32, &dev)?,
            false => Tensor::randn(0f32, 0.02, dims, &dev)?,
        };
        tensors.insert(name, t.to_dtype(DType::BF16)?);
        Ok(())
    };
    put("model.embed_tokens.weight".into(), &[s.vocab, s.hidden], false)?;
    for i in 0..s.layers {
        let p = format!("model.layers.{i}");
        put(format!("{p}.input_layernorm.weight"), &[s.hidden], true)?;
        put(format!("{p}.post_attention_layernorm.weight"), &[s.hidden], true)?;
        put(format!("{p}.self_attn.q_proj.weight"), &[s.heads * head_dim, s.hidden], false)?;
        put(format!("{p}.self_attn.k_proj.weight"), &[s.kv_heads * head_dim, s.hidden], false)?;
        put(format!("{p}.self_attn.v_proj.weight"), &[s.kv_heads * head_dim, s.hidden], false)?;
        put(format!("{p}.self_attn.o_proj.weight"), &[s.hidden, s.heads * head_dim], false)?;
        put(format!("{p}.mlp.gate_proj.weight"), &[s.intermediate, s.hidden], false)?;
        put(format!("{p}.mlp.up_proj.weight"), &[s.intermediate, s.hidden], false)?;
        put(format!("{p}.mlp.down_proj.weight"), &[s.hidden, s.intermediate], false)?;
    }
    put("model.norm.weight".into(), &[s.hidden], true)?;
    if !s.tied {
        put("lm_head.weight".into(), &[s.vocab, s.hidden], false)?;
    }
    std::fs::create_dir_all(dir)?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": s.vocab, "hidden_size": s.hidden, "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers, "num_attention_heads": s.heads, "num_key_value_heads": s.kv_heads,
        "head_dim": head_dim, "max_position_embeddings": 8192, "rms_norm_eps": s.eps,
        "tie_word_embeddings": s.tied, "rope_theta": s.rope_theta,
        "rope_parameters": {"rope_theta": s.rope_theta, "rope_type": "default"},
        "attention_bias": false, "mlp_bias": false, "torch_dtype": "bfloat16", "dtype": "bfloat16",
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    Ok(())
}

/// The prompt ids `ternlight bench` uses for a context of `n`.
fn bench_ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?)
}

fn run(dir: &Path, prompt: usize, decode: usize) -> Result<Value> {
    let dev = Device::Cpu;
    let text = std::fs::read_to_string(dir.join("config.json")).context("config.json")?;
    let config: LlamaConfig = serde_json::from_str(&text)?;
    let config = config.into_config(false);
    let file = dir.join("model.safetensors");
    // Safety: the file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[file], DType::F32, &dev)? };
    let model = Llama::load(vb, &config)?;
    let mut cache = Cache::new(true, DType::F32, &config, &dev)?;
    let ids = bench_ids(prompt, config.vocab_size);
    let start = Instant::now();
    let logits = model.forward(&Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?, 0, &mut cache)?;
    let mut next = argmax(&logits)?;
    let prefill_s = start.elapsed().as_secs_f64();
    let mut tokens = vec![next];
    let mut steps = Vec::with_capacity(decode);
    for i in 0..decode {
        let start = Instant::now();
        let logits = model.forward(&Tensor::new(&[next], &dev)?.unsqueeze(0)?, prompt + i, &mut cache)?;
        next = argmax(&logits)?;
        steps.push(start.elapsed().as_secs_f64());
        tokens.push(next);
    }
    steps.sort_by(f64::total_cmp);
    Ok(json!({
        "runtime": "candle 0.11.1, CPU backend, f32 compute",
        "threads": candle_core::utils::get_num_threads(),
        "prompt_tokens": prompt,
        "prefill_s": prefill_s,
        "prefill_tok_s": prompt as f64 / prefill_s,
        "decode_steps": decode,
        "decode_ms_per_token": steps.get(decode / 2).map_or(0.0, |s| s * 1e3),
        "tokens": tokens,
    }))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), &args[1.min(args.len())..]) {
        (Some("write"), [_, dir, name]) => write(Path::new(dir), name),
        (Some("run"), [_, dir, prompt, decode]) => {
            let report = run(Path::new(dir), prompt.parse()?, decode.parse()?)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        _ => bail!("usage: ternlight-candle-peer write DIR (llama-6x256|smollm2-135m) | run DIR PROMPT DECODE"),
    }
}
