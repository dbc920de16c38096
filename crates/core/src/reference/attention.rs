//! Softmax attention with grouped-query heads over a KV cache, causal with an optional sliding window.

/// Attention for `q` [tokens, n_heads, head_dim] at positions `pos0..pos0+tokens` against the cache
/// `k`, `v` [positions, n_kv_heads, head_dim] (holding at least `pos0 + tokens` positions).
/// Query at position p sees keys j with `j <= p` and, with a window W, `p - j < W`. Out: [tokens, n_heads * head_dim].
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pos0: usize,
    window: Option<usize>,
    scale: f32,
) -> Vec<f32> {
    attention_qk_v(q, k, v, (n_heads, n_kv_heads), (head_dim, head_dim), pos0, window, scale)
}

/// [`attention`] with query/key heads of `qk_dim` and value heads of `v_dim` channels (MLA). Out:
/// `[tokens, n_heads * v_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_qk_v(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (n_heads, n_kv_heads): (usize, usize),
    (head_dim, v_dim): (usize, usize),
    pos0: usize,
    window: Option<usize>,
    scale: f32,
) -> Vec<f32> {
    let tokens = q.len() / (n_heads * head_dim);
    let group = n_heads / n_kv_heads;
    let mut out = vec![0.0f32; tokens * n_heads * v_dim];
    for t in 0..tokens {
        let p = pos0 + t;
        for h in 0..n_heads {
            let kvh = h / group;
            let qh = &q[(t * n_heads + h) * head_dim..][..head_dim];
            let (first, weights) = attention_weights(qh, k, (n_kv_heads, kvh), p, window, scale);
            let o = &mut out[(t * n_heads + h) * v_dim..][..v_dim];
            for (j, w) in (first..=p).zip(&weights) {
                let vj = &v[(j * n_kv_heads + kvh) * v_dim..][..v_dim];
                for (od, vd) in o.iter_mut().zip(vj) {
                    *od += w * vd;
                }
            }
        }
    }
    out
}

/// The attention weights of one query head `qh` at position `p` over the keys of kv head `kvh` in `k`
/// [positions, n_kv_heads, qh.len()]: the first key it sees (`p + 1 - W` with a window W, else 0) and the softmax
/// over keys `first..=p`.
pub fn attention_weights(
    qh: &[f32],
    k: &[f32],
    (n_kv_heads, kvh): (usize, usize),
    p: usize,
    window: Option<usize>,
    scale: f32,
) -> (usize, Vec<f32>) {
    let d = qh.len();
    let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
    let scores: Vec<f32> = (first..=p)
        .map(|j| qh.iter().zip(&k[(j * n_kv_heads + kvh) * d..][..d]).map(|(a, b)| a * b).sum::<f32>() * scale)
        .collect();
    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    (first, exps.iter().map(|e| e / total).collect())
}
