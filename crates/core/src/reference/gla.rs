//! Gated Linear Attention, twice: the recurrence and the chunkwise form (chunk 64) the prefill kernel uses.
//! State `[heads, dk, dv]`; decay per key channel.

/// Tokens per chunk of the chunkwise form.
pub const CHUNK: usize = 64;

/// Head layout of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    /// Heads.
    pub heads: usize,
    /// Channels per key head.
    pub dk: usize,
    /// Channels per value head.
    pub dv: usize,
    /// Multiplier of q: `dk^-0.5` (GLA and its relatives) or 1 (Lightning, Mamba2).
    pub scale: f32,
}

impl Dims {
    /// Heads of `dk`/`dv` channels with the usual `dk^-0.5` query scale.
    pub fn new(heads: usize, dk: usize, dv: usize) -> Self {
        Dims { heads, dk, dv, scale: (dk as f32).powf(-0.5) }
    }
}

/// Per-channel log decay from the raw gate logits: `logsigmoid(x) / normalizer`.
pub fn log_decay(gk: &[f32], normalizer: f32) -> Vec<f32> {
    gk.iter().map(|&x| (x.min(0.0) - (-x.abs()).exp().ln_1p()) / normalizer).collect()
}

/// `S = diag(exp(g)) S + k v^T; o = S^T q scale`. q, k, g `[T, heads, dk]`; v `[T, heads, dv]`.
pub fn recurrent(q: &[f32], k: &[f32], v: &[f32], g: &[f32], state: &mut [f32], d: &Dims) -> Vec<f32> {
    let t_len = q.len() / (d.heads * d.dk);
    let scale = d.scale;
    let mut out = vec![0.0; t_len * d.heads * d.dv];
    for h in 0..d.heads {
        let s = &mut state[h * d.dk * d.dv..][..d.dk * d.dv];
        for t in 0..t_len {
            let kb = (t * d.heads + h) * d.dk;
            let vb = (t * d.heads + h) * d.dv;
            for i in 0..d.dk {
                let decay = g[kb + i].exp();
                for j in 0..d.dv {
                    s[i * d.dv + j] = s[i * d.dv + j] * decay + k[kb + i] * v[vb + j];
                }
            }
            for j in 0..d.dv {
                out[vb + j] = (0..d.dk).map(|i| s[i * d.dv + j] * q[kb + i] * scale).sum();
            }
        }
    }
    out
}

/// Chunkwise: with G the within-chunk cumulative log decay per channel,
/// `O = (q ⊙ exp(G)) S + A V` where `A[i][j] = sum_d q_id k_jd exp(G_id - G_jd)` (j <= i), then
/// `S = exp(G_C) ⊙ S + (k ⊙ exp(G_C - G))^T V`. Same inputs and state as [`recurrent`].
pub fn chunked(q: &[f32], k: &[f32], v: &[f32], g: &[f32], state: &mut [f32], d: &Dims) -> Vec<f32> {
    let t_len = q.len() / (d.heads * d.dk);
    let (dk, dv) = (d.dk, d.dv);
    let scale = d.scale;
    let mut out = vec![0.0; t_len * d.heads * dv];
    for h in 0..d.heads {
        let s = &mut state[h * dk * dv..][..dk * dv];
        for c0 in (0..t_len).step_by(CHUNK) {
            let n = CHUNK.min(t_len - c0);
            let kb = |i: usize| ((c0 + i) * d.heads + h) * dk;
            let vb = |i: usize| ((c0 + i) * d.heads + h) * dv;
            let mut big_g = vec![0.0f32; n * dk];
            for c in 0..dk {
                let mut acc = 0.0;
                for i in 0..n {
                    acc += g[kb(i) + c];
                    big_g[i * dk + c] = acc;
                }
            }
            for i in 0..n {
                for j in 0..dv {
                    let inter: f32 =
                        (0..dk).map(|c| q[kb(i) + c] * scale * big_g[i * dk + c].exp() * s[c * dv + j]).sum();
                    let intra: f32 = (0..=i)
                        .map(|m| {
                            let a: f32 = (0..dk)
                                .map(|c| {
                                    q[kb(i) + c] * scale * k[kb(m) + c] * (big_g[i * dk + c] - big_g[m * dk + c]).exp()
                                })
                                .sum();
                            a * v[vb(m) + j]
                        })
                        .sum();
                    out[vb(i) + j] = inter + intra;
                }
            }
            for c in 0..dk {
                let last = big_g[(n - 1) * dk + c];
                for j in 0..dv {
                    let add: f32 = (0..n).map(|i| k[kb(i) + c] * (last - big_g[i * dk + c]).exp() * v[vb(i) + j]).sum();
                    s[c * dv + j] = last.exp() * s[c * dv + j] + add;
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

    #[test]
    fn chunked_equals_recurrent_across_chunk_boundaries() {
        let d = Dims::new(2, 8, 12);
        let mut rng = Rng::new(11);
        let mut r = |n: usize, s: f32| (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * s).collect::<Vec<f32>>();
        for t in [1, 63, 64, 65, 150] {
            let (q, k, v) = (r(t * 16, 1.0), r(t * 16, 1.0), r(t * 24, 1.0));
            let g = log_decay(&r(t * 16, 4.0), 16.0);
            let init = r(2 * 8 * 12, 0.5);
            let (mut s1, mut s2) = (init.clone(), init);
            let o1 = recurrent(&q, &k, &v, &g, &mut s1, &d);
            let o2 = chunked(&q, &k, &v, &g, &mut s2, &d);
            let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(diff(&o1, &o2) < 1e-4 && diff(&s1, &s2) < 1e-4, "T={t}");
        }
    }
}
