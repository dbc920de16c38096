//! Rotary embedding in place (`common/rope.wgsl`); reference: `reference::rope::rope`.

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Position tables for one RoPE configuration, `[positions, rotary_dim / 2]` each.
pub struct RopeTables {
    /// cos of position × inverse frequency.
    pub cos: wgpu::Buffer,
    /// sin of position × inverse frequency.
    pub sin: wgpu::Buffer,
    /// Positions covered.
    pub positions: usize,
    /// Rotated channels.
    pub rotary_dim: usize,
}

impl RopeTables {
    /// Uploads the tables of `rope` for `positions` positions.
    pub fn new(gpu: &Gpu, rope: &ternlight_core::spec::RopeSpec, positions: usize) -> Self {
        let (cos, sin) = rope.tables(positions);
        RopeTables {
            cos: gpu.upload_f32("rope cos", &cos),
            sin: gpu.upload_f32("rope sin", &sin),
            positions,
            rotary_dim: rope.rotary_dim,
        }
    }
}

/// Per-head RMSNorms of the queries and keys (`[head_dim]` weights each), applied before the rotation.
#[derive(Clone, Copy)]
pub struct HeadNorms<'a> {
    /// The query heads' weight.
    pub q: &'a wgpu::Buffer,
    /// The key heads' weight.
    pub k: &'a wgpu::Buffer,
    /// Added to the mean square.
    pub eps: f32,
    /// The weights are stored as `w - 1`.
    pub unit_offset: bool,
}

/// Records the rotation of each `(buffer, heads)` target, `[tokens, heads, head_dim]`, at positions `pos0..`: one
/// or two targets (queries and keys) in one dispatch.
pub fn rope(
    gpu: &Gpu,
    plan: &mut Plan,
    targets: &[(&wgpu::Buffer, usize)],
    head_dim: usize,
    tables: &RopeTables,
) -> Result<()> {
    record(gpu, plan, targets, head_dim, tables, None)
}

/// Records, in one dispatch, the per-head norms of queries `q` and keys `k` (`(buffer, heads)`, `[tokens, heads,
/// head_dim]`) and then their rotation: one invocation per head, so for decode's few tokens.
pub fn rope_normed(
    gpu: &Gpu,
    plan: &mut Plan,
    [q, k]: [(&wgpu::Buffer, usize); 2],
    head_dim: usize,
    tables: &RopeTables,
    norms: HeadNorms,
) -> Result<()> {
    record(gpu, plan, &[q, k], head_dim, tables, Some(norms))
}

fn record(
    gpu: &Gpu,
    plan: &mut Plan,
    targets: &[(&wgpu::Buffer, usize)],
    head_dim: usize,
    tables: &RopeTables,
    norms: Option<HeadNorms>,
) -> Result<()> {
    if tables.rotary_dim > head_dim || !tables.rotary_dim.is_multiple_of(2) {
        return Err(GpuError::shape("rope", format!("rotary dim {} for head dim {head_dim}", tables.rotary_dim)));
    }
    let (&(x, heads), second) = match targets {
        [first] => (first, None),
        [first, second] => (first, Some(second)),
        _ => return Err(GpuError::shape("rope", format!("{} targets: one or two", targets.len()))),
    };
    plan.check_rows("rope", "input", x, Rows::Tokens, heads * head_dim)?;
    let heads2 = second.map_or(0, |&(_, h)| h);
    let mut buffers = vec![x.into(), (&tables.cos).into(), (&tables.sin).into()];
    if let Some(&(x2, h2)) = second {
        plan.check_rows("rope", "second input", x2, Rows::Tokens, h2 * head_dim)?;
        buffers.push(x2.into());
    }
    if let Some(n) = &norms {
        buffers.extend([n.q.into(), n.k.into()]);
    }
    let half = tables.rotary_dim / 2;
    let wg = gpu.tuning.wg;
    let (eps, offset) = norms.map_or((0.0, 0.0), |n| (n.eps, f32::from(u8::from(n.unit_offset))));
    let params = [
        heads as u32,
        head_dim as u32,
        half as u32,
        tables.positions as u32,
        heads2 as u32,
        super::f32_word(eps),
        super::f32_word(offset),
    ];
    let per_head = if norms.is_some() { 1 } else { half };
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: ((heads + heads2) * per_head) as u32, per_group: wg };
    let defines = Defines::new().set("WG", wg).flag("PAIR", second.is_some()).flag("HEAD_NORM", norms.is_some());
    plan.dispatch(gpu, "common/rope.wgsl", &defines, &params, &buffers, grid)
}
