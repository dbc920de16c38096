//! HGRN2's gates, which turn its projections into GLA inputs; the recurrence itself is `reference::gla`.

/// Per-layer lower bounds from the model's `lower_bounds` `[layers, width]`: softmax over layers, cumulative sum,
/// minus the first row (so layer 0 is unbounded). Returns row `layer`.
pub fn lower_bound(table: &[f32], layers: usize, layer: usize) -> Vec<f32> {
    let width = table.len() / layers;
    (0..width)
        .map(|c| {
            let col: Vec<f32> = (0..layers).map(|l| table[l * width + c]).collect();
            let max = col.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = col.iter().map(|x| (x - max).exp()).collect();
            let total: f32 = e.iter().sum();
            let cum: f32 = e[..=layer].iter().sum::<f32>() / total;
            cum - e[0] / total
        })
        .collect()
}

/// From raw q and forget logits f (same layout), returns `(silu(q), 1 - exp(g), g)` with
/// `g = logsigmoid(f)`, raised to `log(lb + (1 - lb) exp(g))` when a lower bound is given (per channel, cycling).
pub fn gates(q: &[f32], f: &[f32], lower_bound: Option<&[f32]>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let q = q.iter().map(|&x| x / (1.0 + (-x).exp())).collect();
    let g: Vec<f32> = f
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let g = x.min(0.0) - (-x.abs()).exp().ln_1p();
            match lower_bound {
                Some(lb) => {
                    let b = lb[i % lb.len()];
                    (b + (1.0 - b) * g.exp()).ln()
                }
                None => g,
            }
        })
        .collect();
    let k = g.iter().map(|g| 1.0 - g.exp()).collect();
    (q, k, g)
}
