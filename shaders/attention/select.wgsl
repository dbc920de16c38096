// InfLLM-V2 block selection (BlockSparse in crates/core/src/spec/mask.rs): one workgroup per (token, kv head).
// 1. Each query head of the GQA group takes the log-sum-exp of its scores against the coarse windows (2 blocks,
//    stride 1 block: the mean of fine windows 4c, 4c+2, 4c+4, 4c+6).
// 2. A block scores the best fine window overlapping it (4b-1 ..= 4b+3), a fine window the group's sum of
//    exp(q·k̄ scale - lse). Initial and local blocks are forced (score BIG).
// 3. topk - init_blocks times, the best unforced block (the earlier one on ties) is marked BIG.
// 4. The marked blocks are listed in ascending order with their count; dense queries get count 0.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    scale: f32,
    block: u32,
    init_blocks: u32,
    local_blocks: u32,
    topk: u32,
    dense_len: u32,
    max_blocks: u32,     // scratch floats per (token, kv head)
    max_selected: u32,   // list entries per (token, kv head)
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> pooled: array<f32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;
@group(0) @binding(5) var<storage, read_write> blocks: array<u32>;
@group(0) @binding(6) var<storage, read_write> counts: array<u32>;

const D: u32 = {{HEAD_DIM}}u;
const MAX_GROUP: u32 = {{MAX_GROUP}}u;
const BIG: f32 = 3.0e38;
const NONE: u32 = 0xffffffffu;
var<workgroup> red_v: array<f32, {{WG}}>;
var<workgroup> red_i: array<u32, {{WG}}>;
var<workgroup> lse: array<f32, MAX_GROUP>;

fn reduce_max(v: f32, lid: u32) -> f32 {
    red_v[lid] = v;
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_v[lid] = max(red_v[lid], red_v[lid + s]);
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red_v[0]);
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
    red_v[lid] = v;
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_v[lid] += red_v[lid + s];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red_v[0]);
}

// Index of the best candidate over the workgroup (highest score, then lowest index; NONE if there is none).
fn reduce_argmax(v: f32, i: u32, lid: u32) -> u32 {
    red_v[lid] = v;
    red_i[lid] = i;
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let ov = red_v[lid + s];
            let oi = red_i[lid + s];
            if (oi != NONE && (red_i[lid] == NONE || ov > red_v[lid] || (ov == red_v[lid] && oi < red_i[lid]))) {
                red_v[lid] = ov;
                red_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red_i[0]);
}

// q·k̄ of query head row qb with the mean of fine windows i, i + 2, i + 4, i + 6 (a coarse window) of kv head kvh.
fn coarse_score(qb: u32, i: u32, kvh: u32) -> f32 {
    let row = params.n_kv_heads * D;
    let base = i * row + kvh * D;
    var s = 0.0;
    for (var d = 0u; d < D; d++) {
        let k = pooled[base + d] + pooled[base + 2u * row + d] + pooled[base + 4u * row + d] + pooled[base + 6u * row + d];
        s += q[qb + d] * k;
    }
    return 0.25 * s;
}

// The group's selection score of fine window i: the sum over its query heads of exp(q·k̄ scale - lse).
fn fine_score(t: u32, kvh: u32, i: u32, group: u32) -> f32 {
    let base = (i * params.n_kv_heads + kvh) * D;
    var total = 0.0;
    for (var g = 0u; g < group; g++) {
        let qb = (t * params.n_heads + kvh * group + g) * D;
        var s = 0.0;
        for (var d = 0u; d < D; d++) {
            s += q[qb + d] * pooled[base + d];
        }
        total += exp(s * params.scale - lse[g]);
    }
    return total;
}

fn forced(b: u32, p: u32) -> bool {
    return b < params.init_blocks || b + params.local_blocks > p / params.block;
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let gi = flat_group(wid, nwg);
    let t = gi / params.n_kv_heads;
    let kvh = gi % params.n_kv_heads;
    if (t >= step.n_tokens) {
        return;
    }
    let p = step.pos0 + t;
    if (p + 1u < params.dense_len) {
        if (lid == 0u) {
            counts[gi] = 0u;
        }
        return;
    }
    let bs = params.block;
    let n_fine = (p + 1u - bs / 2u) / (bs / 4u) + 1u;
    let n_coarse = (p + 1u - 2u * bs) / bs + 1u;
    let n_blocks = p / bs + 1u;
    let group = params.n_heads / params.n_kv_heads;
    for (var g = 0u; g < group; g++) {
        let qb = (t * params.n_heads + kvh * group + g) * D;
        var m = -BIG;
        var l = 0.0;
        for (var c = lid; c < n_coarse; c += {{WG}}u) {
            let s = coarse_score(qb, 4u * c, kvh) * params.scale;
            let m_new = max(m, s);
            l = l * exp(m - m_new) + exp(s - m_new);
            m = m_new;
        }
        let top = reduce_max(m, lid);
        let total = reduce_sum(l * exp(m - top), lid);
        if (lid == 0u) {
            lse[g] = top + log(total);
        }
        workgroupBarrier();
    }
    let sb = gi * params.max_blocks;
    for (var b = lid; b < n_blocks; b += {{WG}}u) {
        var v = -BIG;
        if (forced(b, p)) {
            v = BIG;
        } else {
            for (var i = max(4u * b, 1u) - 1u; i < min(4u * b + 4u, n_fine); i++) {
                v = max(v, fine_score(t, kvh, i, group));
            }
        }
        scores[sb + b] = v;
    }
    storageBarrier();
    let dynamic = max(params.topk, params.init_blocks) - params.init_blocks;
    for (var round = 0u; round < dynamic; round++) {
        var best_v = -BIG;
        var best_i = NONE;
        for (var b = lid; b < n_blocks; b += {{WG}}u) {
            let v = scores[sb + b];
            if (v < BIG && v > -BIG && (best_i == NONE || v > best_v)) {
                best_v = v;
                best_i = b;
            }
        }
        let winner = reduce_argmax(best_v, best_i, lid);
        if (winner == NONE) {
            break;
        }
        if (lid == 0u) {
            scores[sb + winner] = BIG;
        }
        storageBarrier();
    }
    if (lid == 0u) {
        var n = 0u;
        for (var b = 0u; b < n_blocks; b++) {
            if (scores[sb + b] >= BIG) {
                blocks[gi * params.max_selected + n] = b;
                n++;
            }
        }
        counts[gi] = n;
    }
}
