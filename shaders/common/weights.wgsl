// A weight matrix block in its stored dtype; w_at(i) decodes element i (row-major) to f32.
// f16/bf16 are packed two per u32 (element 2j in the low half); decoding needs no shader-f16. W_TERNARY: 2-bit codes
// (t + 1) packed 16 per u32, element i in bits 2(i % 16) of word i / 16.
// W2_BINDING, W3_BINDING: further matrices of the same dtype (a gated MLP's up projection beside its gate, or the
// rest of a row-wise stack of projections), read by weight_at(i, 1u) and weight_at(i, 2u).
// W_QUADS: the matrices are bound as 16-byte quads of stored words, so a kernel that takes four consecutive words
// loads them at once (stored_at). On CPU adapters every invocation's load costs the same whatever its width, so this
// quarters the load work of a matrix-vector product (docs/perf.md, session 8). Rows must hold whole quads.
#if W_QUADS
alias Stored = vec4<{{W_ELEM}}>;
#else
alias Stored = {{W_ELEM}};
#endif
@group(0) @binding({{W_BINDING}}) var<storage, read> w: array<Stored>;
#if W2_BINDING
@group(0) @binding({{W2_BINDING}}) var<storage, read> w2: array<Stored>;
#endif
#if W3_BINDING
@group(0) @binding({{W3_BINDING}}) var<storage, read> w3: array<Stored>;
#endif

// Elements per stored word (W_EPW: 1 for f32, 2 for f16 and bf16, 16 for ternary codes).
const EPW: u32 = {{W_EPW}}u;

// The index of the stored word holding element i.
fn word_of(i: u32) -> u32 {
    return i / EPW;
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

// Stored unit j (a word, or with W_QUADS the quad of words 4j .. 4j + 3) of matrix `which` (0: w, 1: w2, 2: w3).
fn stored_at(j: u32, which: u32) -> Stored {
#if W2_BINDING
    if (which == 1u) {
        return w2[j];
    }
#endif
#if W3_BINDING
    if (which == 2u) {
        return w3[j];
    }
#endif
    return w[j];
}

// Stored word j of matrix `which`; decode(word, e) reads its element e.
fn word_at(j: u32, which: u32) -> {{W_ELEM}} {
#if W_QUADS
    return stored_at(j / 4u, which)[j % 4u];
#else
    return stored_at(j, which);
#endif
}

fn w_at(i: u32) -> f32 {
    return decode(word_at(word_of(i), 0u), i);
}

// Element i of matrix `which` (0: w, 1: w2, 2: w3).
fn weight_at(i: u32, which: u32) -> f32 {
    return decode(word_at(word_of(i), which), i);
}
