//! `ternlight run`: generate from a prompt, streaming text, then report prefill/decode speed and TTFT.

use crate::model_dir::{parse_policy, ModelDir};
use anyhow::{bail, Result};
use std::io::Write;
use std::path::PathBuf;
use ternlight_core::sampling::{Sampler, SamplingParams};
use ternlight_core::spec::AttentionPolicy;
use ternlight_core::tokenizer::ChatMessage;
use ternlight_runtime::generate::generate;
use ternlight_runtime::SessionOptions;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a directory (config.json, *.safetensors, tokenizer.json), a .gguf file, an http(s) URL or org/name;
    /// without it, the built-in demo model (models/demo).
    #[arg(long)]
    model: Option<PathBuf>,
    /// GPU memory the model may use, in MiB: refused before the weights upload when it needs more.
    #[arg(long)]
    max_memory_mib: Option<u64>,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k filter (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p (nucleus) filter.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Min-p filter.
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Context length to allocate (default: min(model, 4096)).
    #[arg(long)]
    context: Option<usize>,
    /// Tokens per prefill forward; longer prompts run in chunks of this size.
    #[arg(long, default_value_t = 512)]
    prefill_chunk: usize,
    /// Attention policy: `full`, `sliding:W[+sinks:S]`, `layers:0-5=full,6-23=sliding:512`.
    #[arg(long, default_value = "full", value_parser = parse_policy)]
    attention_policy: AttentionPolicy,
}

pub fn run(args: Args, quiet: bool) -> Result<()> {
    let model = ModelDir::open_or_demo(args.model.as_deref())?;
    let tokenizer = model.tokenizer()?;
    let prompt = if args.chat {
        let text = tokenizer.render_chat(&[ChatMessage { role: "user".into(), content: args.prompt.clone() }])?;
        tokenizer.encode(&text, false)?
    } else {
        tokenizer.encode(&args.prompt, true)?
    };
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let options = SessionOptions {
        max_context: args.context,
        prefill_capacity: args.prefill_chunk,
        memory_budget: args.max_memory_mib.map(|m| m << 20),
        attention_policy: args.attention_policy,
    };
    let mut session = model.session(&options, quiet)?;
    let mut sampler = Sampler::new(SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
    });
    let mut generated = Vec::new();
    let mut printed = 0;
    let mut stdout = std::io::stdout();
    let stop = model.spec.eos_token_ids.clone();
    let (_, stats) = pollster::block_on(generate(&mut session, &prompt, &mut sampler, args.max_tokens, &stop, |id| {
        generated.push(id);
        if let Ok(text) = tokenizer.decode(&generated) {
            if text.len() > printed && text.is_char_boundary(printed) {
                let _ = write!(stdout, "{}", &text[printed..]);
                let _ = stdout.flush();
                printed = text.len();
            }
        }
        true
    }))?;
    println!();
    eprintln!(
        "prompt {} tokens: prefill {:.1} tok/s | generated {} tokens: decode {:.1} tok/s | time to first token {:.1} ms",
        stats.prompt_tokens,
        stats.prefill_rate(),
        stats.generated_tokens,
        stats.decode_rate(),
        stats.time_to_first_token * 1e3
    );
    Ok(())
}
