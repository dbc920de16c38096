//! Mamba2's selective scan, token by token: per head `S = exp(dt A) S + dt x B^T`, `y = S C + D x`, with
//! `dt = clamp(softplus(dt_raw + dt_bias))` and `A = -exp(A_log)`; state `[heads, N, P]` (the layout the GPU's GLA
//! kernels keep).

use super::gated_delta::softplus;

/// Head layout of one Mamba2 mixer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    /// SSM heads.
    pub heads: usize,
    /// Channels per head (`P`).
    pub head_dim: usize,
    /// Groups sharing `B` and `C` (head h reads group `h / (heads / groups)`).
    pub groups: usize,
    /// State size (`N`).
    pub state: usize,
    /// Bounds of `dt`.
    pub dt_limit: (f32, f32),
}

/// The scan as gated linear attention, per head: queries `C`, keys `B` (`[T, heads * N]`, groups expanded) and
/// per-channel log decays `dt A` (`[T, heads * N]`), so that before the `D` skip `y_t = Σ_s (C_t · decayed B_s)
/// (dt_s x_s)`. For the implicit attention map.
pub fn as_gated(xbc: &[f32], dt_raw: &[f32], params: &[f32], d: &Dims) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (h, p, n, g) = (d.heads, d.head_dim, d.state, d.groups);
    let inner = h * p;
    let width = inner + 2 * g * n;
    let tokens = dt_raw.len() / h;
    let (mut q, mut k, mut decay) = (Vec::new(), Vec::new(), Vec::new());
    for t in 0..tokens {
        let row = &xbc[t * width..(t + 1) * width];
        for hd in 0..h {
            let grp = hd / (h / g);
            k.extend_from_slice(&row[inner + grp * n..][..n]);
            q.extend_from_slice(&row[inner + g * n + grp * n..][..n]);
            let dt = softplus(dt_raw[t * h + hd] + params[h + hd]).clamp(d.dt_limit.0, d.dt_limit.1);
            decay.extend(std::iter::repeat_n(-params[hd].exp() * dt, n));
        }
    }
    (q, k, decay)
}

/// Runs the scan over `xbc` `[T, heads * P + 2 * groups * N]` (`[x | B | C]` after the conv) and `dt_raw` `[T, heads]`,
/// with `params` = `[A_log | dt_bias | D]` (each `[heads]`), advancing `state`. Out `[T, heads * P]`.
pub fn scan(xbc: &[f32], dt_raw: &[f32], params: &[f32], state: &mut [f32], d: &Dims) -> Vec<f32> {
    let (h, p, n, g) = (d.heads, d.head_dim, d.state, d.groups);
    let inner = h * p;
    let width = inner + 2 * g * n;
    let tokens = dt_raw.len() / h;
    let mut y = vec![0.0; tokens * inner];
    for t in 0..tokens {
        let row = &xbc[t * width..(t + 1) * width];
        for hd in 0..h {
            let grp = hd / (h / g);
            let (b, c) = (&row[inner + grp * n..][..n], &row[inner + g * n + grp * n..][..n]);
            let dt = softplus(dt_raw[t * h + hd] + params[h + hd]).clamp(d.dt_limit.0, d.dt_limit.1);
            let decay = (-params[hd].exp() * dt).exp();
            let s = &mut state[hd * n * p..(hd + 1) * n * p];
            for j in 0..p {
                let x = row[hd * p + j];
                let mut acc = 0.0;
                for i in 0..n {
                    let v = &mut s[i * p + j];
                    *v = *v * decay + dt * b[i] * x;
                    acc += *v * c[i];
                }
                y[t * inner + hd * p + j] = acc + params[2 * h + hd] * x;
            }
        }
    }
    y
}
