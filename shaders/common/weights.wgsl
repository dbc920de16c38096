// A weight matrix block in its stored dtype; w_at(i) decodes element i (row-major) to f32.
// f16/bf16 are packed two per u32 (element 2j in the low half); decoding needs no shader-f16. W_TERNARY: 2-bit codes
// (t + 1) packed 16 per u32, element i in bits 2(i % 16) of word i / 16.
@group(0) @binding({{W_BINDING}}) var<storage, read> w: array<{{W_ELEM}}>;

fn w_at(i: u32) -> f32 {
#if W_F32
    return w[i];
#endif
#if W_BF16
    let word = w[i >> 1u];
    if ((i & 1u) == 0u) {
        return bitcast<f32>(word << 16u);
    }
    return bitcast<f32>(word & 0xffff0000u);
#endif
#if W_F16
    return unpack2x16float(w[i >> 1u])[i & 1u];
#endif
#if W_TERNARY
    return f32((w[i >> 4u] >> ((i & 15u) * 2u)) & 3u) - 1.0;
#endif
}
