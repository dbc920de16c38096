// Shared pieces of the chunkwise linear-attention kernels (one workgroup per (chunk, head)).
#include "common/grid.wgsl"
#include "common/step.wgsl"

const CH: u32 = 64u;

// The chunk a workgroup works on: chunk index, head, first token and length (0 past the last token).
struct Chunk {
    index: u32,
    head: u32,
    t0: u32,
    len: u32,
}

fn chunk_of(wid: vec3<u32>, nwg: vec3<u32>, heads: u32) -> Chunk {
    let group = flat_group(wid, nwg);
    let t0 = (group / heads) * CH;
    var len = 0u;
    if (t0 < step.n_tokens) {
        len = min(CH, step.n_tokens - t0);
    }
    return Chunk(group / heads, group % heads, t0, len);
}

#if TRI_SOLVE
// A chunk's strictly lower-triangular L [CH, CH] in workgroup memory, and a row of scratch for solving with it.
var<workgroup> tri: array<f32, CH * CH>;
var<workgroup> tri_row: array<f32, CH>;

// Replaces the strictly lower L in `tri` (first n rows) by T = (I - L)^-1 (unit diagonal included) by forward
// substitution: T_ri = L_ri + sum_{i<m<r} L_rm T_mi, rows above r already final. Every invocation i < CH calls it.
fn solve_unit_lower(i: u32, n: u32) {
    for (var r = 1u; r < n; r++) {
        var val = 0.0;
        if (i < r) {
            val = tri[r * CH + i];
            for (var m = i + 1u; m < r; m++) {
                val += tri[r * CH + m] * tri[m * CH + i];
            }
        }
        tri_row[i] = val;
        workgroupBarrier();
        if (i < r) {
            tri[r * CH + i] = tri_row[i];
        }
        workgroupBarrier();
    }
    tri[i * CH + i] = 1.0;
    workgroupBarrier();
}
#endif
