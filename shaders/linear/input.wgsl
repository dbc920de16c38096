// A linear-attention kernel's per-token input `inputs` at binding 2: vec4s with QUAD_INPUT, where every token's row
// and every head's channels start on a multiple of 4 floats (so four key channels are one 16-byte load, which CPU
// adapters serve far faster than four loads), else floats. Needs DK.
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

// Whether each of channels d0..d0 + 3 is below `width`.
fn channels_below(d0: u32, width: u32) -> vec4<bool> {
    return vec4<u32>(d0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(width);
}

// Key channels d0..d0 + 3 from input float i (that of channel d0), those past DK as 0.
fn key_quad(i: u32, d0: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), input_quad(i), channels_below(d0, DK));
}
