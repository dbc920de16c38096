//! Linear layers `y (+)= x W^T (+ b)` (`common/matmul.wgsl`, `common/matvec.wgsl`); reference:
//! `reference::linear::linear`. Weights stay in their stored dtype; accumulation is f32.

use super::weight_defines;
use crate::buffer::Weight;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows, Work};
use crate::shader::Defines;
use ternlight_core::spec::Activation;

/// Which kernel shape to use: tiles for many rows (prefill), a reduction per output for one row (decode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulShape {
    /// Register-blocked tiles; best when rows ≫ 1.
    Tiled,
    /// Cooperative matrix-vector; best for a single row.
    Vector,
}

/// Whether the result overwrites `y` or is added to it (a fused residual add), or pairs of outputs gate each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `y = x W^T + b`.
    Store,
    /// `y += x W^T + b`.
    Accumulate,
    /// A gated MLP's two products in one dispatch with no separate activation: `w` is the gate projection and
    /// [`Linear::up`] the up projection, and `y = act(x W^T) * (x Up^T)` (both scaled by `scale`). No bias.
    Gated(Activation),
}

/// An RMSNorm the linear layer applies to its input first (decode's matrix-vector shape only): `x` is then the
/// un-normalised stream, and the norm costs no dispatch of its own.
#[derive(Clone, Copy)]
pub struct InputNorm<'a> {
    /// Norm weight `[k]`, f32.
    pub weight: &'a wgpu::Buffer,
    /// Added to the mean square.
    pub eps: f32,
    /// The weight is stored as `w - 1` (Gemma: the norm multiplies by `1 + w`).
    pub unit_offset: bool,
}

/// One linear layer to record.
pub struct Linear<'a> {
    /// Input `[rows, w.cols]`.
    pub x: &'a wgpu::Buffer,
    /// The weight matrix `[n, k]`.
    pub w: &'a Weight,
    /// Optional f32 bias `[n]`.
    pub bias: Option<&'a wgpu::Buffer>,
    /// Multiplier of `x W^T`, applied before the bias (1 for a plain layer).
    pub scale: f32,
    /// Output `[rows, y_stride]`; this layer writes columns `y_offset..y_offset + n`.
    pub y: &'a wgpu::Buffer,
    /// First output column (to write several projections side by side), usually 0.
    pub y_offset: usize,
    /// Output row stride in columns; 0 means `n`.
    pub y_stride: usize,
    /// Which row count applies.
    pub rows: Rows,
    /// Store or accumulate.
    pub epilogue: Epilogue,
    /// Kernel shape.
    pub shape: MatmulShape,
    /// An RMSNorm of `x` to apply first (with [`MatmulShape::Vector`] only).
    pub input_norm: Option<InputNorm<'a>>,
    /// With [`Epilogue::Gated`]: the up projection, shaped and split into blocks like `w` (the gate).
    pub up: Option<&'a Weight>,
    /// Up to two more matrices whose rows follow `w`'s (same dtype and width, one block each, no bias): the layer is
    /// their row-wise stack, its outputs side by side, in one dispatch (several projections of one input).
    pub stacked: &'a [&'a Weight],
    /// Each stacked matrix's own output `[rows, its rows]` instead of columns of `y` (whose rows are then `w`'s
    /// alone; `y_offset` and `y_stride` stay 0): a layer's q, k and v in one dispatch. Empty, or one per stacked
    /// matrix.
    pub stacked_outputs: &'a [&'a wgpu::Buffer],
}

impl<'a> Linear<'a> {
    /// `y = x W^T` over the forward's tokens with nothing else: no bias, scale 1, whole rows, no fused extras (set
    /// fields over it for the rest).
    pub fn new(x: &'a wgpu::Buffer, w: &'a Weight, y: &'a wgpu::Buffer, shape: MatmulShape) -> Self {
        Linear {
            x,
            w,
            bias: None,
            scale: 1.0,
            y,
            y_offset: 0,
            y_stride: 0,
            rows: Rows::Tokens,
            epilogue: Epilogue::Store,
            shape,
            input_norm: None,
            up: None,
            stacked: &[],
            stacked_outputs: &[],
        }
    }
}

/// Stored words of `w` a matrix-vector step reads per row: the tuning's, but one for ternary words, which hold 16
/// elements (more ran slower on lavapipe, docs/perf.md session 8).
fn words_per_step(t: &super::Tuning, w: &Weight) -> u32 {
    match w.elements_per_word() > 2 {
        true => t.vw.min(1),
        false => t.vw,
    }
}

/// The most outputs an invocation of the row-per-invocation kernel computes.
const MAX_ROWS_PER_LANE: u32 = 16;

/// Outputs per invocation of the row-per-invocation matrix-vector kernel (`common/matvec_rows.wgsl`) for `l`, or 0
/// where the tuning or `l` rules that kernel out (see [`lane_rows`]).
fn rows_per_lane(t: &super::Tuning, l: &Linear) -> u32 {
    let row_bytes = l.w.cols.div_ceil(l.w.elements_per_word()) * 4;
    let starts: Vec<usize> =
        l.stacked.iter().scan(l.w.rows, |row, w| Some(std::mem::replace(row, *row + w.rows))).collect();
    lane_rows(t, row_bytes, &starts)
}

/// Outputs per invocation for weight rows of `row_bytes` stored bytes whose stack's later matrices start at rows
/// `starts` (0: split K instead): the tuning's `rpl`, doubled while an invocation's rows stay within `rpl_bytes`,
/// then halved (not below `rpl`) until every start falls on a workgroup's first row.
fn lane_rows(t: &super::Tuning, row_bytes: usize, starts: &[usize]) -> u32 {
    if t.rpl == 0 || (t.rpl_row_bytes > 0 && row_bytes > t.rpl_row_bytes as usize) {
        return 0;
    }
    let mut rpl = t.rpl;
    while 2 * rpl <= MAX_ROWS_PER_LANE && 2 * rpl as usize * row_bytes <= t.rpl_bytes as usize {
        rpl *= 2;
    }
    while rpl >= t.rpl {
        if starts.iter().all(|row| row.is_multiple_of((t.wg * rpl) as usize)) {
            return rpl;
        }
        rpl /= 2;
    }
    0
}

/// Defines of a matrix-vector kernel reading `vw` words (a multiple of 4) of `chunk` elements per step in quads.
fn quad_defines(base: Defines, chunk: u32, vw: u32) -> Defines {
    base.set("CHUNK", chunk).set("VW", vw).flag("W_QUADS", true).set("QUADS", vw / 4).set("X_QUADS", chunk / 4)
}

/// Records the linear layer, one dispatch per row block of the weight.
pub fn linear(gpu: &Gpu, plan: &mut Plan, l: &Linear) -> Result<()> {
    let k = l.w.cols;
    let n = l.w.rows + l.stacked.iter().map(|w| w.rows).sum::<usize>();
    if n == 0 || k == 0 {
        return Err(GpuError::shape("linear", format!("empty weight [{n}, {k}]")));
    }
    if !l.stacked.is_empty() {
        let unlike = |w: &Weight| (w.cols, w.dtype, w.ternary) != (k, l.w.dtype, l.w.ternary) || w.blocks.len() != 1;
        let stackable = l.stacked.len() <= 2 && l.w.blocks.len() == 1 && !l.stacked.iter().any(|w| unlike(w));
        if !stackable || l.bias.is_some() || l.up.is_some() {
            return Err(GpuError::shape("linear", "a stack is up to three one-block matrices alike, without bias"));
        }
    }
    let t = &gpu.tuning;
    let gated = match l.epilogue {
        Epilogue::Gated(act) => Some(act),
        _ => None,
    };
    if gated.is_some() != l.up.is_some() {
        return Err(GpuError::shape("linear", "a gated epilogue and an up projection come together"));
    }
    if let Some(up) = l.up {
        if !up.same_layout(l.w) {
            return Err(GpuError::shape(
                "linear",
                format!("up projection [{}, {}] unlike the gate [{}, {k}]", up.rows, up.cols, l.w.rows),
            ));
        }
        if l.bias.is_some() {
            return Err(GpuError::shape("linear", "a gated epilogue takes no bias"));
        }
    }
    let separate = !l.stacked_outputs.is_empty();
    if separate && (l.stacked_outputs.len() != l.stacked.len() || l.y_offset != 0 || l.y_stride != 0) {
        return Err(GpuError::shape("linear", "separate outputs: one per stacked matrix, and none of y's columns"));
    }
    if separate && l.epilogue != Epilogue::Store {
        return Err(GpuError::shape("linear", "separate outputs are stored, not accumulated"));
    }
    if l.y_stride != 0 && l.y_offset + n > l.y_stride {
        return Err(GpuError::shape(
            "linear",
            format!("columns {}..{} exceed the row stride {}", l.y_offset, l.y_offset + n, l.y_stride),
        ));
    }
    let stride = if l.y_stride == 0 { n } else { l.y_stride };
    if l.input_norm.is_some() && l.shape != MatmulShape::Vector {
        return Err(GpuError::shape("linear", "a fused input norm needs the matrix-vector shape"));
    }
    plan.check_rows("linear", "input", l.x, l.rows, k)?;
    match separate {
        false => plan.check_rows("linear", "output", l.y, l.rows, stride)?,
        true => {
            plan.check_rows("linear", "output", l.y, l.rows, l.w.rows)?;
            for (y, w) in l.stacked_outputs.iter().zip(l.stacked) {
                plan.check_rows("linear", "stacked output", y, l.rows, w.rows)?;
            }
        }
    }
    let base = Defines::new().flag("BIAS", l.bias.is_some()).flag("ACCUMULATE", l.epilogue == Epilogue::Accumulate);
    let base = match gated {
        Some(act) => base.flag("GATED", true).set("ACT", super::mlp::act_name(act)),
        None => base,
    };
    // Matrices bound beside w: the up projection, or the rest of a stack.
    let beside = l.up.map_or(l.stacked.len(), |_| 1) as u32;
    let base = match beside {
        0 => base,
        1 => base.set("W2_BINDING", 5),
        _ => base.set("W2_BINDING", 5).set("W3_BINDING", 6),
    };
    // The kernel, its defines, and the outputs (columns) and input rows each workgroup covers.
    let (shader, defines, outputs_per_group, rows_per_group) = match l.shape {
        MatmulShape::Tiled => {
            let base = base.set("WG_X", t.wg_x).set("WG_Y", t.wg_y).set("TM", t.tm).set("TN", t.tn);
            // Quads where the matrix-vector product of this weight takes them (never ternary: a quad would unroll
            // 64 elements per row of the tile).
            let vw = words_per_step(t, l.w);
            let quads = vw > 0 && vw.is_multiple_of(4) && k.is_multiple_of(4 * l.w.elements_per_word());
            // A workgroup one tile high shares its tile rows' inputs.
            let base = match super::broadcast_lanes(gpu, t.wg_x).filter(|_| quads && t.wg_y == 1) {
                // Each lane loads its share of the tile rows' input quads for a step: TM rows of W_EPW each.
                Some(lanes) => {
                    let slots = (t.tm * l.w.elements_per_word() as u32).div_ceil(lanes);
                    base.set("X_BROADCAST", lanes).set("X_SLOTS", slots)
                }
                None => base,
            };
            ("common/matmul.wgsl", base.flag("W_QUADS", quads), t.wg_x * t.tn, t.wg_y * t.tm)
        }
        MatmulShape::Vector => {
            let vw = words_per_step(t, l.w);
            let chunk = vw * l.w.elements_per_word() as u32;
            let whole = chunk > 0 && k.is_multiple_of(chunk as usize);
            let base = base.set("WG", t.wg);
            let rpl = rows_per_lane(t, l);
            // Split K reduces by subgroupAdd where the workgroup is one subgroup.
            let split = base.clone().flag("SG_REDUCE", super::broadcast_lanes(gpu, t.wg) == Some(t.wg));
            let (shader, defines, outputs) = match whole {
                // Whole quads of words per step, loaded 16 bytes at a time, each invocation its own rows.
                true if vw.is_multiple_of(4) && rpl > 0 => {
                    let outputs = t.wg * rpl;
                    let defines = quad_defines(base, chunk, vw).set("RPL", rpl).set("MATRICES", 1 + l.stacked.len());
                    // Every lane reads the same input: a subgroup loads a quad per lane and shares them.
                    let defines = match super::broadcast_lanes(gpu, t.wg).filter(|lanes| lanes % (chunk / 4) == 0) {
                        Some(lanes) => defines.set("X_BROADCAST", lanes).set("BROADCAST_STEPS", lanes / (chunk / 4)),
                        None => defines,
                    };
                    ("common/matvec_rows.wgsl", defines, outputs)
                }
                true if vw.is_multiple_of(4) => ("common/matvec.wgsl", quad_defines(split, chunk, vw), t.nr),
                true => ("common/matvec.wgsl", split.set("CHUNK", chunk).set("VW", vw), t.nr),
                false => ("common/matvec.wgsl", split, t.nr),
            };
            (shader, defines.set("NR", outputs), outputs, 1)
        }
    };
    let norm_binding = 5 + u32::from(l.bias.is_some()) + beside;
    let defines = match l.input_norm {
        Some(_) => defines.flag("NORM_IN", true).set("NORM_BINDING", norm_binding),
        None => defines,
    };
    // Separate outputs follow every other binding.
    let first_output = norm_binding + u32::from(l.input_norm.is_some());
    let defines = match l.stacked_outputs.len() {
        0 => defines,
        1 => defines.flag("SPLIT_OUT", true).set("Y2_BINDING", first_output),
        _ => defines.flag("SPLIT_OUT", true).set("Y2_BINDING", first_output).set("Y3_BINDING", first_output + 1),
    };
    let (norm_eps, norm_offset) = l.input_norm.map_or((0.0, 0.0), |n| (n.eps, f32::from(u8::from(n.unit_offset))));
    let defines = weight_defines(defines, l.w, 4);
    for (i, block) in l.w.blocks.iter().enumerate() {
        // A stack is one block: w's rows, then each stacked matrix's.
        let block_rows = block.rows + l.stacked.iter().map(|w| w.rows).sum::<usize>();
        let seg1 = if l.stacked.is_empty() { block_rows } else { block.rows };
        let seg2 = match l.stacked {
            [first, _] => block.rows + first.rows,
            _ => block_rows,
        };
        let params = [
            k as u32,
            block_rows as u32,
            (l.y_offset + block.row0) as u32,
            stride as u32,
            l.rows.selector(),
            block.row0 as u32,
            super::f32_word(l.scale),
            super::f32_word(norm_eps),
            super::f32_word(norm_offset),
            seg1 as u32,
            seg2 as u32,
        ];
        let grid = Grid::Tiles { x: (block_rows as u32).div_ceil(outputs_per_group), rows: l.rows, rows_per_group };
        let mut matrices = vec![&block.buffer];
        matrices.extend(l.up.map(|up| &up.blocks[i].buffer));
        matrices.extend(l.stacked.iter().map(|w| &w.blocks[0].buffer));
        let mut buffers = vec![l.x.into(), l.y.into()];
        buffers.extend(matrices.iter().map(|&b| b.into()));
        if let Some(b) = l.bias {
            buffers.push(b.into());
        }
        if let Some(n) = &l.input_norm {
            buffers.push(n.weight.into());
        }
        buffers.extend(l.stacked_outputs.iter().map(|&y| y.into()));
        plan.dispatch(gpu, shader, &defines, &params, &buffers, grid)?;
        let product_rows = block_rows + l.up.map_or(0, |_| block.rows);
        plan.set_work(Work {
            weight_bytes: matrices.iter().map(|b| b.size()).sum(),
            flops_per_row: 2 * (k * product_rows) as u64,
            rows: l.rows,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Tuning;

    #[test]
    fn short_rows_give_each_invocation_more_of_them_as_far_as_a_stack_allows() {
        let t = Tuning { wg: 8, rpl: 4, rpl_row_bytes: 2048, rpl_bytes: 32768, ..Tuning::default() };
        // 1024 bf16 inputs: 16 rows of 2 KiB each; 576: 16 (32 would exceed 32 KiB); rows over the cap split K.
        assert_eq!(lane_rows(&t, 2048, &[]), 16);
        assert_eq!(lane_rows(&t, 1152, &[]), 16);
        assert_eq!(lane_rows(&t, 4096, &[]), 0);
        // A stack whose second matrix starts at row 576 (SmolLM2's q, k, v) takes 8 rows (64 per workgroup); one
        // starting at 16 fits no workgroup of 4 rows per invocation.
        assert_eq!(lane_rows(&t, 1152, &[576, 768]), 8);
        assert_eq!(lane_rows(&t, 1152, &[16]), 0);
        // No byte budget: the tuning's rows; none: split K.
        assert_eq!(lane_rows(&Tuning { rpl_bytes: 0, ..t.clone() }, 64, &[]), 4);
        assert_eq!(lane_rows(&Tuning { rpl: 0, ..t }, 64, &[]), 0);
    }
}
