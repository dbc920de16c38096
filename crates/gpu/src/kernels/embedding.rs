//! Token embedding gather (`common/embedding.wgsl`); reference: `reference::embedding::embedding`.

use super::{f32_word, weight_defines};
use crate::buffer::Weight;
use crate::device::Gpu;
use crate::error::Result;
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Records `out[t] = table[ids[t]] * scale` for the forward's tokens, one dispatch per row block of the table.
pub fn embedding(
    gpu: &Gpu,
    plan: &mut Plan,
    table: &Weight,
    ids: &wgpu::Buffer,
    out: &wgpu::Buffer,
    scale: f32,
) -> Result<()> {
    plan.check_rows("embedding", "output", out, Rows::Tokens, table.cols)?;
    let wg = gpu.tuning.wg;
    let defines = weight_defines(Defines::new().set("WG", wg), table, 4);
    for block in &table.blocks {
        let params = [table.cols as u32, block.row0 as u32, block.rows as u32, f32_word(scale)];
        let grid = Grid::Flat { rows: Rows::Tokens, per_row: table.cols as u32, per_group: wg };
        plan.dispatch(
            gpu,
            "common/embedding.wgsl",
            &defines,
            &params,
            &[ids.into(), out.into(), (&block.buffer).into()],
            grid,
        )?;
    }
    Ok(())
}
