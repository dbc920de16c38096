//! One module per kernel family. Each function checks shapes against the device, then records its
//! dispatches into a [`Plan`](crate::plan::Plan); the matching CPU reference is in `ternlight_core::reference`.

pub mod attention;
pub mod block_sparse;
pub mod conv;
pub mod copy;
pub mod embedding;
pub mod gated_deltanet;
pub mod gla;
pub mod gsa;
pub mod hgrn2;
pub mod linear_attn;
pub mod mamba2;
pub mod matmul;
pub mod mla;
pub mod mlp;
pub mod moe;
pub mod moh;
pub mod norm;
pub mod rat;
pub mod residual;
pub mod rope;
pub mod rwkv7;
pub mod sample;
pub mod ternary;

use crate::buffer::Weight;
use crate::shader::Defines;
use ternlight_core::dtype::DType;

/// Workgroup and tile sizes. The defaults suit CPU adapters (lavapipe, SwiftShader): register blocking,
/// little shared memory. Real GPUs want other values; everything takes them from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Invocations per workgroup of the 1-D kernels (power of two).
    pub wg: u32,
    /// Matmul tile: output rows per invocation.
    pub tm: u32,
    /// Matmul tile: output columns per invocation.
    pub tn: u32,
    /// Matmul workgroup width (invocations along N).
    pub wg_x: u32,
    /// Matmul workgroup height (invocations along M).
    pub wg_y: u32,
    /// Loads that every lane of a subgroup makes alike are made once, a few quads per lane, and shared by
    /// `subgroupBroadcast`, where the device has a fixed subgroup size that divides the workgroup: the tiled
    /// matmul's inputs (with `wg_y` 1, a workgroup's lanes sharing their tile rows; `common/tile.wgsl`), the keys
    /// and values that prefill attention's consecutive queries walk in step (`attention/prefill.wgsl`), and the
    /// input (and fused norm) of one-token products whose invocations take whole rows (`common/matvec_rows.wgsl`).
    /// Those that split K over a workgroup of one subgroup sum by `subgroupAdd` (`common/matvec.wgsl`). CPU
    /// adapters load every lane's address one lane at a time, the same address too; on lavapipe this made a 64-row
    /// bf16 product several times faster (docs/perf.md, session 15), and bf16 decode up to 1.4x (session 16).
    pub broadcast: bool,
    /// Matvec: outputs per workgroup (each invocation stores every `wg`-th where there are more).
    pub nr: u32,
    /// Matvec: outputs each invocation computes over all of K, `wg * rpl` per workgroup (`common/matvec_rows.wgsl`;
    /// needs quads, `vw` a multiple of 4). 0: invocations split K and reduce through workgroup memory, `nr` outputs
    /// per workgroup (`common/matvec.wgsl`).
    pub rpl: u32,
    /// Matvec: the longest weight rows, in stored bytes, that take `rpl` (0: any). Each invocation streams rows of
    /// its own there; on lavapipe that ran slower than splitting K for rows of more than a few kilobytes
    /// (docs/perf.md, sessions 9 and 14), where SwiftShader ran faster at every length measured.
    pub rpl_row_bytes: u32,
    /// Matvec with `rpl`: the stored bytes of weight rows an invocation should cover. Its rows double from `rpl`
    /// (up to 16) while they fit, so that short rows still give each workgroup enough work to amortise its fixed
    /// cost on CPU adapters (docs/perf.md, session 14). 0: `rpl` rows whatever their length.
    pub rpl_bytes: u32,
    /// Matvec: stored weight words each invocation reads per row and step (0: one element at a time). Multiples
    /// of 4 read them, and the input, a 16-byte quad at a time; the tiled matmul then reads quads too.
    pub vw: u32,
    /// Ternary integer matvec: invocations per workgroup.
    pub ternary_wg: u32,
    /// Ternary integer matvec: outputs per workgroup, or with `ternary_rows` (and in prefill) per invocation.
    pub ternary_nr: u32,
    /// Ternary integer matvec: one-token products give each invocation `ternary_nr` whole outputs, as prefill's
    /// tiles do, instead of splitting K between a workgroup's lanes and reducing through workgroup memory. On
    /// lavapipe one `tune` run timed a 2048 x 2048 product 1.7x faster so (docs/perf.md, session 12): short rows
    /// leave each workgroup's barriers costing more than the reduction saves.
    pub ternary_rows: bool,
    /// Ternary integer matvec: sum two 16-bit products per 32-bit multiply (`SWAR` in `ternary/matvec_dp4.wgsl`)
    /// instead of four 8-bit ones per `dot4I8Packed`, which CPU adapters emulate with a dozen scalar operations.
    pub ternary_swar: bool,
    /// Prefill attention: keys staged per workgroup-memory tile (0 = each invocation streams K/V itself).
    pub attn_kv_tile: u32,
    /// Decode attention: the most workgroups each (token, head) is split over, each over its own span of keys
    /// (flash-decoding; see `kernels::attention::DecodeSpread`). 1 keeps one workgroup per (token, head).
    pub attn_splits: u32,
    /// Decode attention: the context length from which a session decodes with keys split (`attn_splits` above 1);
    /// shorter contexts take one workgroup per head and no second pass, which there costs more than it spreads.
    pub attn_split_from: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            wg: 64,
            tm: 4,
            tn: 4,
            wg_x: 8,
            wg_y: 8,
            broadcast: false,
            nr: 4,
            rpl: 0,
            rpl_row_bytes: 0,
            rpl_bytes: 0,
            vw: 1,
            ternary_wg: 64,
            ternary_nr: 4,
            ternary_rows: false,
            ternary_swar: false,
            attn_kv_tile: 0,
            attn_splits: 32,
            attn_split_from: 1024,
        }
    }
}

impl Tuning {
    /// Defaults for a device. CPU adapters (lavapipe, SwiftShader) get workgroups of 8 invocations, one vector of
    /// lanes, which need no barriers across vectors (see docs/perf.md, session 4: 6-7x faster decode in Chromium's
    /// SwiftShader than with 64), matrix-vector weights read a quad of words at a time (session 8: a 2048 x 2048
    /// bf16 product 1.5x faster on lavapipe, 1.1x on SwiftShader) with four whole outputs per invocation (session 9:
    /// SwiftShader's products 1.3-2.7x faster, in the browser too, where the adapter has no name; lavapipe's on rows
    /// of at most 2 KiB, up to 16 per invocation, with 16 outputs per workgroup where rows split K: session 14),
    /// and attention that streams K/V, splitting decode keys four ways from 128 on (session 10: with grouped-query
    /// heads sharing a workgroup there are few workgroups to share between cores), and ternary products that sum
    /// two products per multiply over whole rows per invocation (session 12: BitNet 2B4T's 1.9-2.3x faster on
    /// lavapipe). lavapipe's prefill products take tiles of 16 rows by 8 columns whose subgroups share their input
    /// loads, as prefill attention's queries share their keys' (session 15: 64-row bf16 products 2.2-3.8x faster);
    /// SwiftShader, which the browser cannot give subgroups here, keeps 4 x 4. GPUs share K/V tiles, split decode
    /// keys up to 32 ways from 1024 on and keep `dot4I8Packed`.
    pub fn for_device(info: &crate::device::DeviceInfo) -> Self {
        let cpu = info.device_type == "Cpu";
        let llvmpipe = info.name.contains("llvmpipe");
        let (tm, tn, wg_y) = if llvmpipe { (16, 8, 1) } else { (4, 4, 8) };
        match cpu {
            true => Tuning {
                wg: 8,
                tm,
                tn,
                wg_y,
                broadcast: llvmpipe,
                nr: if llvmpipe { 16 } else { 8 },
                rpl: 4,
                rpl_row_bytes: if llvmpipe { 2048 } else { 0 },
                rpl_bytes: if llvmpipe { 32768 } else { 0 },
                vw: 4,
                ternary_wg: 8,
                ternary_nr: 8,
                ternary_rows: true,
                ternary_swar: true,
                attn_kv_tile: 0,
                attn_splits: 4,
                attn_split_from: 128,
                ..Tuning::default()
            },
            false => Tuning { attn_kv_tile: 32, ..Tuning::default() },
        }
    }
}

/// The subgroup size a kernel of `width` invocations per workgroup shares its alike loads over, where the tuning
/// asks for that ([`Tuning::broadcast`]) and the device's fixed subgroup size divides the width.
pub(crate) fn broadcast_lanes(gpu: &crate::Gpu, width: u32) -> Option<u32> {
    let lanes = gpu.info.subgroup_size;
    (gpu.tuning.broadcast && lanes > 0 && width.is_multiple_of(lanes)).then_some(lanes)
}

/// Tokens per tile of the chunkwise linear-attention passes: every state row (every key of a row of a chunk's square)
/// loaded meets this many tokens' keys and queries.
const TILE_TOKENS: u32 = 8;

/// Defines of a chunkwise pass working in tiles of [`TILE_TOKENS`] tokens with `width` invocations per workgroup:
/// `TT`, and `BROADCAST` where each subgroup's first lanes can load what a tile's tokens need and share it.
pub(crate) fn token_tiles(gpu: &crate::Gpu, defines: Defines, width: u32) -> Defines {
    let broadcast = broadcast_lanes(gpu, width).is_some_and(|lanes| lanes >= TILE_TOKENS);
    defines.set("TT", TILE_TOKENS).flag("BROADCAST", broadcast)
}

/// Defines selecting how weight `w` bound at `binding` is decoded (`common/weights.wgsl`).
pub fn weight_defines(defines: Defines, w: &Weight, binding: u32) -> Defines {
    let (elem, flag) = match w.dtype {
        _ if w.ternary => ("u32", "W_TERNARY"),
        DType::F32 => ("f32", "W_F32"),
        DType::F16 => ("u32", "W_F16"),
        _ => ("u32", "W_BF16"),
    };
    defines.set("W_BINDING", binding).set("W_ELEM", elem).set("W_EPW", w.elements_per_word()).flag(flag, true)
}

/// Defines of `linear/input.wgsl` for heads of `dk` key and `dv` value channels: the input as vec4s where both
/// are multiples of 4, so that every token's row and every head starts on one.
pub(crate) fn quad_input(defines: Defines, dk: usize, dv: usize) -> Defines {
    defines.flag("QUAD_INPUT", dk.is_multiple_of(4) && dv.is_multiple_of(4))
}

/// Defines of `linear/columns.wgsl` and `linear/input.wgsl` for heads of `dk` key and `dv` value channels, and the
/// column blocks per head: vec4 blocks where `dv` is a multiple of 4 and `aligned` (the state starts on a multiple
/// of 4 floats).
pub(crate) fn column_blocks(defines: Defines, dk: usize, dv: usize, aligned: bool) -> (Defines, usize) {
    let vw = if aligned && dv.is_multiple_of(4) { 4 } else { 1 };
    let defines = quad_input(defines, dk, dv)
        .flag("VEC", vw == 4)
        .set("VW", vw)
        .set("COL", if vw == 4 { "vec4<f32>" } else { "f32" });
    (defines, dv / vw)
}

/// Bit pattern of an f32 for a uniform word.
pub(crate) fn f32_word(v: f32) -> u32 {
    v.to_bits()
}
