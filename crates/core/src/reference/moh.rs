//! Mixture-of-Head attention's per-token head weights (Jin et al., MoH; SkyworkAI/MoH): `S` shared heads always
//! on, the top `K` of the `H - S` routed heads on, their outputs weighted before the output projection.

/// Softmax of `x`.
fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let total: f32 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

/// The head weights `[heads]` of one token from its router logits `[routed | shared (when shared > 1) | 2]`:
/// routed heads get `softmax(routed)` kept on the top `top_k` (the earlier head on ties), renormalised and times
/// `top_k`; shared heads `softmax(shared) * shared` (ones when there is one); the two groups are scaled by
/// `2 * softmax(type)`. Shared heads come first.
pub fn head_weights(logits: &[f32], heads: usize, shared: usize, top_k: usize) -> Vec<f32> {
    let routed = heads - shared;
    let gates = softmax(&logits[..routed]);
    let mut order: Vec<usize> = (0..routed).collect();
    order.sort_by(|&a, &b| gates[b].total_cmp(&gates[a]).then(a.cmp(&b)));
    let kept = &order[..top_k.min(routed)];
    let total: f32 = kept.iter().map(|&i| gates[i]).sum();
    let mut routed_w = vec![0.0f32; routed];
    for &i in kept {
        routed_w[i] = gates[i] / total * top_k as f32;
    }
    let mut at = routed;
    let shared_w: Vec<f32> = match shared {
        0 | 1 => vec![shared as f32; shared],
        _ => {
            at += shared;
            softmax(&logits[routed..at]).iter().map(|g| g * shared as f32).collect()
        }
    };
    let kind = softmax(&logits[at..at + 2]);
    shared_w.iter().map(|w| 2.0 * kind[0] * w).chain(routed_w.iter().map(|w| 2.0 * kind[1] * w)).collect()
}

/// Router logits per token: routed, shared (when more than one) and the two head-type logits.
pub fn logit_width(heads: usize, shared: usize) -> usize {
    heads - shared + if shared > 1 { shared } else { 0 } + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_keep_shared_heads_and_the_top_routed() {
        // 2 shared + 4 routed heads, top 2: routed logits favour heads 3 and 1 (of the routed group).
        let logits = [0.1, 2.0, -1.0, 3.0, 0.5, 0.5, 0.0, 0.0];
        let w = head_weights(&logits, 6, 2, 2);
        assert_eq!(w.len(), 6);
        assert!((w[0] - 1.0).abs() < 1e-6 && (w[1] - 1.0).abs() < 1e-6, "even shared softmax x2 x type 0.5: {w:?}");
        assert_eq!((w[2], w[4]), (0.0, 0.0));
        assert!((w[3] + w[5] - 2.0).abs() < 1e-5, "kept routed weights sum to top_k x 2 x 0.5: {w:?}");
        assert!(w[5] > w[3]);
        assert_eq!(logit_width(6, 2), 8);
        assert_eq!(head_weights(&[0.0, 0.0, 5.0, 1.0, 1.0], 4, 1, 1)[0], 1.0, "one shared head weighs 1 x 2 x 0.5");
    }
}
