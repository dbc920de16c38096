//! `ternlight soak`: loads and unloads a model again and again, generating thousands of tokens, and reports host
//! memory (the resident set, and the Rust heap on its own) and GPU memory (wgpu's live buffers) after each load,
//! generation and unload: flat figures mean nothing leaks.

use crate::model_dir::ModelDir;
use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use ternlight_gpu::kernels::sample::Draw;
use ternlight_gpu::Gpu;
use ternlight_runtime::{Session, SessionOptions};

/// Arguments of `ternlight soak`.
#[derive(Parser)]
pub struct Args {
    /// Model: a directory, a .gguf file, an http(s) URL or org/name.
    #[arg(long)]
    model: PathBuf,
    /// Load, generate, unload cycles.
    #[arg(long, default_value_t = 5)]
    cycles: usize,
    /// Tokens generated per cycle (the context restarts from the prompt whenever it fills).
    #[arg(long, default_value_t = 1000)]
    tokens: usize,
    /// Context length to allocate (default: min(model, 4096)).
    #[arg(long)]
    max_context: Option<usize>,
    /// A new device for every load (as the web engine and each CLI run do) instead of one device throughout.
    #[arg(long)]
    fresh_device: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Memory at one point of a cycle.
#[derive(Clone, Copy, serde::Serialize)]
struct Memory {
    /// Resident set of this process, bytes (Linux; 0 elsewhere): the Rust heap, the driver's and the binary.
    host_rss: u64,
    /// Bytes Rust code holds (Ternlight and wgpu; not a C driver's), by the counting allocator.
    rust_heap: u64,
    /// Bytes of live GPU buffers, by wgpu's counters.
    gpu_buffers: u64,
    /// Live GPU buffers.
    buffer_count: u64,
}

#[derive(serde::Serialize)]
struct Cycle {
    tokens: usize,
    loaded: Memory,
    generated: Memory,
    unloaded: Memory,
}

fn memory(gpu: &Gpu) -> Memory {
    gpu.device.poll(ternlight_gpu::wgpu::PollType::wait_indefinitely()).ok();
    let hal = gpu.device.get_internal_counters().hal;
    Memory {
        host_rss: crate::heap::resident("VmRSS"),
        rust_heap: crate::heap::live_bytes(),
        gpu_buffers: hal.buffer_memory.read() as u64,
        buffer_count: hal.buffers.read() as u64,
    }
}

/// Generates `tokens` greedy tokens after a fixed prompt, starting over from the prompt when the context fills.
fn generate(session: &mut Session, tokens: usize) -> Result<usize> {
    let prompt: Vec<u32> = (1..9).collect();
    let greedy = Draw::greedy();
    let mut done = 0;
    while done < tokens {
        session.reset();
        let mut id = pollster::block_on(session.prefill_sample(&prompt, &greedy))?;
        while done < tokens && session.position() < session.max_context() {
            id = pollster::block_on(session.step_sample(id, &greedy))?;
            done += 1;
        }
    }
    Ok(done)
}

/// Runs the soak and prints its memory table.
pub fn run(args: Args, quiet: bool) -> Result<()> {
    let model = ModelDir::open(&args.model)?;
    let mut gpu = Arc::new(Gpu::new_blocking()?);
    let options = SessionOptions { max_context: args.max_context, ..Default::default() };
    let before = memory(&gpu);
    let mut cycles = Vec::with_capacity(args.cycles);
    for cycle in 0..args.cycles {
        if args.fresh_device && cycle > 0 {
            gpu = Arc::new(Gpu::new_blocking()?);
        }
        let mut session =
            Session::new(gpu.clone(), model.spec.clone(), model.checkpoint.source(), &options, &mut |_| {})?;
        let loaded = memory(&gpu);
        let tokens = generate(&mut session, args.tokens)?;
        let generated = memory(&gpu);
        drop(session);
        cycles.push(Cycle { tokens, loaded, generated, unloaded: memory(&gpu) });
        if !quiet && !args.json {
            eprint!(".");
        }
    }
    if args.json {
        println!("{}", serde_json::json!({ "before": before, "cycles": cycles }));
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "| cycle | tokens | host RSS loaded / generated / unloaded (MiB) | Rust heap loaded / unloaded (MiB) | GPU \
         buffers loaded / unloaded (MiB) |"
    );
    println!("|---|---|---|---|---|");
    for (i, c) in cycles.iter().enumerate() {
        println!(
            "| {} | {} | {:.1} / {:.1} / {:.1} | {:.2} / {:.2} | {:.2} / {:.2} |",
            i + 1,
            c.tokens,
            mib(c.loaded.host_rss),
            mib(c.generated.host_rss),
            mib(c.unloaded.host_rss),
            mib(c.loaded.rust_heap),
            mib(c.unloaded.rust_heap),
            mib(c.loaded.gpu_buffers),
            mib(c.unloaded.gpu_buffers)
        );
    }
    Ok(())
}
