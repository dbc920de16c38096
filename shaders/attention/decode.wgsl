// Decode attention: each workgroup serves HEADS query heads of one KV head (with HEAD_GROUP, grouped-query heads
// share every key and value load: K/V quads are read once and dotted with each head's query from workgroup memory)
// over one of `params.splits` spans of the visible keys (flash-decoding; see attention/common.wgsl), at least WG
// keys long, so that a long context keeps a GPU busy however few heads there are. Phase 1 writes scores to each
// head's scratch row and reduces the max, phase 2 exponentiates and sums, phase 3 sums p_j * v_j: V_LANES
// invocations own a value unit (a quad of channels, or a channel) each, and with KEY_GROUPS, V_GROUPS sets of them
// take every V_GROUPS-th key and add up through workgroup memory. One split normalises and leaves the output; with
// SPLIT each split leaves its max, normaliser and unnormalised sums at `params.partial_at` in the head's row, and
// attention/combine.wgsl merges and gates them (the scratch then takes the output's binding, 5; otherwise 6).
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
const HEADS: u32 = {{HEADS}}u;
#if KEY_GROUPS
var<workgroup> group_sums: array<VUnit, {{WG}}>;
#endif
#if HEAD_GROUP
const DQ: u32 = {{D_QUADS}}u;
// The heads' queries, scaled, a quad of channels per entry.
var<workgroup> qs: array<vec4<f32>, HEADS * DQ>;
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

// Where split `split` of (token, head) `group` keeps its partial record: max, normaliser, DV sums.
fn partial(group: u32, split: u32) -> u32 {
    return group * params.scratch_stride + params.partial_at + split * (DV + 2u);
}

// Leaves value unit c of (token, head) `group`: its output over normaliser l, or with SPLIT the split's
// unnormalised sums.
fn leave(group: u32, split: u32, c: u32, acc: VUnit, l: f32) {
    for (var e = 0u; e < UNIT; e++) {
#if SPLIT
        scratch[partial(group, split) + 2u + c * UNIT + e] = unit_part(acc, e);
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
    let blocks = params.n_heads / HEADS;
    let block = flat / splits;
    let split = flat % splits;
    let t = block / blocks;
    if (t >= step.n_tokens) {
        return;
    }
    // (token, head) of the block's first head; the others follow it.
    let group0 = t * params.n_heads + (block % blocks) * HEADS;
    let p = step.pos0 + t;
    let kvh = kv_head(group0 % params.n_heads);
    let vis = visible(t, kvh, p);
    let span = max((vis.count + splits - 1u) / splits, {{WG}}u);
    let lo = min(split * span, vis.count);
    let hi = min(lo + span, vis.count);
    let stride = params.scratch_stride;
#if HEAD_GROUP
    for (var i = lid; i < HEADS * DQ; i += {{WG}}u) {
        let at = group0 * D + 4u * i;
        qs[i] = vec4<f32>(q[at], q[at + 1u], q[at + 2u], q[at + 3u]) * params.scale;
    }
    workgroupBarrier();
#else
    var qv: array<f32, D>;
#unroll d HEAD_DIM
    qv[{{d}}] = q[group0 * D + {{d}}] * params.scale;
#endunroll
#endif

    var local_max: array<f32, HEADS>;
#unroll g HEADS
    local_max[{{g}}] = -3.0e38;
#endunroll
    for (var v = lo + lid; v < hi; v += {{WG}}u) {
        let j = visible_key(vis, v);
        // Initialised explicitly: in Chromium an array declared in a loop body kept the last iteration's sums.
        var s = array<f32, HEADS>();
#if HEAD_GROUP
        let kb = kv_base(j, kvh) / 4u;
#unroll c D_QUADS
        {
            let kq = k_cache[kb + {{c}}];
#unroll g HEADS
            s[{{g}}] += dot(qs[{{g}} * DQ + {{c}}], kq);
#endunroll
        }
#endunroll
#else
        s[0] = score(&qv, kv_base(j, kvh), j, p, distance(j, p, vis.first, vis.sinks));
#endif
#unroll g HEADS
        scratch[(group0 + {{g}}) * stride + v] = s[{{g}}];
        local_max[{{g}}] = max(local_max[{{g}}], s[{{g}}]);
#endunroll
    }
    var m: array<f32, HEADS>;
    var local_sum = array<f32, HEADS>();
#unroll g HEADS
    m[{{g}}] = reduce(local_max[{{g}}], lid, true);
#endunroll
    for (var v = lo + lid; v < hi; v += {{WG}}u) {
#unroll g HEADS
        {
            let at = (group0 + {{g}}) * stride + v;
            let e = exp(scratch[at] - m[{{g}}]);
            scratch[at] = e;
            local_sum[{{g}}] += e;
        }
#endunroll
    }
    var l: array<f32, HEADS>;
#unroll g HEADS
    l[{{g}}] = reduce(local_sum[{{g}}], lid, false);
#endunroll
    storageBarrier();
#if KEY_GROUPS
    let c = lid % LANES;
    var acc = array<VUnit, HEADS>();
    if (lid < LANES * GROUPS) {
        for (var v = lo + lid / LANES; v < hi; v += GROUPS) {
            let vu = v_cache[kv_base(visible_key(vis, v), kvh) / UNIT + c];
#unroll g HEADS
            acc[{{g}}] += scratch[(group0 + {{g}}) * stride + v] * vu;
#endunroll
        }
    }
#unroll g HEADS
    group_sums[lid] = acc[{{g}}];
    workgroupBarrier();
    if (lid < LANES) {
        var sum = acc[{{g}}];
        for (var k = 1u; k < GROUPS; k++) {
            sum += group_sums[lid + k * LANES];
        }
        leave(group0 + {{g}}, split, c, sum, l[{{g}}]);
    }
    workgroupBarrier();
#endunroll
#else
    for (var c = lid; c < UNITS; c += {{WG}}u) {
        var acc = array<VUnit, HEADS>();
        for (var v = lo; v < hi; v++) {
            let vu = v_cache[kv_base(visible_key(vis, v), kvh) / UNIT + c];
#unroll g HEADS
            acc[{{g}}] += scratch[(group0 + {{g}}) * stride + v] * vu;
#endunroll
        }
#unroll g HEADS
        leave(group0 + {{g}}, split, c, acc[{{g}}], l[{{g}}]);
#endunroll
    }
#endif
#if SPLIT
    if (lid == 0u) {
#unroll g HEADS
        scratch[partial(group0 + {{g}}, split)] = m[{{g}}];
        scratch[partial(group0 + {{g}}, split) + 1u] = l[{{g}}];
#endunroll
    }
#endif
}
