//! The gated delta rule (Gated DeltaNet), twice: the token-by-token recurrence and the chunkwise WY/UT form
//! (chunk 64) that prefill kernels use. Both take raw q/k (L2-normalised here, eps 1e-6; q scaled by dk^-0.5)
//! and carry a `[n_v_heads, dk, dv]` state, so a prefill can hand its state to decode.

/// Head layout of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Query/key heads.
    pub n_k_heads: usize,
    /// Value heads; value head h reads key head `h / (n_v_heads / n_k_heads)`.
    pub n_v_heads: usize,
    /// Channels per key head.
    pub dk: usize,
    /// Channels per value head.
    pub dv: usize,
}

/// Tokens per chunk of the chunkwise form.
pub const CHUNK: usize = 64;

/// `ln(1 + e^x)`, linear above 20 as torch computes it.
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Per-token, per-value-head log decay `g = -exp(A_log) * softplus(a + dt_bias)` and `beta = sigmoid(b)`,
/// from `a`, `b` `[T, n_v_heads]`.
pub fn gates(a: &[f32], b: &[f32], a_log: &[f32], dt_bias: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let hv = a_log.len();
    let g = a.iter().enumerate().map(|(i, &x)| -a_log[i % hv].exp() * softplus(x + dt_bias[i % hv])).collect();
    let beta = b.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
    (g, beta)
}

/// Kimi Delta Attention's per-channel log decay `g_t,h,d = -exp(A_log_h) * softplus(a_t,h,d + dt_bias_h,d)`, from
/// `a` `[T, n_v_heads * dk]`, `A_log` `[n_v_heads]` and `dt_bias` `[n_v_heads * dk]`.
pub fn channel_gates(a: &[f32], a_log: &[f32], dt_bias: &[f32]) -> Vec<f32> {
    let (width, dk) = (dt_bias.len(), dt_bias.len() / a_log.len());
    a.iter()
        .enumerate()
        .map(|(i, &x)| {
            let c = i % width;
            -a_log[c / dk].exp() * softplus(x + dt_bias[c])
        })
        .collect()
}

/// `A_log` that turns the decay off: `exp(-200)` underflows to exactly 0 in f32, so `g = -0 * softplus(..) = 0`
/// and plain DeltaNet runs through the same gates and kernels as Gated DeltaNet.
pub const NO_DECAY_A_LOG: f32 = -200.0;

/// `x / sqrt(sum x^2 + 1e-6) * scale`.
pub fn l2norm(x: &[f32], scale: f32) -> Vec<f32> {
    let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() + 1e-6).sqrt();
    x.iter().map(|v| v * inv * scale).collect()
}

/// Normalised (q, k) of token t for value head h.
fn qk(q: &[f32], k: &[f32], d: &Dims, t: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let kh = h / (d.n_v_heads / d.n_k_heads);
    let at = |x: &[f32]| x[(t * d.n_k_heads + kh) * d.dk..][..d.dk].to_vec();
    (l2norm(&at(q), 1.0 / (d.dk as f32).sqrt()), l2norm(&at(k), 1.0))
}

fn value<'a>(v: &'a [f32], d: &Dims, t: usize, h: usize) -> &'a [f32] {
    &v[(t * d.n_v_heads + h) * d.dv..][..d.dv]
}

/// The log decay: one value per (token, value head) (Gated DeltaNet) or per key channel too (Kimi Delta Attention).
#[derive(Clone, Copy, Debug)]
pub enum Decay<'a> {
    /// `[T, n_v_heads]`.
    PerHead(&'a [f32]),
    /// `[T, n_v_heads, dk]`.
    PerChannel(&'a [f32]),
}

impl Decay<'_> {
    fn at(&self, d: &Dims, t: usize, h: usize, c: usize) -> f32 {
        match *self {
            Decay::PerHead(g) => g[t * d.n_v_heads + h],
            Decay::PerChannel(g) => g[(t * d.n_v_heads + h) * d.dk + c],
        }
    }
}

/// Token-by-token: `S *= exp(g); S += k (beta (v - S^T k))^T; o = S^T q`. Inputs q, k `[T, n_k_heads, dk]`,
/// v `[T, n_v_heads, dv]`, beta `[T, n_v_heads]`; state `[n_v_heads, dk, dv]`. Out `[T, n_v_heads, dv]`.
pub fn recurrent(q: &[f32], k: &[f32], v: &[f32], g: Decay, beta: &[f32], state: &mut [f32], d: &Dims) -> Vec<f32> {
    let t_len = beta.len() / d.n_v_heads;
    let mut out = vec![0.0; t_len * d.n_v_heads * d.dv];
    for h in 0..d.n_v_heads {
        let s = &mut state[h * d.dk * d.dv..][..d.dk * d.dv];
        for t in 0..t_len {
            let (qn, kn) = qk(q, k, d, t, h);
            let b = beta[t * d.n_v_heads + h];
            for i in 0..d.dk {
                let decay = g.at(d, t, h, i).exp();
                s[i * d.dv..(i + 1) * d.dv].iter_mut().for_each(|x| *x *= decay);
            }
            let vt = value(v, d, t, h);
            for j in 0..d.dv {
                let kv: f32 = (0..d.dk).map(|i| s[i * d.dv + j] * kn[i]).sum();
                let delta = b * (vt[j] - kv);
                for i in 0..d.dk {
                    s[i * d.dv + j] += kn[i] * delta;
                }
                out[(t * d.n_v_heads + h) * d.dv + j] = (0..d.dk).map(|i| s[i * d.dv + j] * qn[i]).sum();
            }
        }
    }
    out
}

/// The chunkwise form: per chunk of [`CHUNK`] tokens, with `G` the within-chunk cumulative log decay per key
/// channel and `Γ_ij = exp(G_i - G_j)` (i >= j) applied channel-wise inside the products,
/// `T = (I + strictLower(diag(beta)(K Γ K^T)))^{-1}` by forward substitution, `U = T (beta v)`,
/// `W = T (beta k ⊙ exp(G))`, then across chunks `Vn = U - W S`, `O = (q ⊙ exp(G)) S + (q Γ k^T) Vn`,
/// `S = exp(G_C) ⊙ S + (k ⊙ exp(G_C - G))^T Vn`. Same inputs, state and output as [`recurrent`].
pub fn chunked(q: &[f32], k: &[f32], v: &[f32], g: Decay, beta: &[f32], state: &mut [f32], d: &Dims) -> Vec<f32> {
    let t_len = beta.len() / d.n_v_heads;
    let (dk, dv) = (d.dk, d.dv);
    let mut out = vec![0.0; t_len * d.n_v_heads * dv];
    for h in 0..d.n_v_heads {
        let s = &mut state[h * dk * dv..][..dk * dv];
        for c0 in (0..t_len).step_by(CHUNK) {
            let n = CHUNK.min(t_len - c0);
            let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..n).map(|i| qk(q, k, d, c0 + i, h)).collect();
            let bt: Vec<f32> = (0..n).map(|i| beta[(c0 + i) * d.n_v_heads + h]).collect();
            let mut big_g = vec![vec![0.0f32; dk]; n];
            for c in 0..dk {
                let mut acc = 0.0;
                for (i, gi) in big_g.iter_mut().enumerate() {
                    acc += g.at(d, c0 + i, h, c);
                    gi[c] = acc;
                }
            }
            // Σ_c a_c b_c exp(G_i,c - G_j,c), for i >= j (the exponent is <= 0 there).
            let decayed = |a: &[f32], b: &[f32], i: usize, j: usize| -> f32 {
                (0..dk).map(|c| a[c] * b[c] * (big_g[i][c] - big_g[j][c]).exp()).sum()
            };
            let mut a = vec![0.0f32; n * n];
            for i in 0..n {
                for j in 0..i {
                    a[i * n + j] = -bt[i] * decayed(&rows[i].1, &rows[j].1, i, j);
                }
            }
            for i in 1..n {
                let old: Vec<f32> = a[i * n..i * n + i].to_vec();
                for j in 0..i {
                    a[i * n + j] = old[j] + (j + 1..i).map(|m| old[m] * a[m * n + j]).sum::<f32>();
                }
            }
            for i in 0..n {
                a[i * n + i] = 1.0;
            }
            let u: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    (0..dv).map(|c| (0..=i).map(|j| a[i * n + j] * bt[j] * value(v, d, c0 + j, h)[c]).sum()).collect()
                })
                .collect();
            let w: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    (0..dk)
                        .map(|c| (0..=i).map(|j| a[i * n + j] * bt[j] * big_g[j][c].exp() * rows[j].1[c]).sum())
                        .collect()
                })
                .collect();
            let vn: Vec<Vec<f32>> = (0..n)
                .map(|i| (0..dv).map(|c| u[i][c] - (0..dk).map(|r| w[i][r] * s[r * dv + c]).sum::<f32>()).collect())
                .collect();
            for i in 0..n {
                let qi = &rows[i].0;
                for c in 0..dv {
                    let inter: f32 = (0..dk).map(|r| qi[r] * big_g[i][r].exp() * s[r * dv + c]).sum();
                    let intra: f32 = (0..=i).map(|j| decayed(qi, &rows[j].1, i, j) * vn[j][c]).sum();
                    out[((c0 + i) * d.n_v_heads + h) * dv + c] = inter + intra;
                }
            }
            let last = &big_g[n - 1];
            for r in 0..dk {
                for c in 0..dv {
                    let add: f32 = (0..n).map(|i| rows[i].1[r] * (last[r] - big_g[i][r]).exp() * vn[i][c]).sum();
                    s[r * dv + c] = last[r].exp() * s[r * dv + c] + add;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::Rng;

    fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * scale).collect()
    }

    #[test]
    fn no_decay_a_log_gives_exactly_zero_decay() {
        let (g, _) = gates(&[3.0, -25.0, 0.0], &[0.0; 3], &[NO_DECAY_A_LOG], &[0.5]);
        assert!(g.iter().all(|&x| x == 0.0), "{g:?}");
    }

    #[test]
    fn chunked_equals_recurrent_across_chunk_boundaries_and_hand_off() {
        let d = Dims { n_k_heads: 2, n_v_heads: 4, dk: 8, dv: 12 };
        let mut rng = Rng::new(9);
        for t in [1, 63, 64, 65, 150] {
            let q = random(&mut rng, t * 2 * 8, 1.0);
            let k = random(&mut rng, t * 2 * 8, 1.0);
            let v = random(&mut rng, t * 4 * 12, 1.0);
            let (g, beta) =
                gates(&random(&mut rng, t * 4, 2.0), &random(&mut rng, t * 4, 2.0), &[0.5, -1.0, 1.5, 0.0], &[0.1; 4]);
            let init = random(&mut rng, 4 * 8 * 12, 0.5);
            let (mut s1, mut s2) = (init.clone(), init.clone());
            let o1 = recurrent(&q, &k, &v, Decay::PerHead(&g), &beta, &mut s1, &d);
            let o2 = chunked(&q, &k, &v, Decay::PerHead(&g), &beta, &mut s2, &d);
            let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(diff(&o1, &o2) < 1e-4, "T={t}: outputs differ by {}", diff(&o1, &o2));
            assert!(diff(&s1, &s2) < 1e-4, "T={t}: states differ by {}", diff(&s1, &s2));
        }
    }

    #[test]
    fn per_channel_decay_chunked_equals_recurrent() {
        let d = Dims { n_k_heads: 2, n_v_heads: 2, dk: 8, dv: 5 };
        let mut rng = Rng::new(10);
        for t in [1, 64, 65, 130] {
            let q = random(&mut rng, t * 16, 1.0);
            let k = random(&mut rng, t * 16, 1.0);
            let v = random(&mut rng, t * 10, 1.0);
            let g: Vec<f32> = random(&mut rng, t * 16, 1.0).iter().map(|x| -x.abs() * 2.0).collect();
            let beta = random(&mut rng, t * 2, 0.5).iter().map(|x| x + 0.5).collect::<Vec<_>>();
            let init = random(&mut rng, 2 * 8 * 5, 0.5);
            let (mut s1, mut s2) = (init.clone(), init.clone());
            let o1 = recurrent(&q, &k, &v, Decay::PerChannel(&g), &beta, &mut s1, &d);
            let o2 = chunked(&q, &k, &v, Decay::PerChannel(&g), &beta, &mut s2, &d);
            let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(diff(&o1, &o2) < 1e-4 && diff(&s1, &s2) < 1e-4, "T={t}: {} / {}", diff(&o1, &o2), diff(&s1, &s2));
        }
    }
}
