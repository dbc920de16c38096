// The register-blocked core of the matmul kernels: a TM x TN tile of sum_k x[xrow[i] + k] * W_j[wrow[j] + k], W_j
// being matrix which[j] (common/weights.wgsl weight_at), each invocation reading its rows straight from memory (no
// shared memory: barriers are slow on CPU adapters), its loops over the tile unrolled (constant indices keep the
// tile in registers on SwiftShader). The including shader declares `x` and includes common/weights.wgsl.
// W_QUADS (k a multiple of 4 W_EPW): x and W are read in 16-byte quads, each step taking a quad of stored words
// from every W row (decoded once for the TM rows) and the matching quads of x.
#if W_QUADS
const STEP: u32 = 4u * EPW;

fn tile_product(xrow: array<u32, {{TM}}>, wrow: array<u32, {{TN}}>, which: array<u32, {{TN}}>, k: u32)
        -> array<array<f32, {{TN}}>, {{TM}}> {
    var acc: array<array<f32, {{TN}}>, {{TM}}>;
    for (var k0 = 0u; k0 < k; k0 += STEP) {
        var b: array<array<f32, 4 * {{W_EPW}}>, {{TN}}>;
#unroll j TN
        {
            let quad = stored_at((wrow[{{j}}] + k0) / STEP, which[{{j}}]);
#unroll v 4
#unroll e W_EPW
            b[{{j}}][{{v}} * EPW + {{e}}] = decode(quad[{{v}}], {{e}});
#endunroll
#endunroll
        }
#endunroll
#unroll i TM
#unroll q W_EPW
        {
            let a = x[(xrow[{{i}}] + k0) / 4u + {{q}}];
#unroll j TN
#unroll c 4
            acc[{{i}}][{{j}}] += a[{{c}}] * b[{{j}}][{{q}} * 4 + {{c}}];
#endunroll
#endunroll
        }
#endunroll
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
