// Shared pieces of the softmax-attention kernels: parameters, q/K/V/out bindings, the mask (which keys a query
// sees), the q·k score and one step of the online-softmax (flash-attention) recurrence. Q/K heads have D channels;
// V rows are laid out like K rows (D per head) and their first DV channels are the values (DV = D but for MLA,
// whose values are the leading latent channels of its key rows).
//
// Mask: a query at position p sees the sinks [0, min(sinks, first)) and the span [first, last], where first is
// p + 1 - window (or 0) and last is p (causal), the end of a prefix-LM prompt, or the last key present
// (bidirectional). Listed in that order, the keys get visible indices 0, 1, ...: their cache positions. Loops run
// over visible indices only, so masked keys are never visited.
// Pieces switched by defines: ROTATE (StreamingLLM: q and k arrive unrotated and each key is rotated by its
// cache-position distance to the query, from cos/sin tables of ROT_HALF pairs at bindings ROT_COS/ROT_SIN) and
// DUAL_TRIANGLE (the first half of the channels scores keys up to the query, the second half keys from it on) and
// SPARSE (InfLLM-V2: a query sees the key blocks of SPARSE_BLOCK positions listed for its token and kv head at
// bindings SPARSE_LIST/SPARSE_COUNT, SPARSE_MAX entries each; a count of 0 means dense) and ABSORB (hybrid
// memory: keys past the window weigh 1 + s + s²/2, read from the cache while it still holds them and from the
// Taylor state at binding ABSORB_MEMORY for older ones; attention/absorb.wgsl fills it) and OUT_GATE (gated
// attention: each output channel leaves times the sigmoid of the gate at binding OUT_GATE, laid out like out) and
// SPLIT (split decode: no output binding; attention/decode.wgsl leaves partial sums for attention/combine.wgsl) and
// KV_QUADS (D and DV multiples of 4: K/V are bound as quads of channels, and the hot loops read D_QUADS and
// V_QUADS of them a row, 16 bytes at a time; a CPU adapter's load costs about the same at any width, docs/perf.md
// session 8).
// Loops over a head's channels are `#unroll` blocks, so that SwiftShader keeps q and the accumulators in registers.
#include "common/grid.wgsl"
#include "common/step.wgsl"
#include "attention/ring.wgsl"

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    window: u32,          // 0 = unlimited
    scale: f32,
    scratch_stride: u32,  // decode only: scratch floats per (token, head)
    cache_rows: u32,      // rows of the KV cache: sinks in rows 0..sinks, later positions in a ring after them
    sinks: u32,
    future: u32,          // 0 causal, 1 prefix-LM, 2 bidirectional
    prefix: u32,          // prefix-LM: keys below this position are visible to every query
    lambda: f32,          // DIFF: weight of the second map
    splits: u32,          // decode only: workgroups per (token, head)
    partial_at: u32,      // decode only: where a scratch row's partial records start
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> q: array<f32>;
#if KV_QUADS
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<f32>>;
#else
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
#endif
#if !SPLIT
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
#endif
#if ROTATE
@group(0) @binding({{ROT_COS}}) var<storage, read> cos_t: array<f32>;
@group(0) @binding({{ROT_SIN}}) var<storage, read> sin_t: array<f32>;
const HALF: u32 = {{ROT_HALF}}u;
#endif

#if SPARSE
@group(0) @binding({{SPARSE_LIST}}) var<storage, read> sel_blocks: array<u32>;
@group(0) @binding({{SPARSE_COUNT}}) var<storage, read> sel_counts: array<u32>;
const SB: u32 = {{SPARSE_BLOCK}}u;
const MAX_SEL: u32 = {{SPARSE_MAX}}u;
#endif

#if OUT_GATE
@group(0) @binding({{OUT_GATE}}) var<storage, read> out_gate: array<f32>;
#endif

#if !SPLIT
// Writes output channel i (gated with OUT_GATE).
fn emit(i: u32, value: f32) {
#if OUT_GATE
    out[i] = value / (1.0 + exp(-out_gate[i]));
#else
    out[i] = value;
#endif
}
#endif

const D: u32 = {{HEAD_DIM}}u;

// Channel i of the key cache.
fn key_channel(i: u32) -> f32 {
#if KV_QUADS
    return k_cache[i / 4u][i % 4u];
#else
    return k_cache[i];
#endif
}

// Channel i of the value cache.
fn value_channel(i: u32) -> f32 {
#if KV_QUADS
    return v_cache[i / 4u][i % 4u];
#else
    return v_cache[i];
#endif
}
const DV: u32 = {{V_DIM}}u;

#if ABSORB
@group(0) @binding({{ABSORB_MEMORY}}) var<storage, read> memory: array<f32>;
// Taylor features per key head: 1, k_i, k_i², k_i k_j (i < j).
const FEATURES: u32 = 1u + D + D * (D + 1u) / 2u;
#endif

// First key of the span a query at position p sees: 0, or p + 1 - window.
fn first_key(p: u32) -> u32 {
    if (params.window > 0u && p + 1u > params.window) {
        return p + 1u - params.window;
    }
    return 0u;
}

// Last key a query at position p sees.
fn last_key(p: u32) -> u32 {
    let end = step.pos0 + step.n_tokens;
    if (params.future == 2u) {
        return end - 1u;
    }
    if (params.future == 1u && params.prefix > 0u) {
        return max(p, min(params.prefix, end) - 1u);
    }
    return p;
}

// Sinks a query at p sees before its span.
fn sinks_before(p: u32) -> u32 {
    return min(params.sinks, first_key(p));
}

// Position of the key at visible index v of a query whose span starts at `first` after `sb` sinks.
fn key_at(v: u32, first: u32, sb: u32) -> u32 {
    return select(first + v - sb, v, v < sb);
}

// The keys one query sees: `count` of them, the sinks before the span from `first`, or the blocks listed from
// `list` (NO_LIST for none).
struct Visible {
    first: u32,
    sinks: u32,
    count: u32,
    list: u32,
}
const NO_LIST: u32 = 0xffffffffu;

// The keys query token t (position p) of kv head kvh sees.
fn visible(t: u32, kvh: u32, p: u32) -> Visible {
    let first = first_key(p);
    let sb = sinks_before(p);
    var vis = Visible(first, sb, sb + last_key(p) + 1u - first, NO_LIST);
#if SPARSE
    let row = t * params.n_kv_heads + kvh;
    let c = sel_counts[row];
    if (c > 0u) {
        let last = sel_blocks[row * MAX_SEL + c - 1u];
        vis = Visible(0u, 0u, (c - 1u) * SB + p + 1u - last * SB, row * MAX_SEL);
    }
#endif
    return vis;
}

// Position of the key at visible index v.
fn visible_key(vis: Visible, v: u32) -> u32 {
#if SPARSE
    if (vis.list != NO_LIST) {
        return sel_blocks[vis.list + v / SB] * SB + v % SB;
    }
#endif
    return key_at(v, vis.first, vis.sinks);
}

// Offset of position j's key/value row for KV head kvh.
fn kv_base(j: u32, kvh: u32) -> u32 {
    return (ring_row(j, params.sinks, params.cache_rows) * params.n_kv_heads + kvh) * D;
}

// The KV head serving query head h (grouped-query attention).
fn kv_head(h: u32) -> u32 {
    return h / (params.n_heads / params.n_kv_heads);
}

// Score of query registers qv (already scaled) against the key row at kb of position j, for a query at p whose
// cache-position distance to the key is dist.
fn score(qv: ptr<function, array<f32, D>>, kb: u32, j: u32, p: u32, dist: i32) -> f32 {
    var lo = 0u;
    var hi = D;
#if DUAL_TRIANGLE
    if (j < p) {
        hi = D / 2u;
    } else if (j > p) {
        lo = D / 2u;
    }
#endif
    var s = 0.0;
#if ROTATE
    // q(a)·k(b) = q · R(b - a) k: rotate the key back by the distance.
    let row = u32(abs(dist)) * HALF;
    let sign = select(1.0, -1.0, dist < 0);
    for (var i = 0u; i < HALF; i++) {
        let c = cos_t[row + i];
        let sn = sign * sin_t[row + i];
        let a = key_channel(kb + i);
        let b = key_channel(kb + i + HALF);
        if (i >= lo && i < hi) {
            s += (*qv)[i] * (a * c + b * sn);
        }
        if (i + HALF >= lo && i + HALF < hi) {
            s += (*qv)[i + HALF] * (b * c - a * sn);
        }
    }
    lo = max(lo, 2u * HALF);
#endif
#if KV_QUADS
#unroll c D_QUADS
    {
        let kq = k_cache[kb / 4u + {{c}}];
#unroll e 4
        if ({{c}} * 4u + {{e}} >= lo && {{c}} * 4u + {{e}} < hi) {
            s += (*qv)[{{c}} * 4u + {{e}}] * kq[{{e}}];
        }
#endunroll
    }
#endunroll
#else
#unroll d HEAD_DIM
    if ({{d}} >= lo && {{d}} < hi) {
        s += (*qv)[{{d}}] * k_cache[kb + {{d}}];
    }
#endunroll
#endif
    return s;
}

// q·k over one half (0 or 1) of the channels (differential attention's two maps).
fn half_score(qv: ptr<function, array<f32, D>>, kb: u32, half: u32) -> f32 {
    var s = 0.0;
    for (var d = half * D / 2u; d < (half + 1u) * D / 2u; d++) {
        s += (*qv)[d] * key_channel(kb + d);
    }
    return s;
}

// Cache-position distance from a query at p (span from `first`, `sb` sinks before it) to the key at position j.
fn distance(j: u32, p: u32, first: u32, sb: u32) -> i32 {
    if (j < sb) {
        return i32(sb + p - first) - i32(j);
    }
    return i32(p) - i32(j);
}

// Running max and normaliser of an online softmax.
struct Online {
    m: f32,
    l: f32,
}

fn online_start() -> Online {
    return Online(-3.0e38, 0.0);
}

// Folds score s in; returns (factor for the old accumulator, weight of the new value).
fn online_step(st: ptr<function, Online>, s: f32) -> vec2<f32> {
    let m_new = max((*st).m, s);
    let corr = exp((*st).m - m_new);
    let e = exp(s - m_new);
    (*st).l = (*st).l * corr + e;
    (*st).m = m_new;
    return vec2<f32>(corr, e);
}
