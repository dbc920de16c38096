//! Mixture-of-experts routing: which experts a token runs and with what weights.

use crate::spec::RouterScoring;

/// How routing turns router logits into `(expert, weight)` pairs.
#[derive(Clone, Copy, Debug)]
pub struct Routing<'a> {
    /// Score function.
    pub scoring: RouterScoring,
    /// Bias added to scores for selection only.
    pub selection_bias: Option<&'a [f32]>,
    /// Experts selected per token.
    pub top_k: usize,
    /// Divide the selected scores by their sum.
    pub normalize: bool,
    /// Multiplier of the weights.
    pub scale: f32,
}

/// The `top_k` experts for one token's router `logits`, best first (ties to the lower index), with their weights.
pub fn route(logits: &[f32], r: &Routing) -> Vec<(usize, f32)> {
    let scores: Vec<f32> = match r.scoring {
        RouterScoring::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.iter().map(|v| v / sum).collect()
        }
        RouterScoring::Sigmoid => logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect(),
    };
    let select: Vec<f32> = match r.selection_bias {
        Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
        None => scores.clone(),
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| select[b].total_cmp(&select[a]).then(a.cmp(&b)));
    order.truncate(r.top_k);
    let total: f32 = order.iter().map(|&e| scores[e]).sum();
    let norm = if r.normalize { 1.0 / total } else { 1.0 };
    order.into_iter().map(|e| (e, scores[e] * norm * r.scale)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_top2_renormalised() {
        let r =
            Routing { scoring: RouterScoring::Softmax, selection_bias: None, top_k: 2, normalize: true, scale: 1.0 };
        let out = route(&[0.0, 2.0, 1.0, -1.0], &r);
        assert_eq!((out[0].0, out[1].0), (1, 2));
        let (a, b) = (2f32.exp(), 1f32.exp());
        assert!((out[0].1 - a / (a + b)).abs() < 1e-6 && (out[1].1 - b / (a + b)).abs() < 1e-6);
    }

    #[test]
    fn selection_bias_changes_the_choice_not_the_weight() {
        let bias = [0.0, 0.0, 5.0];
        let r = Routing {
            scoring: RouterScoring::Sigmoid,
            selection_bias: Some(&bias),
            top_k: 1,
            normalize: false,
            scale: 2.0,
        };
        let out = route(&[3.0, 1.0, -2.0], &r);
        assert_eq!(out[0].0, 2);
        assert!((out[0].1 - 2.0 / (1.0 + 2f32.exp())).abs() < 1e-6);
    }
}
