// Matrix-vector form of matmul.wgsl for decode: one workgroup computes NR outputs of one row of X,
// its invocations splitting K and reducing through workgroup memory. Same bindings and epilogues.
// NORM_IN: X is the residual stream and the layer reads RMSNorm(X) (weight norm_w): the products use x * w and
// are divided by rms(x), whose sum of squares is reduced beside them, so the norm costs no dispatch of its own.
// GATED: the up projection's products beside the gate's, reduced together, then ACT(gate) * up.
// Loops over the NR outputs are unrolled (constant indices keep the accumulators in registers on SwiftShader).
// SG_REDUCE: the workgroup is one subgroup, which sums its partial products by subgroupAdd instead of through
// workgroup memory between barriers.
#include "common/linear_io.wgsl"
#if W_QUADS
#include "common/matvec_quads.wgsl"
#endif
#if NORM_IN
#if !W_QUADS
@group(0) @binding({{NORM_BINDING}}) var<storage, read> norm_w: array<f32>;
#endif
#endif
#if !SG_REDUCE
#if NORM_IN
var<workgroup> partial_squares: array<f32, {{WG}}>;
#endif
#if GATED
var<workgroup> partial_up: array<f32, {{WG}} * {{NR}}>;
#endif
var<workgroup> partial: array<f32, {{WG}} * {{NR}}>;
#endif

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = wid.y;
    if (m >= row_count(params.row_sel)) {
        return;
    }
    let n0 = wid.x * {{NR}}u;
    var acc: array<f32, {{NR}}>;
    var acc_up: array<f32, {{NR}}>;
    let xbase = m * params.k;
    var which: array<u32, {{NR}}>;
    var wbase: array<u32, {{NR}}>;
#unroll r NR
    {
        let seg = segment(min(n0 + {{r}}, params.n_block - 1u));
#if GATED
        // The gate: a gated product is never a stack, and a constant spares CPU adapters, which run both sides of a
        // branch, the up matrix's load loop on every gate load.
        which[{{r}}] = 0u;
#else
        which[{{r}}] = seg.x;
#endif
        wbase[{{r}}] = seg.y * params.k;
    }
#endunroll
    var squares = 0.0;
#if CHUNK
    // Whole stored words: each invocation takes CHUNK consecutive elements (VW words of each row) per step, so a
    // word is loaded once and decoded without a per-element branch. The host picks this when CHUNK divides k.
    for (var c = lid; c < params.k / {{CHUNK}}u; c += {{WG}}u) {
        let k0 = c * {{CHUNK}}u;
#if W_QUADS
        let xs = input_chunk(xbase / 4u, k0 / 4u, &squares);
#else
        var xs: array<f32, {{CHUNK}}>;
#unroll j CHUNK
        {
            var a = x[xbase + k0 + {{j}}];
#if NORM_IN
            squares += a * a;
            a *= norm_w[k0 + {{j}}] + params.norm_offset;
#endif
            xs[{{j}}] = a;
        }
#endunroll
#endif
#unroll r NR
        {
            let w0 = (wbase[{{r}}] + k0) / EPW;
#if W_QUADS
            let sums = quad_products(xs, w0 / 4u, which[{{r}}]);
            acc[{{r}}] += sums.x;
            acc_up[{{r}}] += sums.y;
#else
#unroll v VW
            {
                let word = word_at(w0 + {{v}}, which[{{r}}]);
#if GATED
                let word_up = word_at(w0 + {{v}}, 1u);
#endif
#unroll e W_EPW
                acc[{{r}}] += xs[{{v}} * EPW + {{e}}] * decode(word, {{e}});
#if GATED
                acc_up[{{r}}] += xs[{{v}} * EPW + {{e}}] * decode(word_up, {{e}});
#endif
#endunroll
            }
#endunroll
#endif
        }
#endunroll
    }
#else
    for (var kk = lid; kk < params.k; kk += {{WG}}u) {
        var a = x[xbase + kk];
#if NORM_IN
        squares += a * a;
        a *= norm_w[kk] + params.norm_offset;
#endif
#unroll r NR
        acc[{{r}}] += a * weight_at(wbase[{{r}}] + kk, which[{{r}}]);
#if GATED
        acc_up[{{r}}] += a * weight_at(wbase[{{r}}] + kk, 1u);
#endif
#endunroll
    }
#endif
#if SG_REDUCE
    var inv_rms = 1.0;
#if NORM_IN
    inv_rms = inverseSqrt(subgroupAdd(squares) / f32(params.k) + params.norm_eps);
#endif
#unroll r NR
    {
        let total = subgroupAdd(acc[{{r}}]) * inv_rms;
#if GATED
        let total_up = subgroupAdd(acc_up[{{r}}]) * inv_rms;
#endif
        if (lid == {{r}} % {{WG}}u && n0 + {{r}} < params.n_block) {
#if GATED
            store_pair(m, n0 + {{r}}, total, total_up);
#else
            store(m, n0 + {{r}}, total);
#endif
        }
    }
#endunroll
#else
#unroll r NR
    partial[{{r}} * {{WG}}u + lid] = acc[{{r}}];
#if GATED
    partial_up[{{r}} * {{WG}}u + lid] = acc_up[{{r}}];
#endif
#endunroll
#if NORM_IN
    partial_squares[lid] = squares;
#endif
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
#unroll r NR
            partial[{{r}} * {{WG}}u + lid] += partial[{{r}} * {{WG}}u + lid + s];
#if GATED
            partial_up[{{r}} * {{WG}}u + lid] += partial_up[{{r}} * {{WG}}u + lid + s];
#endif
#endunroll
#if NORM_IN
            partial_squares[lid] += partial_squares[lid + s];
#endif
        }
        workgroupBarrier();
    }
    var inv_rms = 1.0;
#if NORM_IN
    inv_rms = inverseSqrt(partial_squares[0] / f32(params.k) + params.norm_eps);
#endif
    // NR may exceed WG: each invocation stores every WG-th output.
    for (var o = lid; o < {{NR}}u && n0 + o < params.n_block; o += {{WG}}u) {
#if GATED
        store_pair(m, n0 + o, partial[o * {{WG}}u] * inv_rms, partial_up[o * {{WG}}u] * inv_rms);
#else
        store(m, n0 + o, partial[o * {{WG}}u] * inv_rms);
#endif
    }
#endif
}
