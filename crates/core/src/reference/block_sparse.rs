//! InfLLM-V2 block selection (see [`BlockSparse`]), written plainly: pooled keys are recomputed from the cache
//! for every query.

use crate::spec::BlockSparse;

/// Mean of key rows `from..to` of kv head `kvh` in `k` `[positions, n_kv_heads, d]`.
fn mean_key(k: &[f32], (n_kv_heads, kvh): (usize, usize), d: usize, from: usize, to: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; d];
    for j in from..to {
        for (a, b) in m.iter_mut().zip(&k[(j * n_kv_heads + kvh) * d..][..d]) {
            *a += b;
        }
    }
    m.iter_mut().for_each(|x| *x /= (to - from) as f32);
    m
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The key blocks (ascending) the query heads of kv head `kvh` select at position `p`: `q_row` holds all heads'
/// queries `[n_heads, d]`, `k` the keys `[positions, n_kv_heads, d]`. Every block up to `p`'s when dense.
pub fn select_blocks(
    cfg: &BlockSparse,
    q_row: &[f32],
    k: &[f32],
    (n_heads, n_kv_heads, kvh): (usize, usize, usize),
    p: usize,
    scale: f32,
) -> Vec<usize> {
    let d = q_row.len() / n_heads;
    let blocks = p / cfg.block + 1;
    if cfg.dense(p) {
        return (0..blocks).collect();
    }
    let group = n_heads / n_kv_heads;
    let heads: Vec<&[f32]> = (kvh * group..(kvh + 1) * group).map(|h| &q_row[h * d..][..d]).collect();
    let coarse: Vec<Vec<f32>> = (0..cfg.coarse_windows(p))
        .map(|c| mean_key(k, (n_kv_heads, kvh), d, c * cfg.block, c * cfg.block + 2 * cfg.block))
        .collect();
    let lse: Vec<f32> = heads
        .iter()
        .map(|q| {
            let s: Vec<f32> = coarse.iter().map(|c| dot(q, c) * scale).collect();
            let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            m + s.iter().map(|x| (x - m).exp()).sum::<f32>().ln()
        })
        .collect();
    let fine: Vec<f32> = (0..cfg.fine_windows(p))
        .map(|i| {
            let key = mean_key(k, (n_kv_heads, kvh), d, i * cfg.stride(), i * cfg.stride() + cfg.kernel());
            heads.iter().zip(&lse).map(|(q, l)| (dot(q, &key) * scale - l).exp()).sum()
        })
        .collect();
    // Fine window i covers [i * block / 4, i * block / 4 + block / 2): it overlaps blocks (i - 3) / 4 ..= (i + 1) / 4,
    // so block b is overlapped by windows 4b - 1 ..= 4b + 3.
    let score = |b: usize| (4 * b).saturating_sub(1)..(4 * b + 4).min(fine.len());
    let mut candidates: Vec<(f32, usize)> = (0..blocks)
        .filter(|&b| !cfg.forced(b, p))
        .filter_map(|b| score(b).map(|i| fine[i]).reduce(f32::max).map(|s| (s, b)))
        .collect();
    // Highest score first; on a tie the earlier block.
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let dynamic = cfg.topk.saturating_sub(cfg.init_blocks);
    let mut chosen: Vec<usize> = (0..blocks).filter(|&b| cfg.forced(b, p)).collect();
    chosen.extend(candidates.iter().take(dynamic).map(|c| c.1));
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BlockSparse {
        BlockSparse { block: 8, init_blocks: 1, local_blocks: 2, topk: 3, dense_len: 24 }
    }

    #[test]
    fn selection_keeps_forced_blocks_and_the_best_others() {
        let (n_heads, n_kv, d) = (2, 1, 4);
        let positions = 80;
        // Keys point along channel 0 only in block 5 (positions 40..48); the queries look along channel 0.
        let mut k = vec![0.0f32; positions * d];
        for j in 40..48 {
            k[j * d] = 4.0;
        }
        let q = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let p = 79;
        let chosen = select_blocks(&cfg(), &q, &k, (n_heads, n_kv, 0), p, 1.0);
        // Block 0 (initial), 8 and 9 (local), then the two best others: block 5 first.
        assert!(chosen.contains(&5), "{chosen:?}");
        assert_eq!(chosen.len(), 1 + 2 + 2);
        assert!(chosen.starts_with(&[0]) && chosen.ends_with(&[8, 9]), "{chosen:?}");
        assert_eq!(select_blocks(&cfg(), &q, &k, (n_heads, n_kv, 0), 20, 1.0), vec![0, 1, 2], "dense below 24");
    }

    #[test]
    fn window_counts_follow_the_pooling_grid() {
        let c = cfg();
        assert_eq!((c.kernel(), c.stride()), (4, 2));
        assert_eq!(c.fine_windows(2), 0);
        assert_eq!(c.fine_windows(3), 1);
        assert_eq!(c.fine_windows(6), 2);
        assert_eq!(c.coarse_windows(14), 0);
        assert_eq!(c.coarse_windows(15), 1);
        assert_eq!(c.coarse_windows(23), 2);
        assert!(c.forced(0, 79) && c.forced(8, 79) && c.forced(9, 79) && !c.forced(7, 79));
        assert!(c.check().is_ok());
        assert!(BlockSparse { block: 6, ..c }.check().is_err());
    }
}
