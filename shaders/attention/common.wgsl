// Shared pieces of the softmax-attention kernels: parameters, q/K/V/out bindings, the sliding-window start
// and one step of the online-softmax (flash-attention) recurrence. Q/K heads have D channels; V rows are laid out
// like K rows (D per head) and their first DV channels are the values (DV = D but for MLA, whose values are the
// leading latent channels of its key rows).
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    window: u32,          // 0 = unlimited
    scale: f32,
    scratch_stride: u32,  // decode only: scratch floats per (token, head)
    cache_rows: u32,      // rows of the KV cache; position j lives in row j % cache_rows (a ring for windows)
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const D: u32 = {{HEAD_DIM}}u;
const DV: u32 = {{V_DIM}}u;

// First key a query at position p sees: 0, or p + 1 - window.
fn first_key(p: u32) -> u32 {
    if (params.window > 0u && p + 1u > params.window) {
        return p + 1u - params.window;
    }
    return 0u;
}

// Offset of position j's key/value row for KV head kvh.
fn kv_base(j: u32, kvh: u32) -> u32 {
    return ((j % params.cache_rows) * params.n_kv_heads + kvh) * D;
}

// The KV head serving query head h (grouped-query attention).
fn kv_head(h: u32) -> u32 {
    return h / (params.n_heads / params.n_kv_heads);
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
