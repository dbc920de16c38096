//! `ternlight`: run Hugging Face-format models on the GPU from the command line.

mod bench;
mod bench_attention;
mod bench_linear;
mod bench_state;
mod convert;
mod eval_policy;
mod heap;
mod inspect;
mod logits;
mod model_dir;
mod progress;
mod run;
mod soak;
mod synthetic;
mod tune;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// Ternlight: efficient LLMs on WebGPU, headless.
#[derive(Parser)]
#[command(name = "ternlight", version, about)]
struct Cli {
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming tokens, then print speeds.
    Run(run::Args),
    /// Write the logits of given token ids to a safetensors file (prefill and/or token-by-token).
    Logits(logits::Args),
    /// Describe a model: architecture, layer schedule, parameters, memory needs.
    Inspect(inspect::Args),
    /// Measure prefill and decode speed at several context lengths.
    Bench(bench::Args),
    /// Time one-token linear layers, bf16 against ternary weights, beside the copy bandwidth.
    BenchLinear(bench_linear::Args),
    /// Time one decode token's attention over a long KV cache, for each number of workgroups per head.
    BenchAttention(bench_attention::Args),
    /// Time one decode token of each recurrent mixer at real models' head shapes, beside the copy bandwidth.
    BenchState(bench_state::Args),
    /// Compare attention policies with full attention on a text: KL divergence, top-1 agreement, time, KV memory.
    EvalPolicy(eval_policy::Args),
    /// Load, generate and unload a model repeatedly, reporting host and GPU memory after each step.
    Soak(soak::Args),
    /// Write an HF BitNet checkpoint as a Ternlight-ready GGUF file with TQ1_0 or TQ2_0 ternary weights.
    Convert(convert::Args),
    /// Time candidate kernel sizes on this device and cache the fastest for later runs.
    Tune(tune::Args),
}

fn main() -> ExitCode {
    // Mesa's device-select layer prints a spurious "error:" line when XDG_RUNTIME_DIR is unset.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a, cli.quiet),
        Command::Logits(a) => logits::run(a, cli.quiet),
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a, cli.quiet),
        Command::Convert(a) => convert::run(a),
        Command::Tune(a) => tune::run(a),
        Command::BenchLinear(a) => bench_linear::run(a),
        Command::BenchAttention(a) => bench_attention::run(a),
        Command::BenchState(a) => bench_state::run(a),
        Command::EvalPolicy(a) => eval_policy::run(a, cli.quiet),
        Command::Soak(a) => soak::run(a, cli.quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
