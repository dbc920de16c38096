//! `ternlight tune`: times candidate kernel sizes on this device ([`ternlight_gpu::tune`]), prints each, and caches
//! the fastest for the adapter, so that later `run`, `bench` and `logits` start with them.

use anyhow::Result;
use serde_json::json;
use ternlight_gpu::kernels::Tuning;
use ternlight_gpu::tune::TunedKernel;
use ternlight_gpu::Gpu;
use ternlight_runtime::tuning;

#[derive(clap::Args)]
pub struct Args {
    /// Timed dispatches per candidate.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut gpu = Gpu::new_blocking()?;
    let default = gpu.tuning.clone();
    let (best, trials) = pollster::block_on(ternlight_gpu::tune::autotune(&mut gpu, args.reps))?;
    let path = tuning::save(&gpu, &best)?;
    let sizes = |t: &Tuning, kernel| match kernel {
        TunedKernel::Matvec if t.rpl > 0 => format!("wg {} rows/inv {} vw {}", t.wg, t.rpl, t.vw),
        TunedKernel::Matvec => format!("wg {} nr {} vw {}", t.wg, t.nr, t.vw),
        TunedKernel::Matmul => {
            format!("tm {} tn {} wg {}x{} broadcast {}", t.tm, t.tn, t.wg_x, t.wg_y, t.broadcast)
        }
        TunedKernel::TernaryMatvec => {
            format!("wg {} nr {} rows {} swar {}", t.ternary_wg, t.ternary_nr, t.ternary_rows, t.ternary_swar)
        }
        TunedKernel::DecodeAttention => format!("splits {}", t.attn_splits),
        TunedKernel::SplitFrom => format!("splits {} at {} keys", t.attn_splits, t.attn_split_from),
    };
    if args.json {
        let report = json!({ "device": gpu.info.name, "default": tuning::to_json(&default),
            "chosen": tuning::to_json(&best), "cache": path.display().to_string(), "trials": tuning::trials_json(&trials) });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} ({}): ms per 2048x2048 product (bf16, or ternary), or per decode token's attention to {} keys (or those \
         shown)",
        gpu.info.name,
        gpu.info.backend,
        ternlight_gpu::tune::ATTN_KEYS
    );
    for t in &trials {
        println!("  {:<14} {:<34} {:>9.3}", t.kernel.name(), sizes(&t.tuning, t.kernel), t.seconds * 1e3);
    }
    let kinds = [TunedKernel::Matvec, TunedKernel::Matmul, TunedKernel::TernaryMatvec, TunedKernel::DecodeAttention];
    let chosen: Vec<String> = kinds.iter().map(|&k| format!("{} {}", k.name(), sizes(&best, k))).collect();
    println!("chosen: {}; split from {} keys", chosen.join("; "), best.attn_split_from);
    println!("cached in {}", path.display());
    Ok(())
}
