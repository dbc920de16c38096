//! Softmax attention against the KV cache under a composable mask (`attention/prefill.wgsl`,
//! `attention/decode.wgsl`, pieces in `attention/common.wgsl`); reference: `reference::attention::attention_qk_v`.

use super::block_sparse::Selection;
use super::f32_word;
use super::rope::RopeTables;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Binding, Grid, Plan, Rows};
use crate::shader::Defines;
use ternlight_core::spec::{AttentionMask, Future};

/// The widest q/k head the kernels take (private arrays are sized by it; MLA's absorbed heads are 576 wide).
pub const MAX_HEAD_DIM: usize = 1024;

/// One attention call's shape and buffers.
pub struct Attention<'a> {
    /// Queries `[tokens, n_heads, head_dim]`, already rotated.
    pub q: &'a wgpu::Buffer,
    /// Key cache `[cache_rows, n_kv_heads, head_dim]`; position j lives in row `j % cache_rows`.
    pub k_cache: &'a wgpu::Buffer,
    /// Value cache, laid out like `k_cache` (`head_dim` per row and head) with values in the first `v_dim` channels;
    /// MLA passes its key cache, whose rows start with the latent.
    pub v_cache: &'a wgpu::Buffer,
    /// Rows of the caches: the whole context, or a ring holding at least the window plus the forward's tokens.
    pub cache_rows: usize,
    /// Output `[tokens, n_heads * v_dim]`.
    pub out: &'a wgpu::Buffer,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Query/key channels per head.
    pub head_dim: usize,
    /// Value channels per head (`head_dim` but for MLA).
    pub v_dim: usize,
    /// Which keys each query sees.
    pub mask: &'a AttentionMask,
    /// Block-sparse attention: the key blocks each (token, kv head) visits, from
    /// [`block_sparse::select`](super::block_sparse::select).
    pub sparse: Option<&'a Selection<'a>>,
    /// Differential attention with this λ: q and k rows hold two halves scoring two maps, `map1 - λ map2`.
    pub differential: Option<f32>,
    /// StreamingLLM: q and k arrive unrotated and are rotated by cache position with these tables (covering at
    /// least `sinks + window` positions).
    pub rotation: Option<&'a RopeTables>,
    /// Hybrid memory (a mask that absorbs): the Taylor state `[n_kv_heads, features, head_dim + 1]` of the keys
    /// past the window, read here and filled by [`absorb`].
    pub memory: Option<&'a wgpu::Buffer>,
    /// Gated attention (Qwen3-Next, Qwen3.5): the output leaves times the sigmoid of this gate, laid out like it.
    pub output_gate: Option<&'a wgpu::Buffer>,
    /// q·k multiplier.
    pub scale: f32,
}

impl<'a> Attention<'a> {
    /// A call with values as wide as keys and none of the optional pieces (block lists, differential maps,
    /// rotation, memory): `cache` is `(k_cache, v_cache, cache_rows)`, `heads` `(n_heads, n_kv_heads, head_dim)`.
    pub fn new(
        (q, out): (&'a wgpu::Buffer, &'a wgpu::Buffer),
        (k_cache, v_cache, cache_rows): (&'a wgpu::Buffer, &'a wgpu::Buffer, usize),
        (n_heads, n_kv_heads, head_dim): (usize, usize, usize),
        mask: &'a AttentionMask,
        scale: f32,
    ) -> Self {
        Attention {
            q,
            k_cache,
            v_cache,
            cache_rows,
            out,
            n_heads,
            n_kv_heads,
            head_dim,
            v_dim: head_dim,
            mask,
            sparse: None,
            differential: None,
            rotation: None,
            memory: None,
            output_gate: None,
            scale,
        }
    }
}

/// Floats of the Taylor state for `kv_heads` heads of `d` channels (see [`Attention::memory`]).
pub fn memory_len(kv_heads: usize, d: usize) -> usize {
    kv_heads * (1 + d + d * (d + 1) / 2) * (d + 1)
}

fn check(plan: &Plan, a: &Attention) -> Result<()> {
    plan.check_rows("attention", "query", a.q, Rows::Tokens, a.n_heads * a.head_dim)?;
    plan.check_rows("attention", "output", a.out, Rows::Tokens, a.n_heads * a.v_dim)?;
    if let Some(gate) = a.output_gate {
        plan.check_rows("attention", "output gate", gate, Rows::Tokens, a.n_heads * a.v_dim)?;
    }
    if a.head_dim == 0 || a.head_dim > MAX_HEAD_DIM || a.v_dim == 0 || a.v_dim > a.head_dim {
        return Err(GpuError::shape(
            "attention",
            format!("head_dim {} / v_dim {} (0 < v_dim <= head_dim <= {MAX_HEAD_DIM})", a.head_dim, a.v_dim),
        ));
    }
    if a.n_kv_heads == 0 || !a.n_heads.is_multiple_of(a.n_kv_heads) {
        return Err(GpuError::shape("attention", format!("{} query heads over {} kv heads", a.n_heads, a.n_kv_heads)));
    }
    if a.cache_rows <= a.mask.sinks {
        return Err(GpuError::shape("attention", format!("{} cache rows for {} sinks", a.cache_rows, a.mask.sinks)));
    }
    if a.sparse.is_some() && (a.rotation.is_some() || a.mask.future != Future::Causal) {
        return Err(GpuError::shape("attention", "block-sparse attention takes a causal mask without rotation"));
    }
    let per_pair = a.rotation.is_some() || a.sparse.is_some() || a.mask.dual_triangle;
    if a.differential.is_some() && (per_pair || a.v_dim != a.head_dim || !a.head_dim.is_multiple_of(2)) {
        return Err(GpuError::shape(
            "attention",
            "differential attention takes even heads, values as wide as keys, and no rotation, sparsity or Dual Triangle",
        ));
    }
    if let Some(m) = a.memory {
        let fits = m.size() >= 4 * memory_len(a.n_kv_heads, a.head_dim) as u64 && a.v_dim == a.head_dim;
        if !a.mask.absorbs() || per_pair || a.differential.is_some() || !fits {
            return Err(GpuError::shape(
                "attention",
                format!(
                    "hybrid memory needs an absorbing causal window, values as wide as keys, no rotation, sparsity, \
                     Dual Triangle or differential maps, and {} floats of state",
                    memory_len(a.n_kv_heads, a.head_dim)
                ),
            ));
        }
    } else if a.mask.absorbs() {
        return Err(GpuError::shape("attention", "an absorbing window needs its memory"));
    }
    if let Some(r) = a.rotation {
        let reach = a.mask.sinks + a.mask.window.unwrap_or(0);
        if r.positions < reach || r.rotary_dim > a.head_dim || a.mask.future != Future::Causal {
            return Err(GpuError::shape(
                "attention",
                format!("rotation by cache position needs a causal mask and tables of {reach} positions"),
            ));
        }
    }
    Ok(())
}

/// Words of `Params` in `attention/common.wgsl`; the decode kernel alone reads `(scratch_stride, splits,
/// partial_at)` (see [`DecodeSpread`]), which prefill passes as zeros.
fn params(a: &Attention, (scratch_stride, splits, partial_at): (usize, u32, usize)) -> [u32; 12] {
    let m = a.mask;
    let (future, prefix) = match m.future {
        Future::Causal => (0, 0),
        Future::Prefix(n) => (1, n as u32),
        Future::Bidirectional => (2, 0),
    };
    [
        a.n_heads as u32,
        a.n_kv_heads as u32,
        m.window.unwrap_or(0) as u32,
        f32_word(a.scale),
        scratch_stride as u32,
        a.cache_rows as u32,
        m.sinks as u32,
        future,
        prefix,
        f32_word(a.differential.unwrap_or(0.0)),
        splits,
        partial_at as u32,
    ]
}

/// Whether `a`'s key and value rows are whole quads, which the kernels read 16 bytes at a time.
fn kv_quads(a: &Attention) -> bool {
    a.head_dim.is_multiple_of(4) && a.v_dim.is_multiple_of(4)
}

/// The kernel's defines and bindings for `a`: the optional pieces' bindings (block lists, or rotation tables, then
/// the output gate) follow the kernel's `fixed` bindings (counted from 2).
fn specialise<'b>(gpu: &Gpu, a: &'b Attention, mut buffers: Vec<Binding<'b>>) -> (Defines, Vec<Binding<'b>>) {
    let extra = 2 + buffers.len();
    let mut defines = Defines::new().set("WG", gpu.tuning.wg).set("HEAD_DIM", a.head_dim).set("V_DIM", a.v_dim);
    if kv_quads(a) {
        defines = defines.flag("KV_QUADS", true).set("D_QUADS", a.head_dim / 4).set("V_QUADS", a.v_dim / 4);
    }
    if a.mask.dual_triangle {
        defines = defines.set("DUAL_TRIANGLE", 1);
    }
    if a.differential.is_some() {
        defines = defines.set("DIFF", 1);
    }
    if let Some(s) = a.sparse {
        defines = defines.set("SPARSE", 1).set("SPARSE_LIST", extra).set("SPARSE_COUNT", extra + 1);
        defines = defines.set("SPARSE_BLOCK", s.cfg.block).set("SPARSE_MAX", s.cfg.max_selected());
        buffers.extend([s.blocks.into(), s.counts.into()]);
    }
    if let Some(m) = a.memory {
        defines = defines.set("ABSORB", 1).set("ABSORB_MEMORY", extra);
        buffers.push(m.into());
    }
    if let Some(r) = a.rotation {
        let half = r.rotary_dim / 2;
        defines = defines.set("ROTATE", 1).set("ROT_HALF", half).set("ROT_COS", extra).set("ROT_SIN", extra + 1);
        buffers.extend([(&r.cos).into(), (&r.sin).into()]);
    }
    if let Some(gate) = a.output_gate {
        defines = defines.set("OUT_GATE", 2 + buffers.len());
        buffers.push(gate.into());
    }
    (defines, buffers)
}

/// Records attention for a block of queries with the device's tuning (see [`prefill_with`]).
pub fn prefill(gpu: &Gpu, plan: &mut Plan, a: &Attention) -> Result<()> {
    prefill_with(gpu, plan, a, PrefillShape::of(gpu))
}

/// How prefill attention lays a block of queries over the device: K/V tiles of up to `kv_tile` keys staged in
/// workgroup memory and shared by a block of queries of one head (0: each invocation streams K/V itself), and
/// streaming, up to `heads` query heads of one KV head per invocation, which then reads each key and value once for
/// all of them (grouped-query heads see the same keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillShape {
    /// Keys per staged tile (clamped to what the device's workgroup memory holds); 0 streams.
    pub kv_tile: u32,
    /// Streaming: the most query heads per invocation.
    pub heads: u32,
}

/// The most q and value channels a streaming prefill invocation keeps for the heads it serves, all in unrolled
/// code. lavapipe's compile time grows about with their square: 384 took about 5 s, 1024 about 70 s, 2048 about
/// 290 s (docs/perf.md, session 11); 512 is what one 256-wide head, the widest that shares nothing, already takes.
pub const MAX_LANE_CHANNELS: usize = 512;

impl PrefillShape {
    /// The shape of `gpu`'s tuning, streaming invocations serving as many heads as allowed.
    pub fn of(gpu: &Gpu) -> Self {
        PrefillShape { kv_tile: gpu.tuning.attn_kv_tile, heads: MAX_SHARED_HEADS }
    }

    /// One head per streaming invocation, nothing staged.
    pub const STREAMING: PrefillShape = PrefillShape { kv_tile: 0, heads: 1 };

    /// Query heads one streaming invocation of `a` serves: as in [`DecodeSpread::heads_for`], up to `heads` and
    /// within [`MAX_LANE_CHANNELS`]; 1 for block-sparse attention (each query's own key list), differential
    /// attention and hybrid memory (scored per head).
    pub fn heads_for(&self, a: &Attention) -> usize {
        let fits = MAX_LANE_CHANNELS / (a.head_dim + a.v_dim);
        match walks_in_step(a) {
            true => group_heads(a, (self.heads as usize).min(fits)),
            false => 1,
        }
    }
}

/// Records attention for a block of queries, shaped as `shape` says: one invocation per (token, head) or per
/// (token, group of heads), online softmax, or one per (token, head) sharing staged K/V tiles.
pub fn prefill_with(gpu: &Gpu, plan: &mut Plan, a: &Attention, shape: PrefillShape) -> Result<()> {
    check(plan, a)?;
    let wg = gpu.tuning.wg;
    let (defines, buffers) = specialise(gpu, a, vec![a.q.into(), a.k_cache.into(), a.v_cache.into(), a.out.into()]);
    let fits = gpu.info.max_workgroup_storage / (4 * (a.head_dim + a.v_dim) as u32);
    let tile = if keys_alike(a) { shape.kv_tile.min(fits) } else { 0 };
    let heads = shape.heads_for(a);
    // A block of queries walking its keys in step loads each key once per subgroup where the tuning asks for that.
    let in_lanes = a.head_dim + a.v_dim <= MAX_LANE_CHANNELS;
    let lanes = super::broadcast_lanes(gpu, wg).filter(|_| in_lanes && walks_in_step(a));
    // Staged tiles and head groups take a block of consecutive tokens per workgroup (of one head, or one group).
    let tokens = |x: usize| Grid::Tiles { x: x as u32, rows: Rows::Tokens, rows_per_group: wg };
    let (defines, grid) = match (tile, heads, lanes) {
        (0, 1, None) => (defines, Grid::Flat { rows: Rows::Tokens, per_row: a.n_heads as u32, per_group: wg }),
        (0, _, lanes) => {
            let defines = defines.set("HEADS", heads).flag("HEAD_GROUP", true);
            let defines = match lanes {
                Some(l) => {
                    let (k_slots, v_slots) = ((a.head_dim as u32 / 4).div_ceil(l), (a.v_dim as u32 / 4).div_ceil(l));
                    defines.set("KV_BROADCAST", l).set("K_SLOTS", k_slots).set("V_SLOTS", v_slots)
                }
                None => defines,
            };
            (defines, tokens(a.n_heads / heads))
        }
        _ => (defines.set("KV_TILE", tile), tokens(a.n_heads)),
    };
    plan.dispatch(gpu, "attention/prefill.wgsl", &defines, &params(a, (0, 0, 0)), &buffers, grid)
}

/// Whether every query of `a` reads keys alike, so that a block of them can share staged tiles or loads: no
/// rotation by cache position or Dual Triangle, and no per-query key lists (block-sparse), second maps
/// (differential) or memory (hybrid memory).
fn keys_alike(a: &Attention) -> bool {
    a.rotation.is_none()
        && !a.mask.dual_triangle
        && a.sparse.is_none()
        && a.differential.is_none()
        && a.memory.is_none()
}

/// Whether a block of `a`'s queries can walk their keys in step, each key read once for all of them: keys alike
/// ([`keys_alike`]) in whole quads.
fn walks_in_step(a: &Attention) -> bool {
    kv_quads(a) && keys_alike(a)
}

/// The most query heads, up to `limit`, that divide a KV head's group of `a` and can share its key and value
/// loads (where it [`walks_in_step`]; decode's grouping asks without that).
fn group_heads(a: &Attention, limit: usize) -> usize {
    let per_kv = a.n_heads / a.n_kv_heads;
    let limit = limit.min(MAX_SHARED_HEADS as usize).min(per_kv);
    match kv_quads(a) && a.rotation.is_none() && !a.mask.dual_triangle {
        true => (1..=limit).rev().find(|h| per_kv.is_multiple_of(*h)).unwrap_or(1),
        false => 1,
    }
}

/// How decode attention spreads each (token, head) over the device: workgroups of `wg` invocations, each serving
/// up to `heads` query heads of one KV head (grouped-query heads then share each key and value load), and up to
/// `splits` workgroups per head, each over its own span of at least `wg` keys, whose partial softmax sums a second
/// pass merges (flash-decoding: at 16K keys one workgroup per head would leave most of a GPU idle). One split takes
/// one workgroup per head and no second pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeSpread {
    /// Invocations per workgroup (power of two).
    pub wg: u32,
    /// The most workgroups per (token, head).
    pub splits: u32,
    /// The most query heads per workgroup.
    pub heads: u32,
}

/// The most query heads a decode workgroup serves (their accumulators are private to each invocation).
pub const MAX_SHARED_HEADS: u32 = 8;

impl DecodeSpread {
    /// The spread of `gpu`'s tuning, sharing loads between as many heads as allowed.
    pub fn of(gpu: &Gpu) -> Self {
        DecodeSpread { wg: gpu.tuning.wg, splits: gpu.tuning.attn_splits.max(1), heads: MAX_SHARED_HEADS }
    }

    /// Splits taken over at most `max_keys` keys: more would always be empty, since a span holds `wg` keys or more.
    pub fn splits_for(&self, max_keys: usize) -> u32 {
        self.splits.clamp(1, max_keys.div_ceil(self.wg as usize).max(1) as u32)
    }

    /// The spread without splits: one workgroup per head, no second pass.
    pub fn unsplit(self) -> Self {
        DecodeSpread { splits: 1, ..self }
    }

    /// Query heads one workgroup of `a` serves: the most, up to `heads`, that divide a KV head's group, where keys
    /// are whole quads scored the same for every head (no rotation by cache position or Dual Triangle) and the
    /// queries fit half of `gpu`'s workgroup memory; otherwise 1.
    pub fn heads_for(&self, gpu: &Gpu, a: &Attention) -> usize {
        let fits = (gpu.info.max_workgroup_storage as usize / 2) / (4 * a.head_dim);
        group_heads(a, (self.heads as usize).min(fits))
    }

    /// Scratch floats per (token, head) for values `v_dim` wide over at most `max_keys` keys: the scores, then
    /// `v_dim + 2` floats per split (its max, normaliser and sums) where there are several.
    pub fn scratch_row(&self, v_dim: usize, max_keys: usize) -> usize {
        match self.splits_for(max_keys) {
            1 => max_keys,
            n => max_keys + n as usize * (v_dim + 2),
        }
    }
}

/// Records attention for few queries with long contexts with the device's tuning (see [`decode_with`]).
pub fn decode(gpu: &Gpu, plan: &mut Plan, a: &Attention, scratch: &wgpu::Buffer, max_keys: usize) -> Result<()> {
    decode_with(gpu, plan, a, scratch, max_keys, DecodeSpread::of(gpu))
}

/// Records attention for few queries with long contexts, spread as `spread` says (differential attention and
/// hybrid memory: the streaming prefill kernel). `scratch` holds `tokens * n_heads * spread.scratch_row(v_dim,
/// max_keys)` f32.
pub fn decode_with(
    gpu: &Gpu,
    plan: &mut Plan,
    a: &Attention,
    scratch: &wgpu::Buffer,
    max_keys: usize,
    spread: DecodeSpread,
) -> Result<()> {
    check(plan, a)?;
    // Differential attention keeps its two maps in registers, and the hybrid memory's recall is per query: the
    // streaming prefill kernel serves their decode too.
    if a.differential.is_some() || a.memory.is_some() {
        return prefill_with(gpu, plan, a, PrefillShape::STREAMING);
    }
    let (wg, splits, stride) = (spread.wg, spread.splits_for(max_keys), spread.scratch_row(a.v_dim, max_keys));
    if !wg.is_power_of_two() || scratch.size() < 4 * (a.n_heads * stride) as u64 {
        return Err(GpuError::shape(
            "attention decode",
            format!(
                "workgroups of {wg} and {} bytes of scratch for {} heads of {stride} floats",
                scratch.size(),
                a.n_heads
            ),
        ));
    }
    // Split, the kernel leaves partial sums in the scratch and the second pass writes (and gates) the output.
    let mut buffers = vec![a.q.into(), a.k_cache.into(), a.v_cache.into()];
    buffers.extend((splits == 1).then_some(a.out.into()));
    buffers.push(scratch.into());
    let scratch_binding = 1 + buffers.len();
    let kernel_call = Attention { output_gate: a.output_gate.filter(|_| splits == 1), ..*a };
    let (defines, buffers) = specialise(gpu, &kernel_call, buffers);
    let heads = spread.heads_for(gpu, a);
    let units = if kv_quads(a) { a.v_dim / 4 } else { a.v_dim };
    let lanes = units.min(wg as usize);
    let groups = wg as usize / lanes;
    let defines = defines
        .set("WG", wg)
        .set("V_UNITS", units)
        .set("V_LANES", lanes)
        .set("V_GROUPS", groups)
        .flag("KEY_GROUPS", groups > 1)
        .set("SCRATCH_BINDING", scratch_binding)
        .set("HEADS", heads)
        .flag("HEAD_GROUP", heads > 1)
        .flag("SPLIT", splits > 1);
    let words = params(a, (stride, splits, max_keys));
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: (a.n_heads / heads) as u32 * splits, per_group: 1 };
    plan.dispatch(gpu, "attention/decode.wgsl", &defines, &words, &buffers, grid)?;
    if splits == 1 {
        return Ok(());
    }
    let mut defines = Defines::new().set("WG", wg);
    let mut buffers: Vec<Binding> = vec![scratch.into(), a.out.into()];
    if let Some(gate) = a.output_gate {
        defines = defines.set("OUT_GATE", 4);
        buffers.push(gate.into());
    }
    let words = [a.n_heads, a.v_dim, splits as usize, stride, max_keys].map(|v| v as u32);
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: (a.n_heads * a.v_dim) as u32, per_group: wg };
    plan.dispatch(gpu, "attention/combine.wgsl", &defines, &words, &buffers, grid)
}

/// Records the hybrid memory's update after a forward's attention (see `attention/absorb.wgsl`): the keys leaving
/// the window before the next forward go into the Taylor state. Nothing for attention without a memory.
pub fn absorb(gpu: &Gpu, plan: &mut Plan, a: &Attention) -> Result<()> {
    let Some(memory) = a.memory else { return Ok(()) };
    check(plan, a)?;
    let wg = gpu.tuning.wg;
    let params = [a.n_kv_heads, a.cache_rows, a.mask.sinks, a.mask.window.unwrap_or(0)].map(|v| v as u32);
    let defines = Defines::new().set("WG", wg).set("HEAD_DIM", a.head_dim);
    let buffers = [a.k_cache.into(), a.v_cache.into(), memory.into()];
    let groups = memory_len(a.n_kv_heads, a.head_dim).div_ceil(wg as usize) as u32;
    plan.dispatch(gpu, "attention/absorb.wgsl", &defines, &params, &buffers, Grid::Fixed(groups))
}

/// Records the router's measurement (see `attention/entropy.wgsl`): for the forward's last token, each query head's
/// attention entropy over every key of a whole-context cache, normalised by `ln(keys)`, into
/// `entropies[offset..offset + n_heads]`.
pub fn entropy(gpu: &Gpu, plan: &mut Plan, a: &Attention, entropies: &wgpu::Buffer, offset: usize) -> Result<()> {
    check(plan, a)?;
    if a.mask.window.is_some() || a.mask.future != Future::Causal || a.rotation.is_some() {
        return Err(GpuError::shape("attention entropy", "a causal whole-context layer without rotation"));
    }
    if entropies.size() < 4 * (offset + a.n_heads) as u64 {
        return Err(GpuError::shape("attention entropy", format!("{} floats from {offset}", a.n_heads)));
    }
    let wg = gpu.tuning.wg;
    let params = [a.n_heads as u32, a.n_kv_heads as u32, f32_word(a.scale), offset as u32];
    let defines = Defines::new().set("WG", wg).set("HEAD_DIM", a.head_dim);
    let groups = a.n_heads.div_ceil(wg as usize) as u32;
    plan.dispatch(
        gpu,
        "attention/entropy.wgsl",
        &defines,
        &params,
        &[a.q.into(), a.k_cache.into(), entropies.into()],
        Grid::Fixed(groups),
    )
}
