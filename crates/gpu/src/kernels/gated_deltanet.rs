//! Gated DeltaNet (`linear/gated_deltanet.wgsl`): a chunkwise-parallel prefill (per chunk of 64 the products of
//! the WY form, then the state carried across chunks, solving each chunk's triangular system on the way) and a
//! fused recurrent decode; both read and write the same `[n_v_heads, dk, dv]` state, so prefill hands off to
//! decode. Reference: `reference::gated_delta`.

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;
use ternlight_core::spec::Activation;

/// Tokens per chunk of the chunkwise kernels.
pub const CHUNK: usize = 64;

/// Head layout and buffers of one Gated DeltaNet call.
pub struct DeltaNet<'a> {
    /// Query/key heads.
    pub n_k_heads: usize,
    /// Value heads.
    pub n_v_heads: usize,
    /// Channels per key head.
    pub dk: usize,
    /// Channels per value head.
    pub dv: usize,
    /// Conv outputs `[tokens, 2 * n_k_heads * dk + n_v_heads * dv]` = `[q | k | v]`.
    pub qkv: &'a wgpu::Buffer,
    /// Gate inputs `[b | a]` per token (`2 * n_v_heads` floats; per channel: `[b (n_v_heads) | a (n_v_heads *
    /// dk)]`), at columns `ab_columns.0..` of rows `ab_columns.1` wide (0: the gate inputs' own width).
    pub ab: &'a wgpu::Buffer,
    /// Where the gate inputs sit in `ab`'s rows: first column and row width.
    pub ab_columns: (usize, usize),
    /// `[A_log | dt_bias]`: `2 * n_v_heads` f32 (per channel: `n_v_heads + n_v_heads * dk`).
    pub gate_params: &'a wgpu::Buffer,
    /// Decay per key channel (Kimi Delta Attention) rather than per head.
    pub per_channel: bool,
    /// Multiplier of `beta = sigmoid(b)` (2 where negative eigenvalues are allowed).
    pub beta_scale: f32,
    /// State `[n_v_heads, dk, dv]`, read and updated.
    pub state: &'a wgpu::Buffer,
    /// Output `[tokens, n_v_heads * dv]`.
    pub out: &'a wgpu::Buffer,
}

/// A linear-attention layer's per-head output norm, applied by [`recurrent`] as it writes: RMSNorm over each value
/// head's `dv` outputs, then times `act(z)` when gated (one dispatch fewer per decode step).
pub struct HeadOutputNorm<'a> {
    /// Weight `[dv]`, f32.
    pub weight: &'a wgpu::Buffer,
    /// Epsilon.
    pub eps: f32,
    /// `(1 + w)` weights.
    pub unit_offset: bool,
    /// The output gate `z` `[tokens, n_v_heads * dv]` and its activation (SiLU or sigmoid).
    pub gate: Option<(&'a wgpu::Buffer, Activation)>,
}

/// Scratch of the chunkwise form, for up to `tokens` tokens (see [`ChunkScratch::new`]).
pub struct ChunkScratch {
    /// Per-token values `[tokens, n_v_heads, dv]`: Gated DeltaNet's and RWKV-7's state passes solve for theirs
    /// here (`Vn`, `u`); GLA keeps value-channel decays here.
    pub u: wgpu::Buffer,
    /// Per chunk a `[64, 64]` square, `[chunks, n_v_heads, 64, 64]`: Gated DeltaNet's `q k^T ⊙ Γ` on and below the
    /// diagonal and the triangular system's `L` above it.
    pub aqk: wgpu::Buffer,
    /// Per token and value head: `(G, beta, 1/|q|, 1/|k|)`.
    pub info: wgpu::Buffer,
    /// Per-channel cumulative log decays `[tokens, n_v_heads, dk]` (Kimi Delta Attention, GLA, RWKV-7).
    pub g: wgpu::Buffer,
}

impl ChunkScratch {
    /// Scratch for `tokens` tokens of a layer with `n_v_heads` heads of `dk`/`dv` channels.
    pub fn new(gpu: &Gpu, tokens: usize, n_v_heads: usize, dk: usize, dv: usize) -> Self {
        let padded = tokens.div_ceil(CHUNK) * CHUNK;
        ChunkScratch {
            u: gpu.zeros("gdn U", padded * n_v_heads * dv),
            aqk: gpu.zeros("gdn Aqk", padded * n_v_heads * CHUNK),
            info: gpu.zeros("gdn info", padded * n_v_heads * 4),
            g: gpu.zeros("kda G", padded * n_v_heads * dk),
        }
    }
}

fn check(gpu: &Gpu, plan: &Plan, d: &DeltaNet) -> Result<Defines> {
    let width = 2 * d.n_k_heads * d.dk + d.n_v_heads * d.dv;
    plan.check_rows("gated_deltanet", "qkv", d.qkv, Rows::Tokens, width)?;
    let (offset, stride) = ab_columns(d);
    if offset + gate_width(d) > stride {
        return Err(GpuError::shape("gated_deltanet", format!("gate inputs at {offset}.. of rows {stride} wide")));
    }
    plan.check_rows("gated_deltanet", "gates", d.ab, Rows::Tokens, stride)?;
    plan.check_rows("gated_deltanet", "output", d.out, Rows::Tokens, d.n_v_heads * d.dv)?;
    if d.n_k_heads == 0 || !d.n_v_heads.is_multiple_of(d.n_k_heads) {
        return Err(GpuError::shape(
            "gated_deltanet",
            format!("{} value heads over {} key heads", d.n_v_heads, d.n_k_heads),
        ));
    }
    if d.dk == 0 || d.dk > 256 || d.dv == 0 || d.dv as u32 > gpu.info.max_workgroup_invocations {
        return Err(GpuError::shape(
            "gated_deltanet",
            format!("head dims dk {} / dv {} (dk <= 256, dv <= workgroup size)", d.dk, d.dv),
        ));
    }
    Ok(Defines::new()
        .set("DK", d.dk)
        .set("DV", d.dv)
        .set("BETA_SCALE", format!("{:?}", d.beta_scale))
        .flag("PER_CHANNEL", d.per_channel))
}

/// Floats of one token's gate inputs.
fn gate_width(d: &DeltaNet) -> usize {
    if d.per_channel {
        d.n_v_heads * (1 + d.dk)
    } else {
        2 * d.n_v_heads
    }
}

/// The gate inputs' first column and row width in `ab`.
fn ab_columns(d: &DeltaNet) -> (usize, usize) {
    match d.ab_columns {
        (offset, 0) => (offset, gate_width(d)),
        columns => columns,
    }
}

fn params(d: &DeltaNet) -> [u32; 5] {
    let (offset, stride) = ab_columns(d);
    let width = 2 * d.n_k_heads * d.dk + d.n_v_heads * d.dv;
    [d.n_k_heads as u32, d.n_v_heads as u32, width as u32, offset as u32, stride as u32]
}

/// Records the token-by-token recurrence over the forward's tokens (decode), its outputs through `norm` when given.
pub fn recurrent(gpu: &Gpu, plan: &mut Plan, d: &DeltaNet, norm: Option<&HeadOutputNorm>) -> Result<()> {
    let (defines, cols) = super::column_blocks(check(gpu, plan, d)?, d.dk, d.dv, true);
    let mut defines = defines.flag("RECURRENT", true);
    let mut buffers = vec![d.qkv.into(), d.ab.into(), d.gate_params.into(), d.state.into(), d.out.into()];
    if let Some(n) = norm {
        if n.weight.size() < (d.dv * 4) as u64 {
            return Err(GpuError::shape("gated_deltanet", format!("output norm weight under {} floats", d.dv)));
        }
        defines = defines
            .flag("OUT_NORM", true)
            .set("COLS_POW2", cols.next_power_of_two())
            .set("NORM_EPS", format!("{:?}", n.eps))
            .set("NORM_OFFSET", if n.unit_offset { "1.0" } else { "0.0" });
        buffers.push(n.weight.into());
        if let Some((z, act)) = n.gate {
            plan.check_rows("gated_deltanet", "output gate", z, Rows::Tokens, d.n_v_heads * d.dv)?;
            if !matches!(act, Activation::Silu | Activation::Sigmoid) {
                return Err(GpuError::shape("gated_deltanet", format!("output gate activation {act:?}")));
            }
            defines = defines.flag("GATE", true).set("GATE_ACT", super::mlp::act_name(act));
            buffers.push(z.into());
        }
    }
    plan.dispatch(gpu, "linear/gated_deltanet.wgsl", &defines, &params(d), &buffers, Grid::Fixed(d.n_v_heads as u32))
}

/// Records the chunkwise form over the forward's tokens (prefill): per-chunk WY transforms in parallel, then
/// the state carried across chunks.
pub fn chunked(gpu: &Gpu, plan: &mut Plan, d: &DeltaNet, s: &ChunkScratch) -> Result<()> {
    let defines = check(gpu, plan, d)?;
    let shader = "linear/gated_deltanet.wgsl";
    let mut prep = vec![d.qkv.into(), d.ab.into(), d.gate_params.into(), (&s.aqk).into(), (&s.info).into()];
    if d.per_channel {
        prep.push((&s.g).into());
    }
    let grid = Grid::Chunks { chunk: CHUNK as u32, per_chunk: d.n_v_heads as u32 };
    let prep_defines = super::token_tiles(gpu, super::quad_input(defines.clone(), d.dk, d.dv), CHUNK as u32);
    plan.dispatch(gpu, shader, &prep_defines.flag("CHUNK_PREP", true), &params(d), &prep, grid)?;
    let mut state = vec![d.qkv.into(), d.state.into(), d.out.into(), (&s.u).into(), (&s.aqk).into(), (&s.info).into()];
    if d.per_channel {
        state.push((&s.g).into());
    }
    let (defines, cols) = super::column_blocks(defines, d.dk, d.dv, true);
    let defines = super::token_tiles(gpu, defines, cols as u32).flag("CHUNK_STATE", true);
    plan.dispatch(gpu, shader, &defines, &params(d), &state, Grid::Fixed(d.n_v_heads as u32))
}
