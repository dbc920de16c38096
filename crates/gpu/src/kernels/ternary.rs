//! Ternary (BitNet b1.58) linear layers. Activations are quantised per token to int8 (`ternary/act_quant.wgsl`);
//! weight codes stay packed at 2 bits ([`crate::buffer::Weight::upload_ternary`]). One-token layers whose input width
//! is a multiple of 16 take the integer path ([`matvec_dp4`]: `dot4I8Packed` on i8x4 words,
//! `ternary/matvec_dp4.wgsl`); the rest decode codes to f32 inside the ordinary linear kernels (`W_TERNARY` in
//! `common/weights.wgsl`). Reference: `reference::ternary`.

use super::f32_word;
use super::matmul::InputNorm;
use crate::buffer::Weight;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows, Work};
use crate::shader::Defines;
use ternlight_core::spec::Activation;

/// Where quantised activations go.
pub enum Quantised<'a> {
    /// Fake-quantised f32 `[rows, width]` (`round(x s) / s`), for the f32 kernels.
    Float(&'a wgpu::Buffer),
    /// i8x4 words `[rows, width / 4]` (width a multiple of 16; each group of 16 values interleaved the way
    /// [`matvec_dp4`] reads its weight codes) and the per-row factor `1 / s`.
    Packed(&'a wgpu::Buffer, &'a wgpu::Buffer),
}

/// Hybrid Gated Flow's down projection, fused into [`act_quant_hgf`].
pub struct HgfDown<'a> {
    /// `A` `[rank, width]` in its stored dtype, one block.
    pub a: &'a Weight,
    /// Output `[rows, rank]`: `x A^T` of the unquantised input.
    pub mid: &'a wgpu::Buffer,
    /// `A` reads the normalised input (the norm is the block's pre-norm, folded into the quantiser) rather than the
    /// raw one (the norm is the layer's own, as fla's BitLinear applies it to the quantised path only).
    pub normed_input: bool,
}

/// Records the per-row int8 quantisation of `x` (`s = 127 / max|x|`) over `rows` of `width`; with `norm`, `x` is
/// RMSNormed first.
pub fn act_quant(
    gpu: &Gpu,
    plan: &mut Plan,
    io: (&wgpu::Buffer, Quantised),
    width: usize,
    rows: Rows,
    norm: Option<InputNorm>,
) -> Result<()> {
    record_act_quant(gpu, plan, io, (width, rows), norm, None)
}

/// [`act_quant`] that also computes Hybrid Gated Flow's low-rank values `x A^T` from the same (unquantised) rows.
pub fn act_quant_hgf(
    gpu: &Gpu,
    plan: &mut Plan,
    io: (&wgpu::Buffer, Quantised),
    (width, rows): (usize, Rows),
    norm: Option<InputNorm>,
    hgf: &HgfDown,
) -> Result<()> {
    record_act_quant(gpu, plan, io, (width, rows), norm, Some(hgf))
}

/// f32 the activation quantiser's reductions may hold in workgroup memory (WebGPU's guaranteed 16 KiB).
const WORKGROUP_FLOATS: u32 = 4096;

fn record_act_quant(
    gpu: &Gpu,
    plan: &mut Plan,
    (x, out): (&wgpu::Buffer, Quantised),
    (width, rows): (usize, Rows),
    norm: Option<InputNorm>,
    hgf: Option<&HgfDown>,
) -> Result<()> {
    plan.check_rows("act_quant", "input", x, rows, width)?;
    let mut buffers = vec![x.into()];
    let packed = match out {
        Quantised::Float(out) => {
            plan.check_rows("act_quant", "output", out, rows, width)?;
            buffers.push(out.into());
            false
        }
        Quantised::Packed(words, scales) => {
            if !width.is_multiple_of(16) {
                return Err(GpuError::shape("act_quant", format!("packed width {width} is not a multiple of 16")));
            }
            plan.check_rows("act_quant", "packed output", words, rows, width / 4)?;
            plan.check_rows("act_quant", "scales", scales, rows, 1)?;
            buffers.extend([words.into(), scales.into()]);
            true
        }
    };
    // The reductions share one workgroup array of WG x LANES floats, kept within WebGPU's 16 KiB.
    let lanes = 2 + hgf.map_or(0, |h| h.a.rows as u32);
    let mut wg = gpu.tuning.wg;
    while wg > 1 && wg * lanes > WORKGROUP_FLOATS {
        wg /= 2;
    }
    let mut defines = Defines::new()
        .set("WG", wg)
        .set("LANES", lanes)
        .flag("NORM", norm.is_some())
        .flag("PACKED", packed)
        .set("NORM_BINDING", 2 + buffers.len());
    if let Some(n) = &norm {
        buffers.push(n.weight.into());
    }
    if let Some(h) = hgf {
        let rank = h.a.rows;
        if h.a.cols != width || h.a.blocks.len() != 1 {
            return Err(GpuError::shape(
                "act_quant",
                format!("HGF down projection [{rank}, {}] in one block", h.a.cols),
            ));
        }
        plan.check_rows("act_quant", "HGF values", h.mid, rows, rank)?;
        defines = defines
            .flag("HGF", true)
            .flag("HGF_NORMED", h.normed_input && norm.is_some())
            .set("RANK", rank)
            .set("MID_BINDING", 2 + buffers.len());
        buffers.push(h.mid.into());
        defines = super::weight_defines(defines, h.a, 2 + buffers.len() as u32);
        buffers.push((&h.a.blocks[0].buffer).into());
    }
    let grid = Grid::Flat { rows, per_row: 1, per_group: 1 };
    let (eps, offset) = norm.map_or((0.0, 0.0), |n| (n.eps, f32::from(u8::from(n.unit_offset))));
    let params = [width as u32, rows.selector(), f32_word(eps), f32_word(offset)];
    plan.dispatch(gpu, "ternary/act_quant.wgsl", &defines, &params, &buffers, grid)
}

/// One product through ternary weights on packed int8 activations.
pub struct MatvecDp4<'a> {
    /// i8x4 activation words `[rows, w.cols / 4]`.
    pub xq: &'a wgpu::Buffer,
    /// Per-row dequantisation factors `[rows]`.
    pub xs: &'a wgpu::Buffer,
    /// Ternary weights `[n, k]`, `k` a multiple of 16.
    pub w: &'a Weight,
    /// Multiplier of the product.
    pub scale: f32,
    /// Output `[rows, y_stride]`, columns `y_offset..`.
    pub y: &'a wgpu::Buffer,
    /// First output column.
    pub y_offset: usize,
    /// Output row stride (0 = the weight's rows).
    pub y_stride: usize,
    /// Row count source.
    pub rows: Rows,
    /// Add to `y` instead of storing.
    pub accumulate: bool,
    /// Hybrid Gated Flow's up projection, fused: the low-rank values `[rows, rank]` (from [`act_quant_hgf`]) and
    /// `diag(g) B` `[n, rank]` f32 in one block.
    pub hgf: Option<(&'a wgpu::Buffer, &'a Weight)>,
    /// Up to two more projections of the same activations, computed in the same dispatch (stored, into outputs of
    /// their own).
    pub stacked: &'a [Stacked<'a>],
    /// A gated MLP's up matrix (`w`'s shape) with its scale and the gate's activation: `y = act(x w^T scale) *
    /// (x up^T up_scale)` in one dispatch.
    pub gated: Option<(&'a Weight, f32, Activation)>,
}

/// A projection stacked below [`MatvecDp4::w`]: its ternary matrix (one block, `w`'s width), scale and output
/// `[rows, its rows]`.
pub struct Stacked<'a> {
    /// Ternary weights.
    pub w: &'a Weight,
    /// Multiplier of the product.
    pub scale: f32,
    /// Output.
    pub y: &'a wgpu::Buffer,
}

impl<'a> MatvecDp4<'a> {
    /// A plain product of `w` into `y` (stored, columns from 0, rows `w.rows` wide, one per token).
    pub fn new(xq: &'a wgpu::Buffer, xs: &'a wgpu::Buffer, w: &'a Weight, scale: f32, y: &'a wgpu::Buffer) -> Self {
        MatvecDp4 {
            xq,
            xs,
            w,
            scale,
            y,
            y_offset: 0,
            y_stride: 0,
            rows: Rows::Tokens,
            accumulate: false,
            hgf: None,
            stacked: &[],
            gated: None,
        }
    }
}

/// Whether `w` can take the integer path on `gpu`: ternary with whole 16-code words per row, on a device whose WGSL
/// has `dot4I8Packed`.
pub fn dp4_ready(gpu: &Gpu, w: &Weight) -> bool {
    gpu.info.packed_dot && w.ternary && w.cols.is_multiple_of(16)
}

/// Records a plain one-token ternary product of f32 `x` on the integer path: its int8 quantisation into `words`
/// and `scales` (`[w.cols / 4]`, `[1]`), then `y = x w^T`.
pub fn quantised_matvec(
    gpu: &Gpu,
    plan: &mut Plan,
    x: &wgpu::Buffer,
    (words, scales): (&wgpu::Buffer, &wgpu::Buffer),
    w: &Weight,
    y: &wgpu::Buffer,
) -> Result<()> {
    act_quant(gpu, plan, (x, Quantised::Packed(words, scales)), w.cols, Rows::Tokens, None)?;
    matvec_dp4(gpu, plan, &MatvecDp4::new(words, scales, w, 1.0, y))
}

/// Records the integer-path product, one dispatch per weight block.
pub fn matvec_dp4(gpu: &Gpu, plan: &mut Plan, m: &MatvecDp4) -> Result<()> {
    if !dp4_ready(gpu, m.w) {
        return Err(GpuError::shape(
            "matvec_dp4",
            format!("ternary weight [{}, {}] with k a multiple of 16", m.w.rows, m.w.cols),
        ));
    }
    let (n, k) = (m.w.rows, m.w.cols);
    let stride = if m.y_stride == 0 { n } else { m.y_stride };
    plan.check_rows("matvec_dp4", "activations", m.xq, m.rows, k / 4)?;
    plan.check_rows("matvec_dp4", "scales", m.xs, m.rows, 1)?;
    plan.check_rows("matvec_dp4", "output", m.y, m.rows, stride)?;
    let t = &gpu.tuning;
    let mut defines = Defines::new().set("WG", t.ternary_wg).set("NR", t.ternary_nr);
    let fused = !m.stacked.is_empty() || m.gated.is_some();
    if fused {
        let extra: Vec<&Weight> = m.stacked.iter().map(|s| s.w).chain(m.gated.map(|g| g.0)).collect();
        let alike = |w: &Weight| dp4_ready(gpu, w) && w.cols == k && w.blocks.len() == 1;
        let gate_shaped = m.gated.is_none_or(|g| g.0.rows == n);
        if m.hgf.is_some()
            || m.w.blocks.len() != 1
            || m.stacked.len() > 2
            || (m.gated.is_some() && !m.stacked.is_empty())
            || !extra.iter().all(|w| alike(w))
            || !gate_shaped
        {
            return Err(GpuError::shape(
                "matvec_dp4",
                "stacked or gated products take one-block ternary matrices of one width, without HGF".to_string(),
            ));
        }
        for s in m.stacked {
            plan.check_rows("matvec_dp4", "stacked output", s.y, m.rows, s.w.rows)?;
        }
    }
    if let Some((_, _, act)) = m.gated {
        defines = defines.flag("GATED", true).set("ACT", super::mlp::act_name(act));
    }
    defines = defines.flag("STACKED", !m.stacked.is_empty()).flag("STACKED3", m.stacked.len() == 2);
    if let Some((mid, bg)) = m.hgf {
        if bg.rows != n || bg.blocks.len() != 1 || bg.dtype != ternlight_core::dtype::DType::F32 {
            return Err(GpuError::shape(
                "matvec_dp4",
                format!("HGF up projection [{}, {}] f32 in one block", bg.rows, bg.cols),
            ));
        }
        plan.check_rows("matvec_dp4", "HGF values", mid, m.rows, bg.cols)?;
        defines = defines.flag("HGF", true).set("RANK", bg.cols);
    }
    // Stacked rows follow the first matrix's: segment boundaries and scales (the third's scale unused otherwise).
    let rows_of = |i: usize| m.stacked.get(i).map_or(0, |s| s.w.rows);
    let scale_of = |i: usize| m.stacked.get(i).map_or(1.0, |s| s.scale);
    for block in &m.w.blocks {
        let (seg1, seg2) = (block.rows, block.rows + rows_of(0));
        let n_block = seg2 + rows_of(1);
        let scale2 = m.gated.map_or(scale_of(0), |g| g.1);
        let params = [
            k as u32,
            n_block as u32,
            (m.y_offset + block.row0) as u32,
            stride as u32,
            m.rows.selector(),
            f32_word(m.scale),
            m.accumulate as u32,
            block.row0 as u32,
            seg1 as u32,
            seg2 as u32,
            f32_word(scale2),
            f32_word(scale_of(1)),
        ];
        let grid = Grid::Tiles { x: (n_block as u32).div_ceil(t.ternary_nr), rows: m.rows, rows_per_group: 1 };
        let mut buffers = vec![m.xq.into(), m.xs.into(), m.y.into(), (&block.buffer).into()];
        if let Some((mid, bg)) = m.hgf {
            buffers.extend([mid.into(), (&bg.blocks[0].buffer).into()]);
        }
        for s in m.stacked {
            buffers.extend([(&s.w.blocks[0].buffer).into(), s.y.into()]);
        }
        if let Some((up, _, _)) = m.gated {
            buffers.push((&up.blocks[0].buffer).into());
        }
        plan.dispatch(gpu, "ternary/matvec_dp4.wgsl", &defines, &params, &buffers, grid)?;
        let mut weight_bytes = block.buffer.size() + m.stacked.iter().map(|s| s.w.blocks[0].buffer.size()).sum::<u64>();
        let mut flops_per_row = 2 * (k * n_block) as u64;
        if let Some((up, _, _)) = m.gated {
            weight_bytes += up.blocks[0].buffer.size();
            flops_per_row += 2 * (k * block.rows) as u64;
        }
        if let Some((_, bg)) = m.hgf {
            weight_bytes += (bg.cols * block.rows * 4) as u64;
            flops_per_row += 2 * (bg.cols * block.rows) as u64;
        }
        plan.set_work(Work { weight_bytes, flops_per_row, rows: m.rows });
    }
    Ok(())
}
