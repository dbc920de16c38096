// A weight matrix block in its stored dtype; w_at(i) decodes element i (row-major) to f32.
// f16/bf16 are packed two per u32 (element 2j in the low half); decoding needs no shader-f16. W_TERNARY: 2-bit codes
// (t + 1) packed 16 per u32, element i in bits 2(i % 16) of word i / 16.
// UP_BINDING: a second matrix of the same dtype and shape (a gated MLP's up projection beside its gate), up_at(i).
@group(0) @binding({{W_BINDING}}) var<storage, read> w: array<{{W_ELEM}}>;
#if UP_BINDING
@group(0) @binding({{UP_BINDING}}) var<storage, read> w_up: array<{{W_ELEM}}>;
#endif

// The index of the stored word holding element i.
fn word_of(i: u32) -> u32 {
#if W_F32
    return i;
#endif
#if W_BF16
    return i >> 1u;
#endif
#if W_F16
    return i >> 1u;
#endif
#if W_TERNARY
    return i >> 4u;
#endif
}

// Element i from the stored word holding it.
fn decode(word: {{W_ELEM}}, i: u32) -> f32 {
#if W_F32
    return word;
#endif
#if W_BF16
    if ((i & 1u) == 0u) {
        return bitcast<f32>(word << 16u);
    }
    return bitcast<f32>(word & 0xffff0000u);
#endif
#if W_F16
    return unpack2x16float(word)[i & 1u];
#endif
#if W_TERNARY
    return f32((word >> ((i & 15u) * 2u)) & 3u) - 1.0;
#endif
}

fn w_at(i: u32) -> f32 {
    return decode(w[word_of(i)], i);
}

#if UP_BINDING
fn up_at(i: u32) -> f32 {
    return decode(w_up[word_of(i)], i);
}
#endif

// Element i of the up projection when `up` (and there is one), else of w.
fn weight_at(i: u32, up: bool) -> f32 {
#if UP_BINDING
    if (up) {
        return up_at(i);
    }
#endif
    return w_at(i);
}
