// RAT (reference::rat) in two passes over the forward's tokens. proj rows [z | x | g | q | k] (`in_width` floats);
// state = the running [k̃ | x̃] (2 hidden) then one [k̃ | x̃] row per completed chunk (`chunks` rows), unrotated.
//   default  SCAN: one invocation per channel of [k̃ | x̃]: the gated recurrence, sequential over the tokens,
//            reset at chunk starts, writing each token's value to `scan` [T, 2 hidden] and each completed chunk's to
//            its summary row. Head h's key channels read q/k group h % groups.
//   ATTEND   one invocation per (token, head): an online softmax over the summaries of earlier chunks and the
//            token's own k̃, x̃, with query and keys rotated at chunk positions (cos/sin tables [positions, rot_half]);
//            writes σ(z) ⊙ o to out [T, hidden].
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    hidden: u32,
    head_dim: u32,
    groups: u32,
    chunk: u32,
    in_width: u32,
    rot_half: u32,
    chunks: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> proj: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> scan: array<f32>;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

#if ATTEND
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read> rot_cos: array<f32>;
@group(0) @binding(7) var<storage, read> rot_sin: array<f32>;

const DH: u32 = {{HEAD_DIM}}u;

// Channel i of the head vector `v` rotated at `position` (rotate-half, the first 2 rot_half channels).
fn rotated(v: ptr<function, array<f32, DH>>, i: u32, position: u32) -> f32 {
    let half = params.rot_half;
    if (i >= 2u * half) {
        return (*v)[i];
    }
    let f = i % half;
    let c = rot_cos[position * half + f];
    let s = rot_sin[position * half + f];
    if (i < half) {
        return (*v)[i] * c - (*v)[i + half] * s;
    }
    return (*v)[i] * c + (*v)[i - half] * s;
}

fn summary_or_own(at: u32, own: bool) -> f32 {
    if (own) {
        return scan[at];
    }
    return state[at];
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let heads = params.hidden / DH;
    let t = idx / heads;
    if (t >= step.n_tokens) {
        return;
    }
    let h = idx % heads;
    let chunk = (step.pos0 + t) / params.chunk;
    let row = t * params.in_width;
    let width = 2u * params.hidden;
    var raw: array<f32, DH>;
    var q: array<f32, DH>;
    for (var i = 0u; i < DH; i++) {
        raw[i] = proj[row + 3u * params.hidden + (h % params.groups) * DH + i];
    }
    for (var i = 0u; i < DH; i++) {
        q[i] = rotated(&raw, i, chunk);
    }
    let scale = inverseSqrt(f32(DH));
    var top = -3.0e38;
    var total = 0.0;
    var acc: array<f32, DH>;
    for (var c = 0u; c <= chunk; c++) {
        // Earlier chunks' summaries, then the token's own running state.
        var key_at = width + c * width + h * DH;
        if (c == chunk) {
            key_at = t * width + h * DH;
        }
        for (var i = 0u; i < DH; i++) {
            raw[i] = summary_or_own(key_at + i, c == chunk);
        }
        var score = 0.0;
        for (var i = 0u; i < DH; i++) {
            score += q[i] * rotated(&raw, i, c);
        }
        score *= scale;
        let next = max(top, score);
        let fade = exp(top - next);
        let w = exp(score - next);
        total = total * fade + w;
        for (var i = 0u; i < DH; i++) {
            let v = summary_or_own(key_at + params.hidden + i, c == chunk);
            acc[i] = acc[i] * fade + w * v;
        }
        top = next;
    }
    for (var i = 0u; i < DH; i++) {
        out[t * params.hidden + h * DH + i] = sigmoid(proj[row + h * DH + i]) * acc[i] / total;
    }
}
#else
@group(0) @binding(5) var<storage, read> gate_bias: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let c = flat_group(wid, nwg) * {{WG}}u + lid;
    let width = 2u * params.hidden;
    if (c >= width) {
        return;
    }
    let is_x = c >= params.hidden;
    let ch = c % params.hidden;
    let qk = params.groups * params.head_dim;
    var r = state[c];
    for (var t = 0u; t < step.n_tokens; t++) {
        let p = step.pos0 + t;
        if (p % params.chunk == 0u) {
            r = 0.0;
        }
        let row = t * params.in_width;
        let gate = sigmoid(proj[row + 2u * params.hidden + ch] + gate_bias[ch]);
        var u = proj[row + 3u * params.hidden + qk + ch % qk];
        if (is_x) {
            u = proj[row + params.hidden + ch];
        }
        r = gate * r + (1.0 - gate) * u;
        scan[t * width + c] = r;
        let done = p / params.chunk;
        if (p % params.chunk == params.chunk - 1u && done < params.chunks) {
            state[width + done * width + c] = r;
        }
    }
    state[c] = r;
}
#endif
