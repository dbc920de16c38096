// Matrix-vector form of matmul.wgsl for decode: one workgroup computes NR outputs of one row of X,
// its invocations splitting K and reducing through workgroup memory. Same bindings and epilogues.
#include "common/linear_io.wgsl"

var<workgroup> partial: array<f32, {{WG}} * {{NR}}>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = wid.y;
    if (m >= row_count(params.row_sel)) {
        return;
    }
    let n0 = wid.x * {{NR}}u;
    var acc: array<f32, {{NR}}>;
    let xbase = m * params.k;
    for (var kk = lid; kk < params.k; kk += {{WG}}u) {
        let a = x[xbase + kk];
        for (var r = 0u; r < {{NR}}u; r++) {
            let n = min(n0 + r, params.n_block - 1u);
            acc[r] += a * w_at(n * params.k + kk);
        }
    }
    for (var r = 0u; r < {{NR}}u; r++) {
        partial[r * {{WG}}u + lid] = acc[r];
    }
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var r = 0u; r < {{NR}}u; r++) {
                partial[r * {{WG}}u + lid] += partial[r * {{WG}}u + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lid < {{NR}}u && n0 + lid < params.n_block) {
        store(m, n0 + lid, partial[lid * {{WG}}u]);
    }
}
