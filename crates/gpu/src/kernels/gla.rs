//! Gated Linear Attention (`linear/gla.wgsl`): chunkwise prefill (per-chunk intra matrices in parallel, then the
//! state across chunks) and recurrent decode over one `[heads, dk, dv]` state. Reference: `reference::gla`.

use super::gated_deltanet::{ChunkScratch, CHUNK};
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// How the decay input `gk` becomes the per-channel log decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    /// Raw gate logits: `logsigmoid(gk) / normalizer` (GLA).
    LogSigmoid(f32),
    /// Log decays as they are (HGRN2, zero for linear attention).
    Log,
    /// One log decay per head for every token and channel (Lightning's `-slope`).
    PerHead,
    /// Log decays along the value channels, `[tokens, heads * dv]` (Gated Slot Attention's first pass).
    PerValue,
}

/// Head layout and buffers of one GLA call.
pub struct Gla<'a> {
    /// Heads.
    pub heads: usize,
    /// Channels per key head.
    pub dk: usize,
    /// Channels per value head.
    pub dv: usize,
    /// What `gk` holds.
    pub decay: Decay,
    /// Multiplier of q (`dk^-0.5` for GLA and its relatives, 1 for Lightning).
    pub q_scale: f32,
    /// `[tokens, heads * (2 dk + dv)]` = `[q | k | v]`.
    pub qkv: &'a wgpu::Buffer,
    /// Decay input: `[tokens, heads * dk]`, or `[heads]` for [`Decay::PerHead`].
    pub gk: &'a wgpu::Buffer,
    /// State `[heads, dk, dv]` from float `state_offset`, read and updated.
    pub state: &'a wgpu::Buffer,
    /// First float of this call's state in `state` (layers with two states share one buffer).
    pub state_offset: usize,
    /// Output `[tokens, heads * dv]`.
    pub out: &'a wgpu::Buffer,
}

fn check(gpu: &Gpu, plan: &Plan, g: &Gla) -> Result<Defines> {
    plan.check_rows("gla", "qkv", g.qkv, Rows::Tokens, g.heads * (2 * g.dk + g.dv))?;
    match g.decay {
        Decay::PerHead if g.gk.size() < (g.heads * 4) as u64 => {
            return Err(GpuError::shape("gla", format!("per-head decays for {} heads", g.heads)));
        }
        Decay::PerHead => {}
        Decay::PerValue => plan.check_rows("gla", "gates", g.gk, Rows::Tokens, g.heads * g.dv)?,
        _ => plan.check_rows("gla", "gates", g.gk, Rows::Tokens, g.heads * g.dk)?,
    }
    plan.check_rows("gla", "output", g.out, Rows::Tokens, g.heads * g.dv)?;
    if g.heads == 0 || g.dk == 0 || g.dk > 256 || g.dv == 0 || g.dv as u32 > gpu.info.max_workgroup_invocations {
        return Err(GpuError::shape("gla", format!("{} heads, dk {} (<= 256), dv {}", g.heads, g.dk, g.dv)));
    }
    let defines = Defines::new()
        .set("DK", g.dk)
        .set("DV", g.dv)
        .set("Q_SCALE", format!("{:?}", g.q_scale))
        .flag("KEY_DECAY", !matches!(g.decay, Decay::PerHead | Decay::PerValue));
    Ok(match g.decay {
        Decay::LogSigmoid(n) => defines.set("NORMALIZER", format!("{n:?}")),
        Decay::Log => defines.flag("LOG_DECAY", true),
        Decay::PerHead => defines.flag("HEAD_DECAY", true),
        Decay::PerValue => defines.flag("LOG_DECAY", true).flag("VALUE_DECAY", true),
    })
}

/// `linear/columns.wgsl`'s defines for `g`'s heads and its column blocks per head: vec4 blocks need the state to
/// start on a multiple of 4 floats.
fn column_blocks(defines: Defines, g: &Gla) -> (Defines, usize) {
    super::column_blocks(defines, g.dk, g.dv, g.state_offset.is_multiple_of(4))
}

fn params(g: &Gla) -> [u32; 3] {
    [g.heads as u32, (g.heads * (2 * g.dk + g.dv)) as u32, g.state_offset as u32]
}

/// Records the recurrence over the forward's tokens (decode).
pub fn recurrent(gpu: &Gpu, plan: &mut Plan, g: &Gla) -> Result<()> {
    let defines = column_blocks(check(gpu, plan, g)?, g).0.flag("RECURRENT", true);
    let buffers = [g.qkv.into(), g.gk.into(), g.state.into(), g.out.into()];
    plan.dispatch(gpu, "linear/gla.wgsl", &defines, &params(g), &buffers, Grid::Fixed(g.heads as u32))
}

/// Records the chunkwise form (prefill). Uses `s.aqk` for the intra-chunk matrices and `s.g` (sized
/// `[tokens, heads, dk]`) for the cumulative decay, or `s.u` (`[tokens, heads, dv]`) for value-channel decays.
pub fn chunked(gpu: &Gpu, plan: &mut Plan, g: &Gla, s: &ChunkScratch) -> Result<()> {
    let defines = check(gpu, plan, g)?.set("G_BINDING", 5);
    let shader = "linear/gla.wgsl";
    let g_cum = if g.decay == Decay::PerValue { &s.u } else { &s.g };
    let prep = [g.qkv.into(), g.gk.into(), (&s.aqk).into(), g_cum.into()];
    let grid = Grid::Chunks { chunk: CHUNK as u32, per_chunk: g.heads as u32 };
    let prep_defines = super::token_tiles(gpu, super::quad_input(defines.clone(), g.dk, g.dv), CHUNK as u32);
    plan.dispatch(gpu, shader, &prep_defines.flag("CHUNK_PREP", true), &params(g), &prep, grid)?;
    let state = [g.qkv.into(), g.state.into(), g.out.into(), g_cum.into(), (&s.aqk).into()];
    let (defines, cols) = column_blocks(defines, g);
    let defines = super::token_tiles(gpu, defines, cols as u32).flag("CHUNK_STATE", true);
    plan.dispatch(gpu, shader, &defines, &params(g), &state, Grid::Fixed(g.heads as u32))
}
