// The forward substitution of the delta-rule chunk kernels (Gated DeltaNet, RWKV-7) for an invocation's column
// block c of head h, over the chunk's n tokens from t0: u_i += sum_{j<i} L_ij u_j (u = (I - L)^-1 u, in place in
// u_buf) and out_i += sum_{j<=i} P_ij u_j, the chunk's square at float `square` of `squares` holding P_ij on and
// below its diagonal and L_ij above it (at [j][i]). Tokens TT at a time: earlier tiles' u loaded once per tile, the
// tile's own held; with BROADCAST lane i of each subgroup loads row i of the tile's coefficients and
// subgroupBroadcast shares them. Needs TT, CH, COLS, Col, u_buf, out and squares.
#if BROADCAST
// The invocation's lane in its subgroup, set by the entry point.
var<private> lane: u32;
#endif

fn substitute(square: u32, t0: u32, n: u32, h: u32, heads: u32, c: u32) {
    for (var ib = 0u; ib < n; ib += TT) {
        var u = array<Col, TT>();
        var o = array<Col, TT>();
#unroll i TT
        if (ib + {{i}} < n) {
            let row = (t0 + ib + {{i}}) * heads + h;
            u[{{i}}] = u_buf[row * COLS + c];
            o[{{i}}] = out[row * COLS + c];
        }
#endunroll
#if BROADCAST
        // This lane's row of the tile (rows past the chunk take coefficients 0).
        let my_row = ib + lane;
        let my_live = lane < TT && my_row < n;
#endif
        for (var j = 0u; j < ib; j++) {
            let uj = u_buf[((t0 + j) * heads + h) * COLS + c];
#if BROADCAST
            var my_l = 0.0;
            var my_a = 0.0;
            if (my_live) {
                my_l = squares[square + j * CH + my_row];
                my_a = squares[square + my_row * CH + j];
            }
#endif
#unroll i TT
            {
#if BROADCAST
                let l = subgroupBroadcast(my_l, {{i}});
                let a = subgroupBroadcast(my_a, {{i}});
#else
                let l = squares[square + j * CH + ib + {{i}}];
                let a = squares[square + (ib + {{i}}) * CH + j];
#endif
                u[{{i}}] += l * uj;
                o[{{i}}] += a * uj;
            }
#endunroll
        }
#if BROADCAST
        var my_ls = array<f32, TT>();
        var my_as = array<f32, TT>();
        if (my_live) {
#unroll j TT
            my_ls[{{j}}] = squares[square + (ib + {{j}}) * CH + my_row];
            my_as[{{j}}] = squares[square + my_row * CH + ib + {{j}}];
#endunroll
        }
#endif
#unroll i TT
#unroll j TT
        if ({{j}} < {{i}}) {
#if BROADCAST
            u[{{i}}] += subgroupBroadcast(my_ls[{{j}}], {{i}}) * u[{{j}}];
#else
            u[{{i}}] += squares[square + (ib + {{j}}) * CH + ib + {{i}}] * u[{{j}}];
#endif
        }
#endunroll
#unroll j TT
        if ({{j}} <= {{i}}) {
#if BROADCAST
            o[{{i}}] += subgroupBroadcast(my_as[{{j}}], {{i}}) * u[{{j}}];
#else
            o[{{i}}] += squares[square + (ib + {{i}}) * CH + ib + {{j}}] * u[{{j}}];
#endif
        }
#endunroll
#endunroll
#unroll i TT
        if (ib + {{i}} < n) {
            let row = (t0 + ib + {{i}}) * heads + h;
            u_buf[row * COLS + c] = u[{{i}}];
            out[row * COLS + c] = o[{{i}}];
        }
#endunroll
    }
}
