// A linear-attention kernel's per-token input `inputs` at binding 2: vec4s with QUAD_INPUT, where every token's row
// and every head's channels start on a multiple of 4 floats (so four key channels are one 16-byte load, which CPU
// adapters serve far faster than four loads), else floats.
#if QUAD_INPUT
@group(0) @binding(2) var<storage, read> inputs: array<vec4<f32>>;

fn input_at(i: u32) -> f32 {
    return inputs[i / 4u][i % 4u];
}

// Floats i..i + 3 (i a multiple of 4).
fn input_quad(i: u32) -> vec4<f32> {
    return inputs[i / 4u];
}
#else
@group(0) @binding(2) var<storage, read> inputs: array<f32>;

fn input_at(i: u32) -> f32 {
    return inputs[i];
}

// Floats i..i + 3.
fn input_quad(i: u32) -> vec4<f32> {
    return vec4<f32>(inputs[i], inputs[i + 1u], inputs[i + 2u], inputs[i + 3u]);
}
#endif
