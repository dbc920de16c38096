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

// The last row a chunk pass's tiles of columns must reach for row i: with BROADCAST that of i's whole subgroup,
// which runs the tiles together (the rows before it mask the columns right of their diagonal).
fn last_row(i: u32) -> u32 {
#if BROADCAST
    return subgroupMax(i);
#else
    return i;
#endif
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
