//! RAT, token by token from its definition (see [`crate::spec::RatSpec`]): the in-chunk gated recurrence of `k̃, x̃`,
//! then softmax attention over the last `k̃, x̃` of each earlier chunk and the token's own, keys and query rotated
//! at chunk positions. The GPU runs the same two passes (`linear/rat.wgsl`).

use super::rope::rope;

/// Layout of one RAT layer.
#[derive(Clone, Copy, Debug)]
pub struct RatDims {
    /// Model width (heads × head_dim).
    pub hidden: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Distinct q/k heads.
    pub groups: usize,
    /// Tokens per chunk.
    pub chunk: usize,
    /// Rotated channels per head.
    pub rotary_dim: usize,
}

/// A layer's memory: the running `[k̃ | x̃]` (`2 hidden`) and one `[k̃ | x̃]` per completed chunk, unrotated.
#[derive(Clone, Debug, Default)]
pub struct RatState {
    /// The in-chunk recurrence after the last token.
    pub running: Vec<f32>,
    /// Completed chunks' last states, `[chunks, 2 hidden]`.
    pub summaries: Vec<f32>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One head vector rotated at `position` with the `[positions, rotary_dim / 2]` tables.
fn rotated(v: &[f32], position: usize, d: &RatDims, (cos, sin): (&[f32], &[f32])) -> Vec<f32> {
    let mut v = v.to_vec();
    rope(&mut v, 1, d.head_dim, d.rotary_dim, position, cos, sin);
    v
}

/// Runs tokens at positions `pos0..` through the layer: `proj` rows are `in_proj`'s output `[z | x | g | q | k]`;
/// returns `σ(z) ⊙ o` rows `[T, hidden]` (before `o_proj`).
pub fn rat(
    proj: &[f32],
    gate_bias: &[f32],
    state: &mut RatState,
    pos0: usize,
    d: &RatDims,
    tables: (&[f32], &[f32]),
) -> Vec<f32> {
    let (hidden, dh) = (d.hidden, d.head_dim);
    let width = 3 * hidden + 2 * d.groups * dh;
    state.running.resize(2 * hidden, 0.0);
    let mut out = Vec::new();
    for (t, row) in proj.chunks_exact(width).enumerate() {
        let p = pos0 + t;
        let (z, x, g) = (&row[..hidden], &row[hidden..2 * hidden], &row[2 * hidden..3 * hidden]);
        let (q, k) = (&row[3 * hidden..][..d.groups * dh], &row[3 * hidden + d.groups * dh..][..d.groups * dh]);
        if p.is_multiple_of(d.chunk) {
            state.running.fill(0.0);
        }
        for c in 0..hidden {
            let gate = sigmoid(g[c] + gate_bias[c]);
            let key = k[c % (d.groups * dh)];
            state.running[c] = gate * state.running[c] + (1.0 - gate) * key;
            state.running[hidden + c] = gate * state.running[hidden + c] + (1.0 - gate) * x[c];
        }
        if p % d.chunk == d.chunk - 1 {
            state.summaries.extend_from_slice(&state.running);
        }
        let chunk = p / d.chunk;
        for h in 0..hidden / dh {
            let qh = rotated(&q[(h % d.groups) * dh..][..dh], chunk, d, tables);
            let mut keys: Vec<(Vec<f32>, &[f32])> = (0..chunk)
                .map(|c| {
                    let s = &state.summaries[c * 2 * hidden..][..2 * hidden];
                    (rotated(&s[h * dh..][..dh], c, d, tables), &s[hidden + h * dh..][..dh])
                })
                .collect();
            let own = &state.running;
            keys.push((rotated(&own[h * dh..][..dh], chunk, d, tables), &own[hidden + h * dh..][..dh]));
            let scale = (dh as f32).powf(-0.5);
            let scores: Vec<f32> =
                keys.iter().map(|(key, _)| key.iter().zip(&qh).map(|(a, b)| a * b).sum::<f32>() * scale).collect();
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f32 = weights.iter().sum();
            for j in 0..dh {
                let o: f32 = keys.iter().zip(&weights).map(|((_, v), w)| w * v[j]).sum::<f32>() / total;
                out.push(sigmoid(z[h * dh + j]) * o);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_token_of_a_chunk_without_history_passes_its_own_value_through() {
        let d = RatDims { hidden: 4, head_dim: 2, groups: 1, chunk: 3, rotary_dim: 2 };
        let (cos, sin) = (vec![1.0; 8], vec![0.0; 8]);
        let mut row = vec![0.0; 3 * 4 + 2 * 2];
        row[4..8].copy_from_slice(&[1.0, -2.0, 3.0, 0.5]);
        row[8..12].fill(-50.0);
        row[..4].fill(50.0);
        let mut state = RatState::default();
        let out = rat(&row, &[0.0; 4], &mut state, 0, &d, (&cos, &sin));
        assert!(out.iter().zip([1.0, -2.0, 3.0, 0.5]).all(|(a, b)| (a - b).abs() < 1e-5), "{out:?}");
        assert!(state.summaries.is_empty());
    }

    #[test]
    fn completed_chunks_leave_one_summary_and_later_tokens_attend_to_it() {
        let d = RatDims { hidden: 2, head_dim: 2, groups: 1, chunk: 2, rotary_dim: 2 };
        let (cos, sin) = (vec![1.0; 8], vec![0.0; 8]);
        let width = 3 * 2 + 2 * 2;
        let rows: Vec<f32> = (0..3 * width).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
        let mut all = RatState::default();
        let whole = rat(&rows, &[0.1, -0.2], &mut all, 0, &d, (&cos, &sin));
        assert_eq!(all.summaries.len(), 4, "one summary of [k̃ | x̃] after two tokens");
        let mut stepped = RatState::default();
        let mut parts = Vec::new();
        for (t, row) in rows.chunks_exact(width).enumerate() {
            parts.extend(rat(row, &[0.1, -0.2], &mut stepped, t, &d, (&cos, &sin)));
        }
        assert_eq!(parts, whole);
    }
}
