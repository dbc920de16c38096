// Matrix-vector form of matmul.wgsl for CPU adapters: each invocation computes RPL whole outputs (rows
// n0 + r * WG + lid of the workgroup's NR = WG * RPL), walking all of K itself. Every invocation reads the same
// input quads (matvec.wgsl splits K across invocations instead, and a reduction through workgroup memory follows).
// No workgroup memory, no barrier: on CPU adapters, which run a workgroup as coroutines, that and four times the
// work per workgroup make the short rows of small models faster (docs/perf.md, session 9). Same bindings, defines
// and epilogues as matvec.wgsl with W_QUADS: CHUNK elements (QUADS quads of stored words, X_QUADS quads of input)
// per step.
// A workgroup's rows lie in one matrix of a stack (MATRICES of them): the host aligns the segments to NR.
// X_BROADCAST (the subgroup size, a multiple of X_QUADS): the input quads, alike in every lane, are loaded once per
// subgroup, one per lane, and reach every lane by subgroupBroadcast, X_BROADCAST / X_QUADS steps per load (CPU
// adapters load the same address lane by lane; docs/perf.md, sessions 15 and 16).
#include "common/linear_io.wgsl"
#include "common/matvec_quads.wgsl"

// Step c's products of each of the invocation's rows (starting at quads quad0) in matrix `which` with xs.
fn accumulate_step(acc: ptr<function, array<f32, {{RPL}}>>, acc_up: ptr<function, array<f32, {{RPL}}>>,
                   xs: array<f32, {{CHUNK}}>, quad0: array<u32, {{RPL}}>, c: u32, which: u32) {
#unroll r RPL
    {
        let sums = quad_products(xs, quad0[{{r}}] + c * {{QUADS}}u, which);
        (*acc)[{{r}}] += sums.x;
        (*acc_up)[{{r}}] += sums.y;
    }
#endunroll
}

@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#if X_BROADCAST
    @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
    let m = wid.y;
    if (m >= row_count(params.row_sel)) {
        return;
    }
    let n0 = wid.x * {{NR}}u;
    let which = segment(n0).x;
    let quads_per_row = params.k / EPW / 4u;
    var quad0: array<u32, {{RPL}}>;
    var acc: array<f32, {{RPL}}>;
    var acc_up: array<f32, {{RPL}}>;
#unroll r RPL
    quad0[{{r}}] = segment(min(n0 + {{r}} * {{WG}}u + lid, params.n_block - 1u)).y * quads_per_row;
#endunroll
    let xbase = m * params.k / 4u;
    var squares = 0.0;
    // One copy of the loop per matrix of a stack, each reading its matrix by a constant index: a CPU adapter runs
    // both sides of a branch, so choosing the matrix per load would run every matrix's load loop each step.
#unroll s MATRICES
    if (which == {{s}}) {
#if X_BROADCAST
        let x_quads = params.k / 4u;
        for (var q0 = 0u; q0 < x_quads; q0 += {{X_BROADCAST}}u) {
            // This lane's quad of the next X_BROADCAST, 0 past the row (its squares count once, here).
            let live = q0 + lane < x_quads;
            var lane_squares = 0.0;
            let mine = select(vec4<f32>(0.0), input_quad(xbase, min(q0 + lane, x_quads - 1u), &lane_squares), live);
            squares += select(0.0, lane_squares, live);
#unroll b BROADCAST_STEPS
            {
                let c = q0 / {{X_QUADS}}u + {{b}};
                if (c < params.k / {{CHUNK}}u) {
                    var xs: array<f32, {{CHUNK}}>;
#unroll p X_QUADS
                    {
                        const g = {{b}} * {{X_QUADS}}u + {{p}};
                        let a = subgroupBroadcast(mine, g);
#unroll j 4
                        xs[{{p}} * 4 + {{j}}] = a[{{j}}];
#endunroll
                    }
#endunroll
                    accumulate_step(&acc, &acc_up, xs, quad0, c, {{s}});
                }
            }
#endunroll
        }
#else
        for (var c = 0u; c < params.k / {{CHUNK}}u; c++) {
            let xs = input_chunk(xbase, c * {{X_QUADS}}u, &squares);
            accumulate_step(&acc, &acc_up, xs, quad0, c, {{s}});
        }
#endif
    }
#endunroll
    var inv_rms = 1.0;
#if NORM_IN
#if X_BROADCAST
    squares = subgroupAdd(squares);
#endif
    inv_rms = inverseSqrt(squares / f32(params.k) + params.norm_eps);
#endif
#unroll r RPL
    {
        let n = n0 + {{r}} * {{WG}}u + lid;
        if (n < params.n_block) {
#if GATED
            store_pair(m, n, acc[{{r}}] * inv_rms, acc_up[{{r}}] * inv_rms);
#else
            store(m, n, acc[{{r}}] * inv_rms);
#endif
        }
    }
#endunroll
}
