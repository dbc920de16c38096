//! RWKV-7's generalised delta rule, twice: the recurrence and the chunkwise form (chunk 64) a prefill kernel uses,
//! plus the token shift both of its mixers read. State `[heads, dk, dv]`; decay per key channel.
//!
//! Recurrence, per head: `S_t = diag(e^{w_t}) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T`, `o_t = S_t^T r_t`.
//!
//! Chunkwise: with `G_t` the running sum of `w` inside the chunk (`G_{-1} = 0`) and `S_0` the state entering it,
//! `u_t = S_{t-1}^T a_t` satisfies
//! `u_t = S_0^T (e^{G_{t-1}} a_t) + sum_{s<t} [(a_t e^{G_{t-1}-G_s}) . b_s] u_s + [(a_t e^{G_{t-1}-G_s}) . k_s] v_s`,
//! a unit lower-triangular system solved by forward substitution. Then
//! `o_t = S_0^T (e^{G_t} r_t) + sum_{s<=t} [(r_t e^{G_t-G_s}) . b_s] u_s + [(r_t e^{G_t-G_s}) . k_s] v_s` and the
//! state leaving is `e^{G_last} S_0 + sum_s e^{G_last-G_s} (b_s u_s^T + k_s v_s^T)`. Every exponent is a decay
//! over a forward span (never positive), so nothing overflows.

/// Tokens per chunk of the chunkwise form.
pub const CHUNK: usize = 64;

/// RWKV-7's log-decay bound: `w = -e^{-1/2} sigmoid(.)`.
pub const DECAY_SCALE: f32 = 0.606_530_66;

/// Head layout of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    /// Heads.
    pub heads: usize,
    /// Key channels per head.
    pub dk: usize,
    /// Value channels per head.
    pub dv: usize,
}

/// Per-token inputs of the rule, each `[T, heads, dk]` except `v` `[T, heads, dv]`; `w` is the log decay.
pub struct Inputs<'a> {
    /// Receptance (the query).
    pub r: &'a [f32],
    /// Log decay per key channel.
    pub w: &'a [f32],
    /// Written key.
    pub k: &'a [f32],
    /// Written value.
    pub v: &'a [f32],
    /// Read-out vector of the low-rank term (`-kk`).
    pub a: &'a [f32],
    /// Write-back vector of the low-rank term (`kk * a`).
    pub b: &'a [f32],
}

/// The recurrence token by token; returns `o` `[T, heads, dv]` and advances `state`.
pub fn recurrent(x: &Inputs, state: &mut [f32], d: &Dims) -> Vec<f32> {
    let (hk, hv) = (d.heads * d.dk, d.heads * d.dv);
    let tokens = x.r.len() / hk;
    let mut o = vec![0.0; tokens * hv];
    let mut sa = vec![0.0; d.dv];
    for t in 0..tokens {
        for h in 0..d.heads {
            let s = &mut state[h * d.dk * d.dv..(h + 1) * d.dk * d.dv];
            let at = |x: &[f32], i: usize| x[t * hk + h * d.dk + i];
            sa.fill(0.0);
            for i in 0..d.dk {
                let a = at(x.a, i);
                sa.iter_mut().zip(&s[i * d.dv..(i + 1) * d.dv]).for_each(|(acc, sv)| *acc += a * sv);
            }
            let out = &mut o[t * hv + h * d.dv..t * hv + (h + 1) * d.dv];
            for i in 0..d.dk {
                let (decay, b, k, r) = (at(x.w, i).exp(), at(x.b, i), at(x.k, i), at(x.r, i));
                for j in 0..d.dv {
                    let sv = &mut s[i * d.dv + j];
                    *sv = *sv * decay + b * sa[j] + k * x.v[t * hv + h * d.dv + j];
                    out[j] += r * *sv;
                }
            }
        }
    }
    o
}

/// The chunkwise form (see the module notes); equal to [`recurrent`] up to rounding.
pub fn chunked(x: &Inputs, state: &mut [f32], d: &Dims) -> Vec<f32> {
    let (hk, hv) = (d.heads * d.dk, d.heads * d.dv);
    let tokens = x.r.len() / hk;
    let mut o = vec![0.0; tokens * hv];
    for h in 0..d.heads {
        let s0 = &mut state[h * d.dk * d.dv..(h + 1) * d.dk * d.dv];
        for c0 in (0..tokens).step_by(CHUNK) {
            let n = CHUNK.min(tokens - c0);
            let row = |x: &[f32], t: usize| x[(c0 + t) * hk + h * d.dk..(c0 + t) * hk + (h + 1) * d.dk].to_vec();
            let vrow = |t: usize| &x.v[(c0 + t) * hv + h * d.dv..(c0 + t) * hv + (h + 1) * d.dv];
            // Running log decay G_t, inclusive.
            let mut g = vec![vec![0.0f32; d.dk]; n];
            for t in 0..n {
                let w = row(x.w, t);
                for i in 0..d.dk {
                    g[t][i] = w[i] + if t > 0 { g[t - 1][i] } else { 0.0 };
                }
            }
            let before = |t: usize, i: usize| if t > 0 { g[t - 1][i] } else { 0.0 };
            // S_0^T y for a key-space vector y.
            let read = |y: &[f32]| -> Vec<f32> {
                let mut out = vec![0.0; d.dv];
                for (i, &yi) in y.iter().enumerate() {
                    out.iter_mut().zip(&s0[i * d.dv..(i + 1) * d.dv]).for_each(|(o, s)| *o += yi * s);
                }
                out
            };
            let dot = |p: &[f32], q: &[f32], gp: &dyn Fn(usize) -> f32, s: usize| -> f32 {
                (0..d.dk).map(|i| p[i] * q[i] * (gp(i) - g[s][i]).exp()).sum()
            };
            let mut u: Vec<Vec<f32>> = Vec::with_capacity(n);
            for t in 0..n {
                let a = row(x.a, t);
                let scaled: Vec<f32> = (0..d.dk).map(|i| a[i] * before(t, i).exp()).collect();
                let mut ut = read(&scaled);
                for (s, us) in u.iter().enumerate() {
                    let (mab, mak) =
                        (dot(&a, &row(x.b, s), &|i| before(t, i), s), dot(&a, &row(x.k, s), &|i| before(t, i), s));
                    for (j, o) in ut.iter_mut().enumerate() {
                        *o += mab * us[j] + mak * vrow(s)[j];
                    }
                }
                u.push(ut);
            }
            for t in 0..n {
                let r = row(x.r, t);
                let scaled: Vec<f32> = (0..d.dk).map(|i| r[i] * g[t][i].exp()).collect();
                let mut ot = read(&scaled);
                for (s, us) in u.iter().enumerate().take(t + 1) {
                    let (nrb, nrk) = (dot(&r, &row(x.b, s), &|i| g[t][i], s), dot(&r, &row(x.k, s), &|i| g[t][i], s));
                    for (j, o) in ot.iter_mut().enumerate() {
                        *o += nrb * us[j] + nrk * vrow(s)[j];
                    }
                }
                o[(c0 + t) * hv + h * d.dv..(c0 + t) * hv + (h + 1) * d.dv].copy_from_slice(&ot);
            }
            let last = g[n - 1].clone();
            let mut next: Vec<f32> = (0..d.dk * d.dv).map(|e| s0[e] * last[e / d.dv].exp()).collect();
            for s in 0..n {
                let (b, k) = (row(x.b, s), row(x.k, s));
                for i in 0..d.dk {
                    let decay = (last[i] - g[s][i]).exp();
                    for j in 0..d.dv {
                        next[i * d.dv + j] += decay * (b[i] * u[s][j] + k[i] * vrow(s)[j]);
                    }
                }
            }
            s0.copy_from_slice(&next);
        }
    }
    o
}

/// The rule's inputs from the raw projections (`[T, heads * dk]` each): log decay `w = -e^{-1/2} sigmoid(w_raw)`,
/// `a' = sigmoid(a_raw)`, `kk = l2norm(k * k_k)` per head, the written key `k (1 + (a' - 1) k_a)`, the read-out
/// vector `-kk` and the write-back vector `kk a'`. Returns `(w, k, a, b)`.
pub fn prepare(
    w_raw: &[f32],
    k: &[f32],
    a_raw: &[f32],
    [k_k, k_a]: [&[f32]; 2],
    dk: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    let w = w_raw.iter().map(|&x| -DECAY_SCALE * sigmoid(x)).collect();
    let a_gate: Vec<f32> = a_raw.iter().map(|&x| sigmoid(x)).collect();
    let mut kk: Vec<f32> = k.iter().zip(k_k.iter().cycle()).map(|(k, s)| k * s).collect();
    for head in kk.chunks_exact_mut(dk) {
        let norm = head.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        head.iter_mut().for_each(|x| *x /= norm);
    }
    let k = k.iter().zip(&a_gate).zip(k_a.iter().cycle()).map(|((k, a), ka)| k * (1.0 + (a - 1.0) * ka)).collect();
    let (a, b) = kk.iter().zip(&a_gate).map(|(kk, a)| (-kk, kk * a)).unzip();
    (w, k, a, b)
}

/// Values after layer 0: `v + (v_first - v) sigmoid(v_mix)`.
pub fn mix_values(v: &mut [f32], v_first: &[f32], v_mix: &[f32]) {
    for ((v, first), m) in v.iter_mut().zip(v_first).zip(v_mix) {
        *v += (first - *v) / (1.0 + (-m).exp());
    }
}

/// The mixer's output before `o_proj`: per head, the group norm of `o` (`norm_w`, `norm_b` over all values), plus
/// `sum(r k r_k)` times the head's values, times `gate`.
pub fn finish(
    o: &[f32],
    [r, k, v, gate]: [&[f32]; 4],
    [norm_w, norm_b, r_k]: [&[f32]; 3],
    d: &Dims,
    eps: f32,
) -> Vec<f32> {
    let mut out = super::norm::layer_norm(o, norm_w, Some(norm_b), d.dv, eps);
    let (hk, hv) = (d.heads * d.dk, d.heads * d.dv);
    for t in 0..o.len() / hv {
        for h in 0..d.heads {
            let keys = t * hk + h * d.dk..t * hk + (h + 1) * d.dk;
            let bonus: f32 =
                r[keys.clone()].iter().zip(&k[keys]).zip(&r_k[h * d.dk..]).map(|((r, k), w)| r * k * w).sum();
            for j in t * hv + h * d.dv..t * hv + (h + 1) * d.dv {
                out[j] = (out[j] + bonus * v[j]) * gate[j];
            }
        }
    }
    out
}

/// The previous token's row for each row of `x` (`[T, width]`): `prev` for the first, which then holds the last.
pub fn token_shift(x: &[f32], prev: &mut [f32]) -> Vec<f32> {
    let width = prev.len();
    let mut shifted = Vec::with_capacity(x.len());
    shifted.extend_from_slice(prev);
    shifted.extend_from_slice(&x[..x.len() - width]);
    prev.copy_from_slice(&x[x.len() - width..]);
    shifted
}

/// `x + (shifted - x) * mu`, `mu` one value per channel.
pub fn shift_mix(x: &[f32], shifted: &[f32], mu: &[f32]) -> Vec<f32> {
    x.iter().zip(shifted).zip(mu.iter().cycle()).map(|((x, s), m)| x + (s - x) * m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: &mut u64, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((*seed >> 33) as f32 / (1u64 << 31) as f32)
            })
            .collect()
    }

    #[test]
    fn chunked_form_equals_the_recurrence_across_chunk_borders() {
        let d = Dims { heads: 2, dk: 8, dv: 6 };
        let mut seed = 7;
        for tokens in [1, 63, 64, 65, 150] {
            let hk = tokens * d.heads * d.dk;
            let (r, k) = (rand(hk, &mut seed, -1.0, 1.0), rand(hk, &mut seed, -1.0, 1.0));
            let w = rand(hk, &mut seed, -DECAY_SCALE, 0.0);
            let kk = rand(hk, &mut seed, -0.5, 0.5);
            let gate = rand(hk, &mut seed, 0.0, 1.0);
            let (a, b): (Vec<f32>, Vec<f32>) = kk.iter().zip(&gate).map(|(kk, g)| (-kk, kk * g)).unzip();
            let v = rand(tokens * d.heads * d.dv, &mut seed, -1.0, 1.0);
            let x = Inputs { r: &r, w: &w, k: &k, v: &v, a: &a, b: &b };
            let start = rand(d.heads * d.dk * d.dv, &mut seed, -0.5, 0.5);
            let (mut s1, mut s2) = (start.clone(), start);
            let (o1, o2) = (recurrent(&x, &mut s1, &d), chunked(&x, &mut s2, &d));
            let diff = |p: &[f32], q: &[f32]| p.iter().zip(q).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(
                diff(&o1, &o2) < 1e-4 && diff(&s1, &s2) < 1e-4,
                "T={tokens}: {} {}",
                diff(&o1, &o2),
                diff(&s1, &s2)
            );
        }
    }

    #[test]
    fn token_shift_carries_the_last_row() {
        let mut prev = vec![9.0, 8.0];
        assert_eq!(token_shift(&[1.0, 2.0, 3.0, 4.0], &mut prev), vec![9.0, 8.0, 1.0, 2.0]);
        assert_eq!(prev, vec![3.0, 4.0]);
        assert_eq!(shift_mix(&[1.0, 2.0], &[3.0, 6.0], &[0.5, 0.25]), vec![2.0, 3.0]);
    }
}
