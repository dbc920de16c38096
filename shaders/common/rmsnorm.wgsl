// RMSNorm over groups of `dim` values, one workgroup per group (groups_per_row per row of row_stride floats):
// y = x * rsqrt(mean(x^2) + eps) * (w or 1 + w). Variants: INPLACE (y overwrites x), RESIDUAL (out += y),
// GATE (y *= GATE_ACT(gate) element-wise, GATE_ACT silu or sigmoid: the gated output norm of linear-attention layers),
// CENTERED (LayerNorm: x - mean(x) in place of x), BIAS (y += bias, bias [dim]).
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    dim: u32,
    groups_per_row: u32,
    row_sel: u32,
    unit_offset: u32,
    eps: f32,
    row_stride: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
#if INPLACE
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
#else
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#endif

#if BIAS
@group(0) @binding({{BIAS_BINDING}}) var<storage, read> bias: array<f32>;
#endif
#if GATE
@group(0) @binding({{GATE_BINDING}}) var<storage, read> gate: array<f32>;

fn silu(z: f32) -> f32 {
    return z / (1.0 + exp(-z));
}

fn sigmoid(z: f32) -> f32 {
    return 1.0 / (1.0 + exp(-z));
}
#endif

var<workgroup> partial: array<f32, {{WG}}>;

// The sum of every invocation's `value` (all invocations call it).
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    workgroupBarrier();
    partial[lid] = value;
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    return partial[0];
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = flat_group(wid, nwg);
    if (group >= row_count(params.row_sel) * params.groups_per_row) {
        return;
    }
    let base = (group / params.groups_per_row) * params.row_stride + (group % params.groups_per_row) * params.dim;
    var mean = 0.0;
#if CENTERED
    var total = 0.0;
    for (var d = lid; d < params.dim; d += {{WG}}u) {
        total += x[base + d];
    }
    mean = workgroup_sum(lid, total) / f32(params.dim);
#endif
    var sum = 0.0;
    for (var d = lid; d < params.dim; d += {{WG}}u) {
        let v = x[base + d] - mean;
        sum += v * v;
    }
    let inv = inverseSqrt(workgroup_sum(lid, sum) / f32(params.dim) + params.eps);
    for (var d = lid; d < params.dim; d += {{WG}}u) {
        var g = weight[d];
        if (params.unit_offset == 1u) {
            g = 1.0 + g;
        }
        var y = (x[base + d] - mean) * inv * g;
#if BIAS
        y += bias[d];
#endif
#if GATE
        y *= {{GATE_ACT}}(gate[base + d]);
#endif
#if INPLACE
        x[base + d] = y;
#else
#if RESIDUAL
        out[base + d] = out[base + d] + y;
#else
        out[base + d] = y;
#endif
#endif
    }
}
