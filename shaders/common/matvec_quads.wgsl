// The steps that matvec.wgsl (with W_QUADS) and matvec_rows.wgsl share: each takes CHUNK input elements a step,
// X_QUADS quads of the input and QUADS quads of each row's stored words.
#if NORM_IN
@group(0) @binding({{NORM_BINDING}}) var<storage, read> norm_w: array<vec4<f32>>;
#endif

// Input quad q of the row starting at quad `row` of x; with NORM_IN times the norm's weights, its squares added
// to *squares.
fn input_quad(row: u32, q: u32, squares: ptr<function, f32>) -> vec4<f32> {
    var a = x[row + q];
#if NORM_IN
    *squares += dot(a, a);
    a *= norm_w[q] + params.norm_offset;
#endif
    return a;
}

// Input elements 4 q0 .. 4 q0 + CHUNK of the row starting at quad `row` of x, as input_quad gives them.
fn input_chunk(row: u32, q0: u32, squares: ptr<function, f32>) -> array<f32, {{CHUNK}}> {
    var xs: array<f32, {{CHUNK}}>;
#unroll p X_QUADS
    {
        let a = input_quad(row, q0 + {{p}}, squares);
#unroll j 4
        xs[{{p}} * 4 + {{j}}] = a[{{j}}];
#endunroll
    }
#endunroll
    return xs;
}

// One step's products of stored quads j .. j + QUADS of matrix `which` with xs, and (GATED) of the up matrix's.
fn quad_products(xs: array<f32, {{CHUNK}}>, j: u32, which: u32) -> vec2<f32> {
    var sums = vec2<f32>(0.0);
#unroll q QUADS
    {
        let quad = stored_at(j + {{q}}, which);
#if GATED
        let quad_up = stored_at(j + {{q}}, 1u);
#endif
#unroll v 4
#unroll e W_EPW
        sums.x += xs[({{q}} * 4 + {{v}}) * EPW + {{e}}] * decode(quad[{{v}}], {{e}});
#if GATED
        sums.y += xs[({{q}} * 4 + {{v}}) * EPW + {{e}}] * decode(quad_up[{{v}}], {{e}});
#endif
#endunroll
#endunroll
    }
#endunroll
    return sums;
}
