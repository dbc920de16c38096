//! Attention maps for visualisation. An [`AttentionTap`] keeps the queries and keys one softmax-attention layer
//! used (after norms and RoPE), one row per position, as the GPU session or the CPU reference hands them over;
//! [`AttentionTap::map`] turns them into the attention weights of any head over a window of recent queries.

use crate::reference::attention::attention_weights;
use crate::spec::{AttentionSpec, MixerSpec, ModelSpec};
use crate::{CoreError, Result};

/// The queries and keys a tapped attention layer saw, per position.
#[derive(Clone, Debug)]
pub struct AttentionTap {
    /// The tapped layer (index into the schedule).
    pub layer: usize,
    /// The layer's state slot (its index among stateful mixers), which sessions address layers by.
    pub slot: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    window: Option<usize>,
    scale: f32,
    q: Vec<f32>,
    k: Vec<f32>,
}

/// The attention weights of one head: `queries` rows (positions `first_query..`) over `keys` columns (positions
/// `0..keys`), row-major, zero where a key is masked (future or outside the window).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMap {
    /// The head.
    pub head: usize,
    /// Position of the first row.
    pub first_query: usize,
    /// Rows.
    pub queries: usize,
    /// Columns (the last row's position + 1).
    pub keys: usize,
    /// `queries * keys` weights; each row sums to 1 over its visible keys.
    pub weights: Vec<f32>,
}

impl AttentionTap {
    /// An empty tap on `layer` of `spec`, which must be a softmax attention layer (not MLA, not linear).
    pub fn new(spec: &ModelSpec, layer: usize) -> Result<Self> {
        let bad = |m: String| CoreError::InvalidInput(m);
        let l = spec
            .layers
            .get(layer)
            .ok_or_else(|| bad(format!("layer {layer} is past the model's {} layers", spec.layers.len())))?;
        let MixerSpec::Attention(a) = &l.mixer else {
            return Err(bad(format!(
                "layer {layer} is not a softmax attention layer (its mixer is {})",
                l.mixer.kind()
            )));
        };
        let slot = spec.layers[..layer].iter().map(|l| l.mixer.parts().len()).sum();
        Ok(Self::for_attention(layer, slot, a))
    }

    /// An empty tap on `layer`, after checking that `head` is one of its heads (for choosing heads to ablate).
    pub fn with_head(spec: &ModelSpec, layer: usize, head: usize) -> Result<Self> {
        let tap = Self::new(spec, layer)?;
        if head >= tap.heads() {
            return Err(CoreError::InvalidInput(format!("head {head} is past layer {layer}'s {} heads", tap.heads())));
        }
        Ok(tap)
    }

    fn for_attention(layer: usize, slot: usize, a: &AttentionSpec) -> Self {
        AttentionTap {
            layer,
            slot,
            n_heads: a.n_heads,
            n_kv_heads: a.n_kv_heads,
            head_dim: a.head_dim,
            window: a.window,
            scale: a.scale,
            q: Vec::new(),
            k: Vec::new(),
        }
    }

    /// f32 values of one position's queries (all heads).
    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// f32 values of one position's keys (all kv heads).
    pub fn k_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Heads of the layer.
    pub fn heads(&self) -> usize {
        self.n_heads
    }

    /// Appends the queries `q` [tokens, q_width] and keys `k` [tokens, k_width] of the next positions.
    pub fn push(&mut self, q: &[f32], k: &[f32]) {
        self.q.extend_from_slice(q);
        self.k.extend_from_slice(k);
    }

    /// Positions recorded.
    pub fn positions(&self) -> usize {
        self.q.len() / self.q_width()
    }

    /// Keeps the first `positions` (after the context was cut back).
    pub fn truncate(&mut self, positions: usize) {
        self.q.truncate(positions * self.q_width());
        self.k.truncate(positions * self.k_width());
    }

    /// How spread out each head's attention is at the last position recorded: the entropy of its weights over
    /// the keys it sees, divided by the entropy of a uniform spread over them (0: on one key, 1: even; 0 when it
    /// sees a single key or nothing is recorded).
    pub fn entropies(&self) -> Vec<f32> {
        let Some(p) = self.positions().checked_sub(1) else { return vec![0.0; self.n_heads] };
        (0..self.n_heads)
            .map(|head| {
                let qh = &self.q[p * self.q_width() + head * self.head_dim..][..self.head_dim];
                let kvh = head / (self.n_heads / self.n_kv_heads);
                let (_, w) = attention_weights(qh, &self.k, (self.n_kv_heads, kvh), p, self.window, self.scale);
                let h: f32 = w.iter().filter(|&&x| x > 0.0).map(|&x| -x * x.ln()).sum();
                if w.len() > 1 {
                    h / (w.len() as f32).ln()
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The weights of `head` for the last `max_queries` positions recorded.
    pub fn map(&self, head: usize, max_queries: usize) -> Result<AttentionMap> {
        if head >= self.n_heads {
            return Err(CoreError::InvalidInput(format!("head {head} is past the layer's {} heads", self.n_heads)));
        }
        let keys = self.positions();
        let first_query = keys.saturating_sub(max_queries);
        let kvh = head / (self.n_heads / self.n_kv_heads);
        let mut weights = vec![0.0; (keys - first_query) * keys];
        for (row, p) in (first_query..keys).enumerate() {
            let qh = &self.q[p * self.q_width() + head * self.head_dim..][..self.head_dim];
            let (first, w) = attention_weights(qh, &self.k, (self.n_kv_heads, kvh), p, self.window, self.scale);
            weights[row * keys + first..row * keys + p + 1].copy_from_slice(&w);
        }
        Ok(AttentionMap { head, first_query, queries: keys - first_query, keys, weights })
    }
}
