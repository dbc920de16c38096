//! Gated Slot Attention (fla `GatedSlotAttention`), token by token: two gated linear-attention passes over
//! `M` memory slots sharing the forget gate `g` (log, per slot) and the slot write strength `s = 1 - exp(g)`.
//! Pass 1 (decay along its value channels, the slots): `Hk = Hk diag(exp g) + k s^T`, `a = softmax(Hk^T q scale)`;
//! pass 2 (decay along its key channels, the slots): `Hv = diag(exp g) Hv + s v^T`, `o = Hv^T a`.
//! States `[heads, K, M]` then `[heads, M, V]`, one after the other.

/// Head layout of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    /// Heads.
    pub heads: usize,
    /// Channels per key head.
    pub dk: usize,
    /// Channels per value head.
    pub dv: usize,
    /// Memory slots per head.
    pub slots: usize,
    /// Multiplier of q.
    pub scale: f32,
}

impl Dims {
    /// f32 values of the two states.
    pub fn state_len(&self) -> usize {
        self.heads * self.slots * (self.dk + self.dv)
    }
}

/// Runs both passes over q, k `[T, heads, dk]`, v `[T, heads, dv]` and log gates g `[T, heads, slots]`, advancing
/// `state` (`[heads, dk, slots]` then `[heads, slots, dv]`). Out `[T, heads, dv]`.
pub fn recurrent(q: &[f32], k: &[f32], v: &[f32], g: &[f32], state: &mut [f32], d: &Dims) -> Vec<f32> {
    let (h, kd, vd, m) = (d.heads, d.dk, d.dv, d.slots);
    let tokens = g.len() / (h * m);
    let (hk, hv) = state.split_at_mut(h * kd * m);
    let mut out = vec![0.0; tokens * h * vd];
    for t in 0..tokens {
        for head in 0..h {
            let gt = &g[(t * h + head) * m..][..m];
            let qt = &q[(t * h + head) * kd..][..kd];
            let kt = &k[(t * h + head) * kd..][..kd];
            let vt = &v[(t * h + head) * vd..][..vd];
            let sk = &mut hk[head * kd * m..][..kd * m];
            let mut scores = vec![0.0f32; m];
            for i in 0..kd {
                for j in 0..m {
                    let e = &mut sk[i * m + j];
                    *e = *e * gt[j].exp() + kt[i] * (1.0 - gt[j].exp());
                    scores[j] += *e * qt[i] * d.scale;
                }
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f32 = scores.iter().map(|s| (s - max).exp()).sum();
            let attn: Vec<f32> = scores.iter().map(|s| (s - max).exp() / total).collect();
            let sv = &mut hv[head * m * vd..][..m * vd];
            for j in 0..m {
                let decay = gt[j].exp();
                for c in 0..vd {
                    let e = &mut sv[j * vd + c];
                    *e = *e * decay + (1.0 - decay) * vt[c];
                }
            }
            for c in 0..vd {
                out[(t * h + head) * vd + c] = (0..m).map(|j| sv[j * vd + c] * attn[j]).sum();
            }
        }
    }
    out
}
