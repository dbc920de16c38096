// Mixture of experts. ROUTE: per token, scores from router logits (softmax or sigmoid), top-k by score (+ selection
// bias), weights renormalised and scaled; routes[t, j] = (expert, weight). EXPERT: a matrix-vector product through
// the rows of the expert each (token, slot) selected, for stacked expert weights [experts * n, k] held by this
// weight block (experts e0 ..); with COMBINE the slots' results are summed with their route weights per token.
// The prefill form batches tokens per expert: GROUP lists, per expert, the (token, slot) rows that chose it
// (lists [experts, T] of t * top_k + j, counts [experts]); TILED is a register-blocked matmul (TM x TN outputs per
// invocation, common/tile.wgsl) over one expert's listed rows, reading x row t (or t * top_k + j with
// SLOT_INPUT) and writing y [T * top_k, n]; SLOTS sums y's slots with their route weights into out [T, n]
// (ACCUMULATE adds to it).
#include "common/step.wgsl"

#if ROUTE
struct Params {
    n_experts: u32,
    top_k: u32,
    normalize: u32,
    scale: f32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> routes: array<f32>;
#if SELECTION_BIAS
@group(0) @binding(4) var<storage, read> selection_bias: array<f32>;
#endif

const MAX_K: u32 = 32u;

fn score(base: u32, e: u32, max_logit: f32, denom: f32) -> f32 {
#if SIGMOID
    return 1.0 / (1.0 + exp(-logits[base + e]));
#else
    return exp(logits[base + e] - max_logit) / denom;
#endif
}

@compute @workgroup_size({{WG}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= step.n_tokens) {
        return;
    }
    let ne = params.n_experts;
    let base = t * ne;
    var max_logit = -3.0e38;
    for (var e = 0u; e < ne; e++) {
        max_logit = max(max_logit, logits[base + e]);
    }
    var denom = 0.0;
    for (var e = 0u; e < ne; e++) {
        denom += exp(logits[base + e] - max_logit);
    }
    var chosen: array<u32, MAX_K>;
    var weight: array<f32, MAX_K>;
    var total = 0.0;
    for (var j = 0u; j < params.top_k; j++) {
        var best = 0u;
        var best_sel = -3.0e38;
        for (var e = 0u; e < ne; e++) {
            var taken = false;
            for (var i = 0u; i < j; i++) {
                taken = taken || chosen[i] == e;
            }
            var sel = score(base, e, max_logit, denom);
#if SELECTION_BIAS
            sel += selection_bias[e];
#endif
            if (!taken && sel > best_sel) {
                best = e;
                best_sel = sel;
            }
        }
        chosen[j] = best;
        weight[j] = score(base, best, max_logit, denom);
        total += weight[j];
    }
    var norm = params.scale;
    if (params.normalize == 1u) {
        norm = norm / total;
    }
    for (var j = 0u; j < params.top_k; j++) {
        routes[(t * params.top_k + j) * 2u] = f32(chosen[j]);
        routes[(t * params.top_k + j) * 2u + 1u] = weight[j] * norm;
    }
}
#endif

#if EXPERT
struct Params {
    k: u32,            // input width
    n: u32,            // rows per expert
    top_k: u32,
    e0: u32,           // first expert of this weight block
    e_count: u32,      // experts in this weight block
    accumulate: u32,   // COMBINE: add to y instead of storing
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> routes: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#include "common/weights.wgsl"

var<workgroup> partial: array<f32, {{WG}} * {{NR}}>;

// Expert of slot j of token t relative to this block, or e_count when another block holds it.
fn local_expert(t: u32, j: u32) -> u32 {
    let e = u32(routes[(t * params.top_k + j) * 2u]);
    if (e < params.e0 || e >= params.e0 + params.e_count) {
        return params.e_count;
    }
    return e - params.e0;
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.y;
    if (t >= step.n_tokens) {
        return;
    }
    let blocks = (params.n + {{NR}}u - 1u) / {{NR}}u;
    let n0 = (wid.x % blocks) * {{NR}}u;
    var acc: array<f32, {{NR}}>;
#if COMBINE
    for (var j = 0u; j < params.top_k; j++) {
        let xbase = (t * params.top_k + j) * params.k;
        let route_weight = routes[(t * params.top_k + j) * 2u + 1u];
#else
    let j = wid.x / blocks;
    let xbase = t * params.k;
    let route_weight = 1.0;
    {
#endif
        let e = local_expert(t, j);
        if (e < params.e_count) {
            for (var kk = lid; kk < params.k; kk += {{WG}}u) {
                let a = x[xbase + kk] * route_weight;
                for (var r = 0u; r < {{NR}}u; r++) {
                    let n = min(n0 + r, params.n - 1u);
                    acc[r] += a * w_at((e * params.n + n) * params.k + kk);
                }
            }
        }
    }
    for (var r = 0u; r < {{NR}}u; r++) {
        partial[r * {{WG}}u + lid] = acc[r];
    }
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var r = 0u; r < {{NR}}u; r++) {
                partial[r * {{WG}}u + lid] += partial[r * {{WG}}u + lid + s];
            }
        }
        workgroupBarrier();
    }
    // NR may exceed WG: each invocation stores every WG-th output.
    for (var r = lid; r < {{NR}}u && n0 + r < params.n; r += {{WG}}u) {
        let v = partial[r * {{WG}}u];
#if COMBINE
        let o = t * params.n + n0 + r;
        if (params.accumulate == 1u) {
            y[o] = y[o] + v;
        } else {
            y[o] = v;
        }
#else
        if (local_expert(t, j) < params.e_count) {
            y[(t * params.top_k + j) * params.n + n0 + r] = v;
        }
#endif
    }
}
#endif

#if GROUP
struct Params {
    n_experts: u32,
    top_k: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> routes: array<f32>;
@group(0) @binding(3) var<storage, read_write> lists: array<u32>;
@group(0) @binding(4) var<storage, read_write> counts: array<u32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x;
    if (e >= params.n_experts) {
        return;
    }
    var count = 0u;
    for (var r = 0u; r < step.n_tokens * params.top_k; r++) {
        if (u32(routes[r * 2u]) == e) {
            lists[e * step.n_tokens + count] = r;
            count++;
        }
    }
    counts[e] = count;
}
#endif

#if TILED
struct Params {
    k: u32,
    n: u32,            // rows per expert
    top_k: u32,
    e0: u32,           // first expert of this weight block
    x_groups: u32,     // workgroups along x per expert
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> lists: array<u32>;
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
#include "common/weights.wgsl"
#include "common/tile.wgsl"

@compute @workgroup_size({{WG_X}}, {{WG_Y}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(global_invocation_id) gid: vec3<u32>) {
    let e = wid.x / params.x_groups;
    let expert = params.e0 + e;
    let rows = counts[expert];
    let m0 = gid.y * {{TM}}u;
    let n0 = ((wid.x % params.x_groups) * {{WG_X}}u + lid.x) * {{TN}}u;
    if (m0 >= rows || n0 >= params.n) {
        return;
    }
    let list = expert * step.n_tokens;
    var xrow: array<u32, {{TM}}>;
    var wrow: array<u32, {{TN}}>;
    for (var i = 0u; i < {{TM}}u; i++) {
        var r = lists[list + min(m0 + i, rows - 1u)];
#if !SLOT_INPUT
        r = r / params.top_k;
#endif
        xrow[i] = r * params.k;
    }
    for (var j = 0u; j < {{TN}}u; j++) {
        wrow[j] = (e * params.n + min(n0 + j, params.n - 1u)) * params.k;
    }
    var which: array<u32, {{TN}}>;
    let acc = tile_product(xrow, wrow, which, params.k);
    for (var i = 0u; i < {{TM}}u; i++) {
        if (m0 + i >= rows) {
            break;
        }
        let slot = lists[list + m0 + i];
        for (var j = 0u; j < {{TN}}u; j++) {
            if (n0 + j >= params.n) {
                break;
            }
            y[slot * params.n + n0 + j] = acc[i][j];
        }
    }
}
#endif

#if SLOTS
struct Params {
    n: u32,
    top_k: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> slots: array<f32>;
@group(0) @binding(3) var<storage, read> routes: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.x + wid.z * nwg.x) * {{WG}}u + lid;
    if (idx >= step.n_tokens * params.n) {
        return;
    }
    let t = idx / params.n;
    let c = idx % params.n;
    var v = 0.0;
    for (var j = 0u; j < params.top_k; j++) {
        let r = t * params.top_k + j;
        v += routes[r * 2u + 1u] * slots[r * params.n + c];
    }
#if ACCUMULATE
    out[idx] = out[idx] + v;
#else
    out[idx] = v;
#endif
}
#endif
