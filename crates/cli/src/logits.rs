//! `ternlight logits`: the fidelity interface. Positions < N come from one prefill call, positions >= N from
//! one-token steps; the result is tensor `logits` f32 [T, V] in a safetensors file.

use crate::model_dir::{parse_policy, ModelDir};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use ternlight_core::spec::AttentionPolicy;
use ternlight_core::tensors::write_f32_safetensors;
use ternlight_runtime::SessionOptions;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (config.json, *.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    ids: Vec<u32>,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// First position computed by single-token steps (default: all positions by one prefill).
    #[arg(long)]
    step_from: Option<usize>,
    /// Attention policy (see `ternlight run --help`).
    #[arg(long, default_value = "full", value_parser = parse_policy)]
    attention_policy: AttentionPolicy,
}

pub fn run(args: Args, quiet: bool) -> Result<()> {
    let t = args.ids.len();
    if t == 0 {
        bail!("--ids is empty: give at least one token id");
    }
    let n = args.step_from.unwrap_or(t).min(t);
    let model = ModelDir::open(&args.model)?;
    for &id in &args.ids {
        model.spec.check_token(id)?;
    }
    let options = SessionOptions {
        max_context: Some(t.min(model.spec.max_positions).max(1)),
        attention_policy: args.attention_policy,
        ..Default::default()
    };
    let mut session = model.session(&options, quiet)?;
    let mut logits = Vec::with_capacity(t * model.spec.vocab);
    if n > 0 {
        let rows: Vec<usize> = (0..n).collect();
        logits.extend(pollster::block_on(session.prefill(&args.ids[..n], &rows))?);
    }
    for &id in &args.ids[n..] {
        logits.extend(pollster::block_on(session.step(id))?);
    }
    let bytes = write_f32_safetensors(&[("logits", vec![t, model.spec.vocab], &logits)])?;
    std::fs::write(&args.out, bytes).with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(())
}
