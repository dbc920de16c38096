// Decode attention: each (token, head) is spread over `params.splits` workgroups (flash-decoding), each over its
// own span of the visible keys (see attention/common.wgsl), at least WG keys long, so that a long context keeps
// a GPU busy however few heads there are. Phase 1 writes scores to the head's scratch row and reduces the max,
// phase 2 exponentiates and sums, phase 3 sums p_j * v_j: V_LANES invocations own a value unit (a quad of
// channels, or a channel) each, and with KEY_GROUPS, V_GROUPS sets of them take every V_GROUPS-th key and add up
// through workgroup memory. One split normalises and leaves the output; with SPLIT each split leaves its max,
// normaliser and unnormalised sums at `params.partial_at` in the row, and attention/combine.wgsl merges them
// and gates them (the scratch then takes the output's binding, 5; otherwise 6).
#include "attention/common.wgsl"

@group(0) @binding({{SCRATCH_BINDING}}) var<storage, read_write> scratch: array<f32>;
var<workgroup> red: array<f32, {{WG}}>;

#if KV_QUADS
alias VUnit = vec4<f32>;
const UNIT: u32 = 4u;
#else
alias VUnit = f32;
const UNIT: u32 = 1u;
#endif
const UNITS: u32 = {{V_UNITS}}u;
const LANES: u32 = {{V_LANES}}u;
const GROUPS: u32 = {{V_GROUPS}}u;
#if KEY_GROUPS
var<workgroup> group_sums: array<VUnit, {{WG}}>;
#endif

fn reduce(v: f32, lid: u32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] += red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// Component e of a value unit.
fn unit_part(u: VUnit, e: u32) -> f32 {
#if KV_QUADS
    return u[e];
#else
    return u;
#endif
}

// Leaves value unit c of (token, head) `group`: its output over normaliser l, or with SPLIT the split's
// unnormalised sums in its partial record at `part`.
fn leave(group: u32, part: u32, c: u32, acc: VUnit, l: f32) {
    for (var e = 0u; e < UNIT; e++) {
#if SPLIT
        scratch[part + 2u + c * UNIT + e] = unit_part(acc, e);
#else
        emit(group * DV + c * UNIT + e, unit_part(acc, e) / l);
#endif
    }
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
#if SPLIT
    let splits = params.splits;
#else
    let splits = 1u;
#endif
    let flat = flat_group(wid, nwg);
    let group = flat / splits;
    let split = flat % splits;
    let t = group / params.n_heads;
    let h = group % params.n_heads;
    if (t >= step.n_tokens) {
        return;
    }
    let p = step.pos0 + t;
    let kvh = kv_head(h);
    let vis = visible(t, kvh, p);
    let span = max((vis.count + splits - 1u) / splits, {{WG}}u);
    let lo = min(split * span, vis.count);
    let hi = min(lo + span, vis.count);
    let row = group * params.scratch_stride;
    let part = row + params.partial_at + split * (DV + 2u);
    var qv: array<f32, D>;
#unroll d HEAD_DIM
    qv[{{d}}] = q[group * D + {{d}}] * params.scale;
#endunroll

    var local_max = -3.0e38;
    for (var v = lo + lid; v < hi; v += {{WG}}u) {
        let j = visible_key(vis, v);
        let s = score(&qv, kv_base(j, kvh), j, p, distance(j, p, vis.first, vis.sinks));
        scratch[row + v] = s;
        local_max = max(local_max, s);
    }
    let m = reduce(local_max, lid, true);
    var local_sum = 0.0;
    for (var v = lo + lid; v < hi; v += {{WG}}u) {
        let e = exp(scratch[row + v] - m);
        scratch[row + v] = e;
        local_sum += e;
    }
    let l = reduce(local_sum, lid, false);
    storageBarrier();
#if KEY_GROUPS
    let c = lid % LANES;
    let first = lo + lid / LANES;
    var acc: VUnit;
    if (lid < LANES * GROUPS) {
        for (var v = first; v < hi; v += GROUPS) {
            acc += scratch[row + v] * v_cache[kv_base(visible_key(vis, v), kvh) / UNIT + c];
        }
    }
    group_sums[lid] = acc;
    workgroupBarrier();
    if (lid < LANES) {
        for (var g = 1u; g < GROUPS; g++) {
            acc += group_sums[lid + g * LANES];
        }
        leave(group, part, c, acc, l);
    }
#else
    for (var c = lid; c < UNITS; c += {{WG}}u) {
        var acc: VUnit;
        for (var v = lo; v < hi; v++) {
            acc += scratch[row + v] * v_cache[kv_base(visible_key(vis, v), kvh) / UNIT + c];
        }
        leave(group, part, c, acc, l);
    }
#endif
#if SPLIT
    if (lid == 0u) {
        scratch[part] = m;
        scratch[part + 1u] = l;
    }
#endif
}
