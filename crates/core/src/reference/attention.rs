//! Softmax attention with grouped-query heads over a KV cache, under an [`AttentionMask`] (causal or wider,
//! sliding window, sinks, Dual Triangle) and, for StreamingLLM, rotation by cache position.

use crate::reference::block_sparse::select_blocks;
use crate::reference::rope::rope;
use crate::spec::AttentionMask;

/// RoPE applied inside attention by cache position (StreamingLLM): queries and keys arrive unrotated; each query
/// and each key it sees is rotated by its index in the query's visible-key list.
#[derive(Clone, Copy, Debug)]
pub struct Rotation<'a> {
    /// cos table `[positions, rotary_dim / 2]`.
    pub cos: &'a [f32],
    /// sin table `[positions, rotary_dim / 2]`.
    pub sin: &'a [f32],
    /// Rotated leading channels of each head.
    pub rotary_dim: usize,
}

impl Rotation<'_> {
    fn at(&self, x: &[f32], position: usize) -> Vec<f32> {
        let mut x = x.to_vec();
        let d = x.len();
        rope(&mut x, 1, d, self.rotary_dim, position, self.cos, self.sin);
        x
    }
}

/// Attention for `q` [tokens, n_heads, head_dim] at positions `pos0..pos0+tokens` against the cache
/// `k`, `v` [positions, n_kv_heads, head_dim] (every position present so far). Out: [tokens, n_heads * head_dim].
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pos0: usize,
    mask: &AttentionMask,
    scale: f32,
) -> Vec<f32> {
    attention_qk_v(q, k, v, (n_heads, n_kv_heads), (head_dim, head_dim), pos0, mask, scale, None)
}

/// [`attention`] with query/key heads of `qk_dim` and value heads of `v_dim` channels (MLA; `v` is
/// `[positions, n_kv_heads, v_dim]`), optionally rotating by cache position. Out: `[tokens, n_heads * v_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_qk_v(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (n_heads, n_kv_heads): (usize, usize),
    (head_dim, v_dim): (usize, usize),
    pos0: usize,
    mask: &AttentionMask,
    scale: f32,
    rotation: Option<Rotation>,
) -> Vec<f32> {
    let tokens = q.len() / (n_heads * head_dim);
    let group = n_heads / n_kv_heads;
    let mut out = vec![0.0f32; tokens * n_heads * v_dim];
    for t in 0..tokens {
        let p = pos0 + t;
        for h in 0..n_heads {
            let kvh = h / group;
            let q_row = &q[t * n_heads * head_dim..][..n_heads * head_dim];
            let (keys, weights) = attention_weights(q_row, (n_heads, n_kv_heads, h), k, p, mask, scale, rotation);
            let o = &mut out[(t * n_heads + h) * v_dim..][..v_dim];
            for (j, w) in keys.into_iter().zip(&weights) {
                let vj = &v[(j * n_kv_heads + kvh) * v_dim..][..v_dim];
                for (od, vd) in o.iter_mut().zip(vj) {
                    *od += w * vd;
                }
            }
        }
    }
    out
}

/// The attention weights of query head `head` at position `p` (`q_row` holding every head's query,
/// `[n_heads, d]`) over the keys of its kv head in `k` `[positions, n_kv_heads, d]` (every position present): the
/// keys it sees and the softmax over them.
pub fn attention_weights(
    q_row: &[f32],
    (n_heads, n_kv_heads, head): (usize, usize, usize),
    k: &[f32],
    p: usize,
    mask: &AttentionMask,
    scale: f32,
    rotation: Option<Rotation>,
) -> (Vec<usize>, Vec<f32>) {
    let d = q_row.len() / n_heads;
    let qh = &q_row[head * d..][..d];
    let kvh = head / (n_heads / n_kv_heads);
    let end = k.len() / (n_kv_heads * d);
    let keys: Vec<usize> = match &mask.sparse {
        None => mask.keys(p, end).collect(),
        Some(cfg) => select_blocks(cfg, q_row, k, (n_heads, n_kv_heads, kvh), p, scale)
            .into_iter()
            .flat_map(|b| b * cfg.block..((b + 1) * cfg.block).min(p + 1))
            .collect(),
    };
    // Hybrid memory: keys past the window, weighted by the Taylor polynomial of their score.
    let seen = keys.len();
    let keys: Vec<usize> = keys.into_iter().chain(mask.absorbed(p)).collect();
    let q = match rotation {
        Some(r) => r.at(qh, mask.query_position(p)),
        None => qh.to_vec(),
    };
    let half = d / 2;
    let scores: Vec<f32> = keys
        .iter()
        .enumerate()
        .map(|(slot, &j)| {
            let kj = &k[(j * n_kv_heads + kvh) * d..][..d];
            let kj = match rotation {
                Some(r) => r.at(kj, slot),
                None => kj.to_vec(),
            };
            let dot = |range: std::ops::Range<usize>| q[range.clone()].iter().zip(&kj[range]).map(|(a, b)| a * b);
            let s: f32 = match (mask.dual_triangle, j.cmp(&p)) {
                (false, _) | (true, std::cmp::Ordering::Equal) => dot(0..d).sum(),
                (true, std::cmp::Ordering::Less) => dot(0..half).sum(),
                (true, std::cmp::Ordering::Greater) => dot(half..d).sum(),
            };
            s * scale
        })
        .collect();
    let max = scores[..seen].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| if i < seen { (s - max).exp() } else { (1.0 + s + s * s / 2.0) * (-max).exp() })
        .collect();
    let total: f32 = exps.iter().sum();
    (keys, exps.iter().map(|e| e / total).collect())
}

/// Differential attention (see `DifferentialSpec`): `q` `[tokens, n_heads, 2h]` and `k` `[positions, n_kv_heads, 2h]`
/// hold halves `[q1 | q2]`, `[k1 | k2]`; `v` is `[positions, n_kv_heads, 2h]`. Out `[tokens, n_heads * 2h]`:
/// `softmax(q1 k1^T s) v - λ softmax(q2 k2^T s) v`, each map under `mask`.
#[allow(clippy::too_many_arguments)]
pub fn differential(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (n_heads, n_kv_heads): (usize, usize),
    head_dim: usize,
    pos0: usize,
    mask: &AttentionMask,
    (scale, lambda): (f32, f32),
) -> Vec<f32> {
    let half = |x: &[f32], second: usize| -> Vec<f32> {
        x.chunks_exact(head_dim).flat_map(|row| row[second * head_dim / 2..][..head_dim / 2].to_vec()).collect()
    };
    let heads = (n_heads, n_kv_heads);
    let dims = (head_dim / 2, head_dim);
    let first = attention_qk_v(&half(q, 0), &half(k, 0), v, heads, dims, pos0, mask, scale, None);
    let second = attention_qk_v(&half(q, 1), &half(k, 1), v, heads, dims, pos0, mask, scale, None);
    first.iter().zip(&second).map(|(a, b)| a - lambda * b).collect()
}
