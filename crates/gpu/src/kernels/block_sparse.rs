//! InfLLM-V2 block-sparse attention's selection (`attention/pool.wgsl`, `attention/select.wgsl`): pooled keys kept
//! up to date as windows complete, then each (token, kv head) picks its key blocks, which the attention kernels
//! visit instead of every key. Reference: `reference::block_sparse::select_blocks`.

use super::f32_word;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;
use ternlight_core::spec::BlockSparse;

/// The most query heads per kv head the selection kernel takes (its per-head log-sum-exps live in workgroup memory).
pub const MAX_GROUP: usize = 64;

/// One layer's selection buffers: the blocks each (token, kv head) attends and their count (0: dense).
pub struct Selection<'a> {
    /// The selection rule.
    pub cfg: BlockSparse,
    /// Block lists `[tokens, n_kv_heads, cfg.max_selected()]` u32, ascending.
    pub blocks: &'a wgpu::Buffer,
    /// Entries per list `[tokens, n_kv_heads]` u32.
    pub counts: &'a wgpu::Buffer,
}

/// Records the pooling of the fine windows this forward completes: `k_cache` `[positions, n_kv_heads, head_dim]`
/// (a whole-context cache) into `pooled` `[windows, n_kv_heads, head_dim]`.
pub fn pool_keys(
    gpu: &Gpu,
    plan: &mut Plan,
    cfg: &BlockSparse,
    k_cache: &wgpu::Buffer,
    pooled: &wgpu::Buffer,
    (n_kv_heads, head_dim): (usize, usize),
) -> Result<()> {
    cfg.check().map_err(|e| GpuError::shape("block-sparse pooling", e))?;
    let wg = gpu.tuning.wg;
    let row = n_kv_heads * head_dim;
    let params = [row as u32, cfg.kernel() as u32, cfg.stride() as u32];
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: row as u32, per_group: wg };
    let defines = Defines::new().set("WG", wg);
    plan.dispatch(gpu, "attention/pool.wgsl", &defines, &params, &[k_cache.into(), pooled.into()], grid)
}

/// Records the block selection for queries `q` `[tokens, n_heads, head_dim]` from the pooled keys; `scores` holds
/// `tokens * n_kv_heads * max_blocks` f32 of scratch (`max_blocks`: blocks of the longest context).
#[allow(clippy::too_many_arguments)]
pub fn select(
    gpu: &Gpu,
    plan: &mut Plan,
    sel: &Selection,
    q: &wgpu::Buffer,
    pooled: &wgpu::Buffer,
    scores: &wgpu::Buffer,
    (n_heads, n_kv_heads, head_dim): (usize, usize, usize),
    (scale, max_blocks): (f32, usize),
) -> Result<()> {
    let c = &sel.cfg;
    c.check().map_err(|e| GpuError::shape("block selection", e))?;
    if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) || n_heads / n_kv_heads > MAX_GROUP {
        return Err(GpuError::shape(
            "block selection",
            format!("{n_heads} query heads over {n_kv_heads} kv heads (at most {MAX_GROUP} per group)"),
        ));
    }
    plan.check_rows("block selection", "query", q, Rows::Tokens, n_heads * head_dim)?;
    let wg = gpu.tuning.wg;
    let defines = Defines::new().set("WG", wg).set("HEAD_DIM", head_dim).set("MAX_GROUP", n_heads / n_kv_heads);
    let params = [
        n_heads as u32,
        n_kv_heads as u32,
        f32_word(scale),
        c.block as u32,
        c.init_blocks as u32,
        c.local_blocks as u32,
        c.topk as u32,
        c.dense_len as u32,
        max_blocks as u32,
        c.max_selected() as u32,
    ];
    let buffers = [q.into(), pooled.into(), scores.into(), sel.blocks.into(), sel.counts.into()];
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: n_kv_heads as u32, per_group: 1 };
    plan.dispatch(gpu, "attention/select.wgsl", &defines, &params, &buffers, grid)
}
