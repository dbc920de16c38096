// The register-blocked core of the matmul kernels: a TM x TN tile of sum_k x[xrow[i] + k] * W_j[wrow[j] + k], W_j
// being matrix which[j] (common/weights.wgsl weight_at), each invocation reading its rows straight from memory (no
// shared memory: barriers are slow on CPU adapters), its loops over the tile unrolled (constant indices keep the
// tile in registers on SwiftShader). The including shader declares `x` and includes common/weights.wgsl.
// W_QUADS (k a multiple of 4 W_EPW): x and W are read in 16-byte quads, each step taking the TM rows' quads of x,
// then from every W row a quad of stored words, each element decoded once for the TM rows.
// X_BROADCAST (with W_QUADS; the subgroup size, every lane of a subgroup sharing its tile rows): a step's TM W_EPW
// input quads are loaded once per subgroup, X_SLOTS per lane, and reach every lane by subgroupBroadcast. CPU
// adapters load the same address lane by lane as they do different ones (docs/perf.md, session 15).
#if X_BROADCAST
// This invocation's lane in its subgroup, set by the entry point.
var<private> sg_lane: u32;
#endif
#if W_QUADS
const STEP: u32 = 4u * EPW;

fn tile_product(xrow: array<u32, {{TM}}>, wrow: array<u32, {{TN}}>, which: array<u32, {{TN}}>, k: u32)
        -> array<array<f32, {{TN}}>, {{TM}}> {
    var acc: array<array<f32, {{TN}}>, {{TM}}>;
#if X_BROADCAST
    // The quad of x this lane loads into each slot at k0 = 0: quad g of the step is row g / EPW's quad g % EPW.
    var xq: array<u32, {{X_SLOTS}}>;
#unroll s X_SLOTS
    {
        let g = min(sg_lane + {{s}} * {{X_BROADCAST}}u, {{TM}}u * EPW - 1u);
        xq[{{s}}] = xrow[g / EPW] / 4u + g % EPW;
    }
#endunroll
#endif
    for (var k0 = 0u; k0 < k; k0 += STEP) {
        var a: array<array<vec4<f32>, {{W_EPW}}>, {{TM}}>;
#if X_BROADCAST
        var mine: array<vec4<f32>, {{X_SLOTS}}>;
#unroll s X_SLOTS
        mine[{{s}}] = x[xq[{{s}}] + k0 / 4u];
#endunroll
#unroll i TM
#unroll q W_EPW
        {
            const g = {{i}} * EPW + {{q}};
            a[{{i}}][{{q}}] = subgroupBroadcast(mine[g / {{X_BROADCAST}}u], g % {{X_BROADCAST}}u);
        }
#endunroll
#endunroll
#else
#unroll i TM
#unroll q W_EPW
        a[{{i}}][{{q}}] = x[(xrow[{{i}}] + k0) / 4u + {{q}}];
#endunroll
#endunroll
#endif
#unroll j TN
        {
            let quad = stored_at((wrow[{{j}}] + k0) / STEP, which[{{j}}]);
#unroll v 4
#unroll e W_EPW
            {
                let b = decode(quad[{{v}}], {{e}});
#unroll i TM
                acc[{{i}}][{{j}}] += a[{{i}}][({{v}} * EPW + {{e}}) / 4u][({{v}} * EPW + {{e}}) % 4u] * b;
#endunroll
            }
#endunroll
#endunroll
        }
#endunroll
    }
    return acc;
}
#else
fn tile_product(xrow: array<u32, {{TM}}>, wrow: array<u32, {{TN}}>, which: array<u32, {{TN}}>, k: u32)
        -> array<array<f32, {{TN}}>, {{TM}}> {
    var acc: array<array<f32, {{TN}}>, {{TM}}>;
    for (var kk = 0u; kk < k; kk++) {
        var a: array<f32, {{TM}}>;
        var b: array<f32, {{TN}}>;
#unroll i TM
        a[{{i}}] = x[xrow[{{i}}] + kk];
#endunroll
#unroll j TN
        b[{{j}}] = weight_at(wrow[{{j}}] + kk, which[{{j}}]);
#endunroll
#unroll i TM
#unroll j TN
        acc[{{i}}][{{j}}] += a[{{i}}] * b[{{j}}];
#endunroll
#endunroll
    }
    return acc;
}
#endif
