// Column blocks of a recurrent kernel's [DK, DV] head state: each invocation owns VW adjacent value channels (a
// vec4<f32> with VEC, where the head width and the state's offset allow it, else one f32), COLS blocks per head,
// and walks the key channels DK_STEP at a time. The block is streamed from memory each token rather than held in
// registers, which CPU adapters spill for heads of 64 or more key channels. Needs DV and `fn input_at(i: u32) ->
// f32`, the kernel's per-token input.
alias Col = {{COL}};
const VW: u32 = {{VW}}u;
const COLS: u32 = DV / VW;
const DK_STEP: u32 = {{DK_STEP}}u;

// The block of the input starting at float i.
fn input_col(i: u32) -> Col {
#if VEC
    return vec4<f32>(input_at(i), input_at(i + 1u), input_at(i + 2u), input_at(i + 3u));
#else
    return input_at(i);
#endif
}

// The sum of a block's squares.
fn squared(x: Col) -> f32 {
#if VEC
    return dot(x, x);
#else
    return x * x;
#endif
}
