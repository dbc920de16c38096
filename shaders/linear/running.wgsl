// A chunk kernel's running log decays G [T, heads, DG] (the sum of each channel's log decays up to a token within
// its chunk) at binding G_BINDING, bound as vec4s where the input is (QUAD_INPUT: rows start on a multiple of 4
// floats) for one load per four channels. Needs DG and `fn decay_heads() -> u32`.
#if QUAD_INPUT
@group(0) @binding({{G_BINDING}}) var<storage, read_write> g_buf: array<vec4<f32>>;
#else
@group(0) @binding({{G_BINDING}}) var<storage, read_write> g_buf: array<f32>;
#endif

// The float of G of token t, head h, channel d.
fn g_index(t: u32, h: u32, d: u32) -> u32 {
    return (t * decay_heads() + h) * DG + d;
}

// G of token t, head h, channels d0..d0 + 3 (0 past DG).
fn g_quad(t: u32, h: u32, d0: u32) -> vec4<f32> {
#if QUAD_INPUT
    return g_buf[g_index(t, h, d0) / 4u];
#else
    let i = g_index(t, h, d0);
    return select(vec4<f32>(0.0), vec4<f32>(g_buf[i], g_buf[i + 1u], g_buf[i + 2u], g_buf[i + 3u]),
                  channels_below(d0, DG));
#endif
}

// Stores G of token t, head h, channels d0..d0 + 3 (none past DG).
fn store_g(t: u32, h: u32, d0: u32, g: vec4<f32>) {
#if QUAD_INPUT
    g_buf[g_index(t, h, d0) / 4u] = g;
#else
    for (var e = 0u; e < min(4u, DG - d0); e++) {
        g_buf[g_index(t, h, d0) + e] = g[e];
    }
#endif
}
