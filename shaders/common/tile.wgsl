// The register-blocked core of the matmul kernels: a TM x TN tile of sum_k x[xrow[i] + k] * W_j[wrow[j] + k], W_j
// being matrix which[j] (common/weights.wgsl weight_at), each invocation reading its rows straight from memory (no
// shared memory: barriers are slow on CPU adapters), its loops over the tile unrolled (constant indices keep the
// tile in registers on SwiftShader). The including shader declares `x` and includes common/weights.wgsl.
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
