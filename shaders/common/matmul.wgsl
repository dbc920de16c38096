// Y[m, n_offset + n] (+)= sum_k X[m, k] W[n, k] (+ bias) for one row block of W, register-blocked: each invocation
// owns a TM x TN tile of outputs (common/tile.wgsl; TM/TN/WG_X/WG_Y are tunable per device). GATED: the tile of
// the up projection too, and the gated products. X_BROADCAST (WG_Y 1): every invocation of a workgroup shares its
// tile rows, and subgroups share their input loads (common/tile.wgsl).
#include "common/linear_io.wgsl"
#include "common/tile.wgsl"

@compute @workgroup_size({{WG_X}}, {{WG_Y}})
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
#if X_BROADCAST
    @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
    let rows = row_count(params.row_sel);
    let m0 = gid.y * {{TM}}u;
    let n0 = gid.x * {{TN}}u;
#if X_BROADCAST
    sg_lane = lane;
    if (m0 >= rows) {
        return;
    }
#else
    if (m0 >= rows || n0 >= params.n_block) {
        return;
    }
#endif
    var xrow: array<u32, {{TM}}>;
    var wrow: array<u32, {{TN}}>;
#unroll i TM
    xrow[{{i}}] = min(m0 + {{i}}, rows - 1u) * params.k;
#endunroll
    var which: array<u32, {{TN}}>;
#unroll j TN
    {
        let seg = segment(min(n0 + {{j}}, params.n_block - 1u));
        which[{{j}}] = seg.x;
        wrow[{{j}}] = seg.y * params.k;
    }
#endunroll
    let acc = tile_product(xrow, wrow, which, params.k);
#if GATED
    var up: array<u32, {{TN}}>;
#unroll j TN
    up[{{j}}] = 1u;
#endunroll
    let acc_up = tile_product(xrow, wrow, up, params.k);
#endif
#unroll i TM
#unroll j TN
    if (m0 + {{i}} < rows && n0 + {{j}} < params.n_block) {
#if GATED
        store_pair(m0 + {{i}}, n0 + {{j}}, acc[{{i}}][{{j}}], acc_up[{{i}}][{{j}}]);
#else
        store(m0 + {{i}}, n0 + {{j}}, acc[{{i}}][{{j}}]);
#endif
    }
#endunroll
#endunroll
}
