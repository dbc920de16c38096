// The activations that gated kernels name through their ACT define (WGSL has tanh built in).
fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

fn identity(x: f32) -> f32 {
    return x;
}

fn relu2(x: f32) -> f32 {
    let r = max(x, 0.0);
    return r * r;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn gelu_tanh(x: f32) -> f32 {
    let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    // tanh via exp, stable for large |u|
    let e = exp(-2.0 * abs(u));
    let t = sign(u) * (1.0 - e) / (1.0 + e);
    return 0.5 * x * (1.0 + t);
}
