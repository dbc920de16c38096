// Hybrid memory update (attention with ABSORB, see attention/common.wgsl): after a forward's attention, the keys
// that leave the window before the next forward's first query, positions [max(sinks, first(pos0)),
// max(sinks, first(pos0 + n))), are added into the Taylor state while the ring cache still holds them:
// memory[kv head, f, c] += φ_f(k_j) · [v_j, 1]_c with key-side features φ(k) = [1, k_i, k_i², k_i k_j (i < j)].
// One invocation per (kv head, feature, channel).
#include "common/grid.wgsl"
#include "common/step.wgsl"
#include "attention/ring.wgsl"

struct Params {
    n_kv_heads: u32,
    cache_rows: u32,
    sinks: u32,
    window: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> memory: array<f32>;

const D: u32 = {{HEAD_DIM}}u;
const FEATURES: u32 = 1u + D + D * (D + 1u) / 2u;

// First position outside the sinks a query at p still sees.
fn held(p: u32) -> u32 {
    var first = 0u;
    if (p + 1u > params.window) {
        first = p + 1u - params.window;
    }
    return max(params.sinks, first);
}

// Offset of position j's key/value row for kv head kvh in the sinks-then-ring cache.
fn kv_base(j: u32, kvh: u32) -> u32 {
    return (ring_row(j, params.sinks, params.cache_rows) * params.n_kv_heads + kvh) * D;
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    if (idx >= params.n_kv_heads * FEATURES * (D + 1u)) {
        return;
    }
    let c = idx % (D + 1u);
    let f = (idx / (D + 1u)) % FEATURES;
    let kvh = idx / ((D + 1u) * FEATURES);
    // Feature f as the product of channels a and b (a = b = D for the constant, b = D for a linear one).
    var a = D;
    var b = D;
    if (f >= 1u && f <= D) {
        a = f - 1u;
    } else if (f > D && f <= 2u * D) {
        a = f - 1u - D;
        b = a;
    } else if (f > 2u * D) {
        var pair = f - 1u - 2u * D;
        a = 0u;
        while (pair >= D - 1u - a) {
            pair -= D - 1u - a;
            a++;
        }
        b = a + 1u + pair;
    }
    var sum = memory[idx];
    for (var j = held(step.pos0); j < held(step.pos0 + step.n_tokens); j++) {
        let kb = kv_base(j, kvh);
        var phi = 1.0;
        if (a < D) {
            phi *= k_cache[kb + a];
        }
        if (b < D) {
            phi *= k_cache[kb + b];
        }
        var value = 1.0;
        if (c < D) {
            value = v_cache[kb + c];
        }
        sum += phi * value;
    }
    memory[idx] = sum;
}
