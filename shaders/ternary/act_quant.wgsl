// Per-token int8 activation fake-quantisation for ternary (BitNet) linear layers, one workgroup per row of WIDTH:
// out = clamp(round(x * s), -128, 127) / s with s = 127 / max(max|x|, 1e-5).
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    width: u32,
    row_sel: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = flat_group(wid, nwg);
    if (row >= row_count(params.row_sel)) {
        return;
    }
    let base = row * params.width;
    var m = 0.0;
    for (var i = lid; i < params.width; i += {{WG}}u) {
        m = max(m, abs(x[base + i]));
    }
    partial[lid] = m;
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    let scale = 127.0 / max(partial[0], 1e-5);
    for (var i = lid; i < params.width; i += {{WG}}u) {
        out[base + i] = clamp(round(x[base + i] * scale), -128.0, 127.0) / scale;
    }
}
