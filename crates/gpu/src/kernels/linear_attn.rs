//! Linear attention's own passes (`linear/linear_attn.wgsl`) around the GLA recurrence, which runs with zero decay
//! (see [`super::gla`]): the feature maps of q and k with the values laid out for the recurrence, and the division by
//! the normaliser of Based and Hedgehog. Reference: `reference::feature_map`.

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;
use ternlight_core::spec::FeatureMap;

/// Head layout of one linear-attention layer.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// Heads.
    pub heads: usize,
    /// Channels per q/k head (the map's input).
    pub dk: usize,
    /// Channels per value head.
    pub dv: usize,
    /// Whether the values carry the normaliser's column of ones.
    pub normalize: bool,
}

/// Records `dst = [φq | φk | v']` from `src = [q | k | v]` (token rows; see the shader for the layouts). `weights`
/// holds the map's learned layers, q's then k's, each a `[dk, dk]` weight then its `[dk]` bias; `None` for Taylor.
pub fn features(
    gpu: &Gpu,
    plan: &mut Plan,
    map: &FeatureMap,
    weights: Option<&wgpu::Buffer>,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    h: Heads,
) -> Result<()> {
    let f = map.features(h.dk);
    let (src_width, dst_width) = (h.heads * (2 * h.dk + h.dv), h.heads * (2 * f + h.dv + usize::from(h.normalize)));
    plan.check_rows("feature_map", "input", src, Rows::Tokens, src_width)?;
    plan.check_rows("feature_map", "output", dst, Rows::Tokens, dst_width)?;
    let layers = map.layers().len();
    let wg = gpu.tuning.wg;
    let mut defines = Defines::new().set("WG", wg).flag("NORMALIZE", h.normalize).flag("MAP", layers > 0);
    defines = match map {
        FeatureMap::Hadamard(_) => defines.flag("HADAMARD", true),
        FeatureMap::Taylor => defines.flag("TAYLOR", true),
        FeatureMap::Hedgehog(_) => defines.flag("HEDGEHOG", true),
    };
    let mut buffers = vec![src.into(), dst.into()];
    match weights {
        Some(w) if w.size() >= (4 * layers * h.dk * (h.dk + 1)) as u64 => buffers.push(w.into()),
        None if layers == 0 => {}
        _ => return Err(GpuError::shape("feature_map", format!("{layers} layers of [{0}, {0}] with bias", h.dk))),
    }
    let params = [h.heads, h.dk, h.dv, f, src_width, dst_width].map(|v| v as u32);
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: (3 * h.heads) as u32, per_group: wg };
    plan.dispatch(gpu, "linear/linear_attn.wgsl", &defines, &params, &buffers, grid)
}

/// Records `dst[t, h, j] = carried[t, h, j] / (carried[t, h, dv] + 1e-12)`: values `[tokens, heads * (dv + 1)]`
/// from the recurrence to normalised outputs `[tokens, heads * dv]`.
pub fn divide(
    gpu: &Gpu,
    plan: &mut Plan,
    carried: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    heads: usize,
    dv: usize,
) -> Result<()> {
    plan.check_rows("normalise", "input", carried, Rows::Tokens, heads * (dv + 1))?;
    plan.check_rows("normalise", "output", dst, Rows::Tokens, heads * dv)?;
    let wg = gpu.tuning.wg;
    let params = [heads, 0, dv, 0, 0, 0].map(|v| v as u32);
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: (heads * dv) as u32, per_group: wg };
    let defines = Defines::new().set("WG", wg).flag("DIVIDE", true);
    plan.dispatch(gpu, "linear/linear_attn.wgsl", &defines, &params, &[carried.into(), dst.into()], grid)
}
