//! Feature maps of linear attention, per head of `d` channels (rows of `[.., d]` in, `[.., features]` out), and the
//! normalised causal linear attention they feed in Based and Hedgehog, written as the quadratic form
//! `y_t = Σ_{s<=t} (φq_t·φk_s) v_s / (Σ_{s<=t} φq_t·φk_s + 1e-12)` (the model runs the recurrence instead).

use super::linear::linear;

/// Added to the normaliser, as HazyResearch's Based does.
pub const NORMALIZER_EPS: f32 = 1e-12;

/// fla's `elementwise_product` map: `(W1 x + b1) ⊙ (W2 x + b2)`.
pub fn hadamard(x: &[f32], w1: &[f32], b1: &[f32], w2: &[f32], b2: &[f32], d: usize) -> Vec<f32> {
    let a = linear(x, w1, Some(b1), d, d);
    let b = linear(x, w2, Some(b2), d, d);
    a.iter().zip(&b).map(|(x, y)| x * y).collect()
}

/// Based's Taylor map `[1, x/d^¼, x_i²/(√2 √d), x_i x_j/√d (i<j)]`, so `φ(q)·φ(k) = 1 + s + s²/2`, `s = q·k/√d`.
pub fn taylor(x: &[f32], d: usize) -> Vec<f32> {
    let (root, quarter) = ((d as f32).sqrt(), (d as f32).powf(0.25));
    let mut out = Vec::new();
    for row in x.chunks_exact(d) {
        out.push(1.0);
        out.extend(row.iter().map(|v| v / quarter));
        out.extend(row.iter().map(|v| v * v / (std::f32::consts::SQRT_2 * root)));
        for i in 0..d {
            out.extend(row[i + 1..].iter().map(|v| row[i] * v / root));
        }
    }
    out
}

/// Hedgehog's map: `softmax([2y, -2y])` with `y = W x + b`, `2d` features.
pub fn hedgehog(x: &[f32], w: &[f32], b: &[f32], d: usize) -> Vec<f32> {
    let y = linear(x, w, Some(b), d, d);
    let mut out = Vec::new();
    for row in y.chunks_exact(d) {
        let both: Vec<f32> = row.iter().map(|v| 2.0 * v).chain(row.iter().map(|v| -2.0 * v)).collect();
        let max = both.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let e: Vec<f32> = both.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = e.iter().sum();
        out.extend(e.iter().map(|v| v / sum));
    }
    out
}

/// Normalised causal linear attention over feature-mapped `q`, `k` `[T, heads, f]` and `v` `[T, heads, dv]`.
pub fn normalized(q: &[f32], k: &[f32], v: &[f32], heads: usize, f: usize, dv: usize) -> Vec<f32> {
    let t_len = q.len() / (heads * f);
    let mut out = vec![0.0; t_len * heads * dv];
    for h in 0..heads {
        for t in 0..t_len {
            let qt = &q[(t * heads + h) * f..][..f];
            let mut den = NORMALIZER_EPS;
            let o = &mut out[(t * heads + h) * dv..][..dv];
            for s in 0..=t {
                let a: f32 = qt.iter().zip(&k[(s * heads + h) * f..][..f]).map(|(x, y)| x * y).sum();
                den += a;
                for (o, x) in o.iter_mut().zip(&v[(s * heads + h) * dv..][..dv]) {
                    *o += a * x;
                }
            }
            o.iter_mut().for_each(|x| *x /= den);
        }
    }
    out
}

/// Appends the normaliser's column of ones to each value head: `[T, heads, dv]` to `[T, heads, dv + 1]`, so the
/// recurrence carries `Σφ(k)` beside `Σφ(k) v^T`.
pub fn with_ones(v: &[f32], dv: usize) -> Vec<f32> {
    v.chunks_exact(dv).flat_map(|head| head.iter().copied().chain([1.0])).collect()
}

/// Divides each head's carried values by its last column (the normaliser), dropping that column.
pub fn divide(carried: &[f32], dv: usize) -> Vec<f32> {
    carried.chunks_exact(dv + 1).flat_map(|head| head[..dv].iter().map(|x| x / (head[dv] + NORMALIZER_EPS))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gla::{recurrent, Dims};

    fn rand(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn taylor_features_give_the_second_order_expansion_of_exp() {
        let d = 5;
        let (q, k) = (rand(d, 1), rand(d, 7));
        let s = q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt();
        let (fq, fk) = (taylor(&q, d), taylor(&k, d));
        assert_eq!(fq.len(), 1 + d + d * (d + 1) / 2);
        let dot: f32 = fq.iter().zip(&fk).map(|(a, b)| a * b).sum();
        assert!((dot - (1.0 + s + s * s / 2.0)).abs() < 1e-5, "{dot} vs {}", 1.0 + s + s * s / 2.0);
    }

    #[test]
    fn hedgehog_features_are_a_distribution_over_twice_the_channels() {
        let d = 3;
        let mut w = vec![0.0; d * d];
        (0..d).for_each(|i| w[i * d + i] = 1.0);
        let x = [0.5, -1.0, 0.0];
        let f = hedgehog(&x, &w, &[0.0; 3], d);
        assert_eq!(f.len(), 2 * d);
        assert!((f.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((f[0] / f[3] - 2.0f32.exp()).abs() < 1e-4, "softmax of [2x, -2x]: {f:?}");
    }

    #[test]
    fn the_recurrence_with_a_ones_column_is_the_normalised_form() {
        let (heads, d, dv, t) = (2, 3, 4, 6);
        let (q, k) = (taylor(&rand(t * heads * d, 3), d), taylor(&rand(t * heads * d, 11), d));
        let v = rand(t * heads * dv, 5);
        let f = 1 + d + d * (d + 1) / 2;
        let want = normalized(&q, &k, &v, heads, f, dv);
        let dims = Dims { heads, dk: f, dv: dv + 1, scale: 1.0 };
        let mut state = vec![0.0; heads * f * (dv + 1)];
        let carried = recurrent(&q, &k, &with_ones(&v, dv), &vec![0.0; q.len()], &mut state, &dims);
        let got = divide(&carried, dv);
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "{got:?} vs {want:?}");
    }
}
