//! Short causal depthwise convolution over time, optionally followed by SiLU (the q/k/v conv of linear-attention
//! layers uses it; LFM2's gated convolution does not).

use super::mlp::activate;
use crate::spec::Activation;

/// `y[t, c] = act(b[c] + sum_i w[c, i] * x[t - (K-1) + i, c])` for x `[T, C]`, w `[C, K]`, an optional bias `b`,
/// act = SiLU when `silu`. Inputs before t = 0 come from `state` `[C, K-1]` (oldest first), which is updated to the
/// last K-1 inputs.
pub fn short_conv(
    x: &[f32],
    (w, bias): (&[f32], Option<&[f32]>),
    state: &mut [f32],
    channels: usize,
    kernel: usize,
    silu: bool,
) -> Vec<f32> {
    let t_len = x.len() / channels;
    let hist = kernel - 1;
    let input = |s: isize, c: usize, state: &[f32]| {
        if s >= 0 {
            x[s as usize * channels + c]
        } else {
            state[c * hist + (hist as isize + s) as usize]
        }
    };
    let mut y = vec![0.0; x.len()];
    for t in 0..t_len {
        for c in 0..channels {
            let mut acc = bias.map_or(0.0, |b| b[c]);
            for i in 0..kernel {
                acc += w[c * kernel + i] * input(t as isize - hist as isize + i as isize, c, state);
            }
            y[t * channels + c] = if silu { activate(Activation::Silu, acc) } else { acc };
        }
    }
    let new_state: Vec<f32> = (0..channels)
        .flat_map(|c| (0..hist).map(move |j| (c, t_len as isize - hist as isize + j as isize)))
        .map(|(c, s)| input(s, c, state))
        .collect();
    state.copy_from_slice(&new_state);
    y
}
