// Token rows laid out [q (key heads x DK) | k (key heads x DK) | v (value heads x DV)], read through
// `linear/input.wgsl`. Needs DK, DV, `params.width` (floats per token) and `fn key_heads() -> u32`.
#include "linear/input.wgsl"

// Input floats of q and k (key head kh, channel d) and v (value head h, channel c) of token t.
fn q_index(t: u32, kh: u32, d: u32) -> u32 {
    return t * params.width + kh * DK + d;
}

fn k_index(t: u32, kh: u32, d: u32) -> u32 {
    return q_index(t, kh, d) + key_heads() * DK;
}

fn v_index(t: u32, h: u32, c: u32) -> u32 {
    return t * params.width + 2u * key_heads() * DK + h * DV + c;
}

fn k_at(t: u32, kh: u32, d: u32) -> f32 {
    return input_at(k_index(t, kh, d));
}
