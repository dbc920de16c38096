//! Ternary (BitNet b1.58) linear layers. Activations are quantised per token to int8 (`ternary/act_quant.wgsl`);
//! weight codes stay packed at 2 bits ([`crate::buffer::Weight::upload_ternary`]). One-token layers whose input width
//! is a multiple of 16 take the integer path ([`matvec_dp4`]: `dot4I8Packed` on i8x4 words, or where the tuning says
//! so two 16-bit products per 32-bit multiply, `ternary/matvec_dp4.wgsl`); the rest decode codes to f32 inside the
//! ordinary linear kernels (`W_TERNARY` in `common/weights.wgsl`). Reference: `reference::ternary`.

use super::f32_word;
use super::matmul::InputNorm;
use crate::buffer::Weight;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows, Work};
use crate::shader::Defines;
use ternlight_core::dtype::DType;
use ternlight_core::spec::Activation;

/// Where quantised activations go.
pub enum Quantised<'a> {
    /// Fake-quantised f32 `[rows, width]` (`round(x s) / s`), for the f32 kernels.
    Float(&'a wgpu::Buffer),
    /// One record of [`packed_stride`] words per row, what [`matvec_dp4`] reads: i8x4 words `[width / 4]` (width
    /// a multiple of 16; each group of 16 values interleaved the way [`matvec_dp4`] reads its weight codes), the
    /// factor `1 / s` (f32 bits), then the row's Hybrid Gated Flow low-rank values (f32 bits, [`packed_mid`] on).
    /// One buffer instead of three keeps fused products within small storage-buffer limits.
    Packed(&'a wgpu::Buffer),
}

/// Words per row of a [`Quantised::Packed`] record of `width` inputs with `mid_width` low-rank values, padded to
/// whole quads ([`matvec_dp4`] reads the activations 16 bytes at a time).
pub fn packed_stride(width: usize, mid_width: usize) -> usize {
    (packed_mid(width) + mid_width).next_multiple_of(4)
}

/// The word of a [`Quantised::Packed`] record of `width` inputs where its low-rank values start.
pub fn packed_mid(width: usize) -> usize {
    width / 4 + 1
}

/// Hybrid Gated Flow's down projections, fused into [`act_quant_hgf`]: those of every projection that shares the
/// quantisation, each distinct matrix once.
pub struct HgfDown<'a> {
    /// Up to three matrices `A` `[rank_i, width]` of one stored dtype, one block each.
    pub a: &'a [&'a Weight],
    /// Output `[rows, sum of the ranks]` of a [`Quantised::Float`] quantisation: `x A_i^T` of the unquantised
    /// input for each `A` side by side (a [`Quantised::Packed`] one keeps them in its records and ignores this).
    pub mid: Option<&'a wgpu::Buffer>,
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

/// [`act_quant`] that also computes Hybrid Gated Flow's low-rank values `x A_i^T` from the same (unquantised) rows.
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

/// Storage buffers the packed quantiser binds: input, records, the folded norm's weight when `norm`, and `downs`
/// HGF down projections. Callers keep shared quantisations within
/// [`crate::device::DeviceInfo::max_storage_buffers`].
pub fn act_quant_bindings(norm: bool, downs: usize) -> u32 {
    2 + u32::from(norm) + downs as u32
}

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
    let mid_width: usize = hgf.map_or(0, |h| h.a.iter().map(|a| a.rows).sum());
    let stride = packed_stride(width, mid_width);
    let packed = match out {
        Quantised::Float(out) => {
            plan.check_rows("act_quant", "output", out, rows, width)?;
            buffers.push(out.into());
            false
        }
        Quantised::Packed(records) => {
            if !width.is_multiple_of(16) {
                return Err(GpuError::shape("act_quant", format!("packed width {width} is not a multiple of 16")));
            }
            plan.check_rows("act_quant", "packed records", records, rows, stride)?;
            buffers.push(records.into());
            true
        }
    };
    let float_mid = !packed && hgf.is_some();
    let bindings = act_quant_bindings(norm.is_some(), hgf.map_or(0, |h| h.a.len())) + u32::from(float_mid);
    if bindings > gpu.info.max_storage_buffers {
        return Err(GpuError::shape(
            "act_quant",
            format!("{bindings} storage buffers, over the device's {}", gpu.info.max_storage_buffers),
        ));
    }
    // The reductions share one workgroup array of WG x LANES floats, kept within WebGPU's 16 KiB.
    let lanes = 2 + mid_width as u32;
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
        let first = h.a.first().ok_or_else(|| GpuError::shape("act_quant", "HGF without a down projection"))?;
        let alike = |a: &&Weight| a.cols == width && a.blocks.len() == 1 && a.dtype == first.dtype;
        if h.a.len() > 3 || !h.a.iter().all(alike) {
            let shapes: Vec<String> = h.a.iter().map(|a| format!("[{}, {}] {:?}", a.rows, a.cols, a.dtype)).collect();
            return Err(GpuError::shape(
                "act_quant",
                format!("HGF down projections {shapes:?}: up to three of width {width}, one dtype, one block each"),
            ));
        }
        defines =
            defines.flag("HGF", true).flag("HGF_NORMED", h.normed_input && norm.is_some()).set("MID_WIDTH", mid_width);
        if !packed {
            let mid =
                h.mid.ok_or_else(|| GpuError::shape("act_quant", "HGF values of a float quantisation need mid"))?;
            plan.check_rows("act_quant", "HGF values", mid, rows, mid_width)?;
            defines = defines.set("MID_BINDING", 2 + buffers.len());
            buffers.push(mid.into());
        }
        defines = super::weight_defines(defines, first, 2 + buffers.len() as u32);
        for (i, a) in h.a.iter().enumerate() {
            defines = defines.set(&format!("RANK{}", i + 1), a.rows);
            if i > 0 {
                defines = defines.set(&format!("W{}_BINDING", i + 1), 2 + buffers.len());
            }
            buffers.push((&a.blocks[0].buffer).into());
        }
    }
    let grid = Grid::Flat { rows, per_row: 1, per_group: 1 };
    let (eps, offset) = norm.map_or((0.0, 0.0), |n| (n.eps, f32::from(u8::from(n.unit_offset))));
    let params = [width as u32, rows.selector(), f32_word(eps), f32_word(offset), stride as u32];
    plan.dispatch(gpu, "ternary/act_quant.wgsl", &defines, &params, &buffers, grid)
}

/// One product through ternary weights on packed int8 activations.
pub struct MatvecDp4<'a> {
    /// The activations as [`Quantised::Packed`] records of `w.cols` inputs and [`MatvecDp4::mid_width`] low-rank
    /// values.
    pub xq: &'a wgpu::Buffer,
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
    /// Rows (tokens) each invocation computes, sharing every weight word it loads: 1 for one-token products (a
    /// workgroup's lanes split `k`), more for a prefill (each invocation takes whole rows of `k`).
    pub tile_rows: u32,
    /// Add to `y` instead of storing.
    pub accumulate: bool,
    /// Hybrid Gated Flow low-rank values per record (from [`act_quant_hgf`]), read by the projections that have
    /// a correction.
    pub mid_width: usize,
    /// `w`'s Hybrid Gated Flow correction, fused.
    pub hgf: Option<HgfUp<'a>>,
    /// Up to three more projections of the same activations, computed in the same dispatch (stored, into outputs of
    /// their own).
    pub stacked: &'a [Stacked<'a>],
    /// A gated MLP's up projection: `y = act(x w^T scale) * (x up^T up_scale)` in one dispatch.
    pub gated: Option<Gated<'a>>,
}

/// A Hybrid Gated Flow up projection fused into [`matvec_dp4`]: `diag(g) B` `[its rows, rank]` f32 in one block (its
/// own, or rows of one that several projections of a dispatch share: [`Weight::stack_rows`]) and the first of its
/// low-rank values in a record ([`MatvecDp4::mid_width`]).
#[derive(Clone, Copy)]
pub struct HgfUp<'a> {
    /// `diag(g) B`, from row `row0` on.
    pub bg: &'a Weight,
    /// The projection's first row in `bg`.
    pub row0: usize,
    /// First column of its values in the low-rank rows.
    pub offset: usize,
}

impl<'a> HgfUp<'a> {
    /// The correction `bg` whole, its values from `offset` on.
    pub fn new(bg: &'a Weight, offset: usize) -> Self {
        HgfUp { bg, row0: 0, offset }
    }
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
    /// Its Hybrid Gated Flow correction.
    pub hgf: Option<HgfUp<'a>>,
}

/// The up projection of a gated MLP computed beside its gate ([`MatvecDp4::w`], same shape, one block).
#[derive(Clone, Copy)]
pub struct Gated<'a> {
    /// Ternary weights.
    pub up: &'a Weight,
    /// Multiplier of the up product.
    pub scale: f32,
    /// The gate's activation.
    pub act: Activation,
    /// The up projection's Hybrid Gated Flow correction.
    pub hgf: Option<HgfUp<'a>>,
}

impl<'a> MatvecDp4<'a> {
    /// A plain product of `w` into `y` (stored, columns from 0, rows `w.rows` wide, one per token).
    pub fn new(xq: &'a wgpu::Buffer, w: &'a Weight, scale: f32, y: &'a wgpu::Buffer) -> Self {
        MatvecDp4 {
            xq,
            w,
            scale,
            y,
            y_offset: 0,
            y_stride: 0,
            rows: Rows::Tokens,
            tile_rows: 1,
            accumulate: false,
            mid_width: 0,
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

/// Records a plain one-token ternary product of f32 `x` on the integer path: its int8 quantisation into `record`
/// ([`packed_stride`]`(w.cols, 0)` words), then `y = x w^T`.
pub fn quantised_matvec(
    gpu: &Gpu,
    plan: &mut Plan,
    x: &wgpu::Buffer,
    record: &wgpu::Buffer,
    w: &Weight,
    y: &wgpu::Buffer,
) -> Result<()> {
    act_quant(gpu, plan, (x, Quantised::Packed(record)), w.cols, Rows::Tokens, None)?;
    matvec_dp4(gpu, plan, &MatvecDp4::new(record, w, 1.0, y))
}

/// The corrections of `m`'s projections in order (1: `w`, 2: the first stacked matrix or the gated up one, 3 and 4
/// the others), each with its projection's number and rows.
fn corrections<'a>(m: &MatvecDp4<'a>) -> Vec<(usize, HgfUp<'a>, usize)> {
    [(m.hgf, m.w.rows)]
        .into_iter()
        .chain(m.stacked.iter().map(|s| (s.hgf, s.w.rows)))
        .chain(m.gated.map(|g| (g.hgf, m.w.rows)))
        .enumerate()
        .filter_map(|(i, (h, rows))| h.map(|h| (i + 1, h, rows)))
        .collect()
}

/// Whether the corrections all read rows of one matrix, bound once (more than one of them).
fn packed(corrections: &[(usize, HgfUp, usize)]) -> bool {
    corrections.len() > 1 && corrections.iter().all(|(_, h, _)| std::ptr::eq(h.bg, corrections[0].1.bg))
}

/// Storage buffers [`matvec_dp4`] binds for `m`: activation records, output and matrix, two per stacked projection
/// (matrix and output), the gated up matrix, and the corrections' `diag(g) B`: one per corrected projection, or one
/// for all where they share a matrix. Callers keep fused products within
/// [`crate::device::DeviceInfo::max_storage_buffers`].
pub fn dp4_bindings(m: &MatvecDp4) -> u32 {
    let corrections = corrections(m);
    let packed = packed(&corrections);
    stack_bindings(m.stacked.len(), corrections.len(), packed) + u32::from(m.gated.is_some())
}

/// Storage buffers of a [`matvec_dp4`] with `stacked` projections below the first and `corrections` corrections,
/// their `diag(g) B` in one `shared` matrix or each in its own: what [`dp4_bindings`] counts, before the matrices
/// are packed.
pub fn stack_bindings(stacked: usize, corrections: usize, shared: bool) -> u32 {
    let bg = if shared { corrections.min(1) } else { corrections };
    (3 + 2 * stacked + bg) as u32
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
    let record = packed_stride(k, m.mid_width);
    plan.check_rows("matvec_dp4", "activation records", m.xq, m.rows, record)?;
    plan.check_rows("matvec_dp4", "output", m.y, m.rows, stride)?;
    let bindings = dp4_bindings(m);
    if bindings > gpu.info.max_storage_buffers {
        return Err(GpuError::shape(
            "matvec_dp4",
            format!("{bindings} storage buffers, over the device's {}", gpu.info.max_storage_buffers),
        ));
    }
    let t = &gpu.tuning;
    let tm = m.tile_rows.max(1);
    let mut defines = Defines::new().set("WG", t.ternary_wg).set("NR", t.ternary_nr).flag("SWAR", t.ternary_swar);
    // Whole rows of k per invocation: prefill's tiles, and one-token products where the tuning says so.
    let tiled = tm > 1 || t.ternary_rows;
    if tiled {
        defines = defines.flag("TILED", true).set("TM", tm);
    }

    // Rows of whole quads of code words load four at once: split over lanes, at least one quad per invocation (fewer
    // leave lanes idle, and a CPU adapter runs a workgroup's lanes in lockstep: the default model's 64 inputs ran
    // slower in quads); whole rows per invocation, with SWAR only. On lavapipe, 16 BitNet 2B4T tokens ran their
    // products 1.6x slower in quads through dot4I8Packed than one word at a time, and SWAR about as fast in quads as
    // dot4I8Packed one word at a time.
    let quads = k.is_multiple_of(64) && if tiled { t.ternary_swar } else { k / 64 >= t.ternary_wg as usize };
    let step_words = if quads { 4 } else { 1 };
    defines = defines.flag("QUADS", quads).set("STEP_WORDS", step_words);
    // Whole rows per invocation: a workgroup's lanes share their tokens' activations.
    if let Some(lanes) = super::broadcast_lanes(gpu, t.ternary_wg).filter(|_| tiled) {
        defines = defines.set("X_BROADCAST", lanes).set("X_SLOTS", (tm * step_words).div_ceil(lanes));
    }
    if !m.stacked.is_empty() || m.gated.is_some() {
        let extra: Vec<&Weight> = m.stacked.iter().map(|s| s.w).chain(m.gated.map(|g| g.up)).collect();
        let alike = |w: &Weight| dp4_ready(gpu, w) && w.cols == k && w.blocks.len() == 1;
        let gate_shaped = m.gated.is_none_or(|g| g.up.rows == n);
        if m.w.blocks.len() != 1
            || m.stacked.len() > 3
            || (m.gated.is_some() && !m.stacked.is_empty())
            || !extra.iter().all(|w| alike(w))
            || !gate_shaped
        {
            return Err(GpuError::shape(
                "matvec_dp4",
                "stacked or gated products take up to four one-block ternary matrices of one width".to_string(),
            ));
        }
        for s in m.stacked {
            plan.check_rows("matvec_dp4", "stacked output", s.y, m.rows, s.w.rows)?;
        }
    }
    if let Some(g) = m.gated {
        defines = defines.flag("GATED", true).set("ACT", super::mlp::act_name(g.act));
    }
    defines = defines
        .flag("STACKED", !m.stacked.is_empty())
        .flag("STACKED3", m.stacked.len() >= 2)
        .flag("STACKED4", m.stacked.len() == 3);
    let corrections = corrections(m);
    let mut hgf_buffers: Vec<&wgpu::Buffer> = Vec::new();
    if !corrections.is_empty() {
        let width = m.mid_width;
        let first = 2 + 3 + 2 * m.stacked.len() + usize::from(m.gated.is_some());
        let packed = packed(&corrections);
        defines = defines.flag("HGF", true).set("MID_WIDTH", width).set("TOKENS", tm);
        if packed {
            defines = defines.set("BG_PACKED", first);
            hgf_buffers.push(&corrections[0].1.bg.blocks[0].buffer);
        }
        for (at, (i, h, rows)) in corrections.iter().enumerate() {
            let bg = h.bg;
            let fits = bg.blocks.len() == 1 && bg.dtype == DType::F32 && h.offset + bg.cols <= width;
            if !fits || h.row0 + rows > bg.rows {
                return Err(GpuError::shape(
                    "matvec_dp4",
                    format!(
                        "HGF up projection [{}, {}] f32 in one block for rows {}..{} of it, values {}.. of {width}",
                        bg.rows,
                        bg.cols,
                        h.row0,
                        h.row0 + rows,
                        h.offset
                    ),
                ));
            }
            defines = defines
                .flag(&format!("HGF{i}"), true)
                .set(&format!("RANK{i}"), bg.cols)
                .set(&format!("OFF{i}"), h.offset)
                .set(&format!("START{i}"), h.row0 * bg.cols);
            defines = match packed {
                true => defines.set(&format!("BG{i}"), "bg"),
                false => {
                    hgf_buffers.push(&bg.blocks[0].buffer);
                    defines.set(&format!("BG{i}"), format!("bg{i}")).set(&format!("BG{i}_BINDING"), first + at)
                }
            };
        }
    }
    // Stacked rows follow the first matrix's: segment boundaries (n_block past the last) and scales (1 unused).
    let rows_of = |i: usize| m.stacked.get(i).map_or(0, |s| s.w.rows);
    let scale_of = |i: usize| m.stacked.get(i).map_or(1.0, |s| s.scale);
    for block in &m.w.blocks {
        let (seg1, seg2) = (block.rows, block.rows + rows_of(0));
        let seg3 = seg2 + rows_of(1);
        let n_block = seg3 + rows_of(2);
        let scale2 = m.gated.map_or(scale_of(0), |g| g.scale);
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
            seg3 as u32,
            f32_word(scale_of(2)),
            record as u32,
        ];
        // Outputs per workgroup: NR, or NR for each invocation when tiled.
        let per_group = t.ternary_nr * if tiled { t.ternary_wg } else { 1 };
        let grid = Grid::Tiles { x: (n_block as u32).div_ceil(per_group), rows: m.rows, rows_per_group: tm };
        let mut buffers = vec![m.xq.into(), m.y.into(), (&block.buffer).into()];
        for s in m.stacked {
            buffers.extend([(&s.w.blocks[0].buffer).into(), s.y.into()]);
        }
        if let Some(g) = m.gated {
            buffers.push((&g.up.blocks[0].buffer).into());
        }
        buffers.extend(hgf_buffers.iter().map(|&b| crate::plan::Binding::from(b)));
        plan.dispatch(gpu, "ternary/matvec_dp4.wgsl", &defines, &params, &buffers, grid)?;
        let mut weight_bytes = block.buffer.size() + m.stacked.iter().map(|s| s.w.blocks[0].buffer.size()).sum::<u64>();
        let mut flops_per_row = 2 * (k * n_block) as u64;
        if let Some(g) = m.gated {
            weight_bytes += g.up.blocks[0].buffer.size();
            flops_per_row += 2 * (k * block.rows) as u64;
        }
        for (i, h, rows) in &corrections {
            // Every row of a stacked or gated projection; `w`'s block's rows.
            let rows = if *i == 1 { block.rows } else { *rows };
            weight_bytes += (h.bg.cols * rows * 4) as u64;
            flops_per_row += 2 * (h.bg.cols * rows) as u64;
        }
        plan.set_work(Work { weight_bytes, flops_per_row, rows: m.rows });
    }
    Ok(())
}
