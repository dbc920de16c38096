//! Activations and the gated MLP's element-wise part.

use crate::spec::Activation;

/// The activation function applied to one value.
pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => {
            let c = (2.0 / std::f32::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Identity => x,
        Activation::Relu2 => x.max(0.0) * x.max(0.0),
        Activation::Tanh => x.tanh(),
    }
}

/// `act(gate) * up`, element-wise.
pub fn gated(act: Activation, gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| activate(act, g) * u).collect()
}
