// Column blocks of a recurrent kernel's [DK, DV] head state: each invocation owns VW adjacent value channels (a
// vec4<f32> with VEC, where the head width and the state's offset allow it, else one f32), COLS blocks per head,
// and walks the key channels four at a time (rows past DK skipped where DK is not a multiple of 4). The block is
// streamed from memory each token rather than held in registers, which CPU adapters spill for heads of 64 or more
// key channels. Needs DV and `linear/input.wgsl`.
alias Col = {{COL}};
const VW: u32 = {{VW}}u;
const COLS: u32 = DV / VW;

// The block of the input starting at float i.
fn input_col(i: u32) -> Col {
#if VEC
    return input_quad(i);
#else
    return input_at(i);
#endif
}

#if CHUNK_STATE
// Rows d0..d0 + 3 of the invocation's column block of the head state at `base` (0 past DK), from the chunk
// kernel's `state`.
fn state_rows(base: u32, d0: u32) -> array<Col, 4> {
    var s = array<Col, 4>();
#unroll r 4
    if (d0 + {{r}} < DK) {
        s[{{r}}] = state[base + (d0 + {{r}}) * COLS];
    }
#endunroll
    return s;
}
#endif

// The sum of a block's squares.
fn squared(x: Col) -> f32 {
#if VEC
    return dot(x, x);
#else
    return x * x;
#endif
}
