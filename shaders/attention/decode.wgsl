// Decode attention: one workgroup per (token, head) splits the visible keys (see attention/common.wgsl) across
// invocations. Phase 1 writes scores to a scratch row and reduces the max, phase 2 exponentiates and sums,
// phase 3 has each invocation own output channels and sum p_j * v_j over all visible keys.
#include "attention/common.wgsl"

@group(0) @binding(6) var<storage, read_write> scores: array<f32>;
var<workgroup> red: array<f32, {{WG}}>;

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

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = flat_group(wid, nwg);
    let t = group / params.n_heads;
    let h = group % params.n_heads;
    if (t >= step.n_tokens) {
        return;
    }
    let p = step.pos0 + t;
    let kvh = kv_head(h);
    let vis = visible(t, kvh, p);
    let sb_row = group * params.scratch_stride;
    var qv: array<f32, D>;
#unroll d HEAD_DIM
    qv[{{d}}] = q[group * D + {{d}}] * params.scale;
#endunroll

    var local_max = -3.0e38;
    for (var v = lid; v < vis.count; v += {{WG}}u) {
        let j = visible_key(vis, v);
        let s = score(&qv, kv_base(j, kvh), j, p, distance(j, p, vis.first, vis.sinks));
        scores[sb_row + v] = s;
        local_max = max(local_max, s);
    }
    let m = reduce(local_max, lid, true);
    var local_sum = 0.0;
    for (var v = lid; v < vis.count; v += {{WG}}u) {
        let e = exp(scores[sb_row + v] - m);
        scores[sb_row + v] = e;
        local_sum += e;
    }
    let l = reduce(local_sum, lid, false);
    storageBarrier();
#if KV_QUADS
    for (var c = lid; c < DV / 4u; c += {{WG}}u) {
        var acc = vec4<f32>(0.0);
        for (var v = 0u; v < vis.count; v++) {
            acc += scores[sb_row + v] * v_cache[kv_base(visible_key(vis, v), kvh) / 4u + c];
        }
#unroll e 4
        emit(group * DV + 4u * c + {{e}}, acc[{{e}}] / l);
#endunroll
    }
#else
    for (var d = lid; d < DV; d += {{WG}}u) {
        var acc = 0.0;
        for (var v = 0u; v < vis.count; v++) {
            acc += scores[sb_row + v] * v_cache[kv_base(visible_key(vis, v), kvh) + d];
        }
        emit(group * DV + d, acc / l);
    }
#endif
}
