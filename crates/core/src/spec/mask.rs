//! Which keys a softmax-attention query sees: the mask pieces the attention kernels compose (causal or wider
//! future, sliding window, attention sinks) and how positions reach RoPE when sinks are kept (StreamingLLM).
//!
//! A query at position `p` sees two key ranges: the sinks `[0, min(sinks, first(p)))` and the span
//! `[first(p), last(p)]`. Listing them in that order gives each visible key an index, its *cache position*;
//! with sinks kept past a window, keys and queries are rotated by cache position instead of by their position in
//! the text, so distances stay within what the model was trained on however long generation runs.

/// How far past its own position a query looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Future {
    /// Keys up to the query itself (decoder attention).
    #[default]
    Causal,
    /// Prefix-LM: keys below the given position are visible to every query (a bidirectional prompt).
    Prefix(usize),
    /// Every key present in the context (encoder attention).
    Bidirectional,
}

/// The visible keys of a softmax-attention layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttentionMask {
    /// Sliding window: a query sees the last `window` positions up to itself.
    pub window: Option<usize>,
    /// Attention sinks: the first `sinks` positions stay visible to every query (meaningful with a window).
    pub sinks: usize,
    /// StreamingLLM positions: with a window, queries and keys are rotated by cache position rather than by
    /// position in the text, so generation can run past the trained context (a model's own windows keep text
    /// positions, as it was trained).
    pub reposition: bool,
    /// Keys past the query.
    pub future: Future,
    /// Dual Triangle: the first half of each head's q·k channels scores past-and-self keys, the second half
    /// future-and-self keys (a key's score sums the halves that apply to it).
    pub dual_triangle: bool,
    /// Block-sparse attention: each query sees only the key blocks InfLLM-V2 selects for its GQA group.
    pub sparse: Option<BlockSparse>,
    /// Hybrid memory (with a causal window): keys that leave the window, sinks apart, are not dropped but absorbed
    /// into a linear-attention state with Taylor features, so every earlier key weighs `1 + s + s²/2` (the
    /// second-order expansion of `e^s`) beside the window's exact `e^s`, in one normalised softmax. Keys keep text
    /// positions (no StreamingLLM), so the context stays within the trained length; the memory is fixed.
    pub absorb: bool,
}

/// InfLLM-V2's parameter-free block selection (arXiv 2509.24663, as MiniCPM4.1 runs it). Keys are mean-pooled
/// over fine windows (`block / 2` positions, stride `block / 4`) and coarse windows (`2 * block`, stride `block`);
/// a query head's fine-window scores are normalised by its log-sum-exp over the coarse windows and summed over
/// the heads of its GQA group; a block scores the best fine window overlapping it. The first `init_blocks` and the
/// last `local_blocks` blocks (the query's own included) are always kept, and the best `topk - init_blocks`
/// others join them; attention is exact softmax over the selected blocks' keys. Below `dense_len` positions a
/// query attends densely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSparse {
    /// Positions per key block (a multiple of 4).
    pub block: usize,
    /// Leading blocks always kept.
    pub init_blocks: usize,
    /// Trailing blocks always kept, the query's own included.
    pub local_blocks: usize,
    /// Blocks kept beside the local ones (the leading blocks count among them).
    pub topk: usize,
    /// Contexts shorter than this attend densely.
    pub dense_len: usize,
}

impl BlockSparse {
    /// MiniCPM4.1's `sparse_config`: kernel 32, stride 16, block 64, 1 initial block, a 2048-position local window,
    /// top 64, dense below 8192.
    pub const MINICPM4: BlockSparse =
        BlockSparse { block: 64, init_blocks: 1, local_blocks: 32, topk: 64, dense_len: 8192 };

    /// Positions per fine pooling window.
    pub fn kernel(&self) -> usize {
        self.block / 2
    }

    /// Distance between fine pooling windows.
    pub fn stride(&self) -> usize {
        self.block / 4
    }

    /// Key blocks in a context of `positions` (the selection's scratch per kv head).
    pub fn blocks(&self, positions: usize) -> usize {
        positions / self.block + 1
    }

    /// Fine pooling windows a context of `positions` can complete (rows of the pooled keys).
    pub fn windows(&self, positions: usize) -> usize {
        positions / self.stride() + 1
    }

    /// Whether a query at `p` attends densely.
    pub fn dense(&self, p: usize) -> bool {
        p + 1 < self.dense_len
    }

    /// These settings, attending densely at every length: the keys are still pooled, so a router can switch the
    /// layer to block-sparse at any point (see `route:` policies).
    pub fn pooling_only(self) -> Self {
        BlockSparse { dense_len: usize::MAX, ..self }
    }

    /// Whether these settings attend densely at every length ([`BlockSparse::pooling_only`]): the layer needs no
    /// block selection, and it is the layer a router measures.
    pub fn pools_only(&self) -> bool {
        self.dense_len == usize::MAX
    }

    /// Most blocks one query keeps.
    pub fn max_selected(&self) -> usize {
        self.local_blocks + self.topk
    }

    /// Complete fine windows once positions `0..=p` are present.
    pub fn fine_windows(&self, p: usize) -> usize {
        (p + 1).checked_sub(self.kernel()).map_or(0, |r| r / self.stride() + 1)
    }

    /// Complete coarse windows once positions `0..=p` are present.
    pub fn coarse_windows(&self, p: usize) -> usize {
        (p + 1).checked_sub(2 * self.block).map_or(0, |r| r / self.block + 1)
    }

    /// Whether block `b` is always kept for a query at `p`.
    pub fn forced(&self, b: usize, p: usize) -> bool {
        b < self.init_blocks || b + self.local_blocks > p / self.block
    }

    /// Checks the shape: blocks a multiple of 4, at least one local block, and sparse only once coarse windows
    /// exist (`dense_len >= 2 * block`).
    pub fn check(&self) -> Result<(), String> {
        if self.block < 4 || !self.block.is_multiple_of(4) || self.local_blocks == 0 || self.dense_len < 2 * self.block
        {
            return Err(format!(
                "block-sparse attention needs a block that is a multiple of 4 (got {}), a local block and a dense \
                 length of at least two blocks (got {})",
                self.block, self.dense_len
            ));
        }
        Ok(())
    }
}

impl AttentionMask {
    /// A causal mask with an optional window.
    pub fn causal(window: Option<usize>) -> Self {
        AttentionMask { window, ..Default::default() }
    }

    /// First position of the span a query at `p` sees (`p + 1 - window`, or 0).
    pub fn first(&self, p: usize) -> usize {
        self.window.map_or(0, |w| (p + 1).saturating_sub(w))
    }

    /// Last position a query at `p` sees when keys `0..end` are present.
    pub fn last(&self, p: usize, end: usize) -> usize {
        match self.future {
            Future::Causal => p,
            Future::Prefix(n) => p.max(n.min(end).saturating_sub(1)),
            Future::Bidirectional => end - 1,
        }
    }

    /// Sinks a query at `p` sees apart from its span (those not already in it).
    pub fn sinks_before(&self, p: usize) -> usize {
        self.sinks.min(self.first(p))
    }

    /// Whether keys and queries are rotated by cache position.
    pub fn repositions(&self) -> bool {
        self.reposition && self.window.is_some() && self.future == Future::Causal
    }

    /// Whether keys leaving the window are absorbed into a Taylor linear-attention state.
    pub fn absorbs(&self) -> bool {
        self.absorb && self.window.is_some() && self.future == Future::Causal && !self.reposition
    }

    /// The positions a query at `p` holds in the absorbed memory: after the sinks, before its window.
    pub fn absorbed(&self, p: usize) -> std::ops::Range<usize> {
        match self.absorbs() {
            true => self.sinks_before(p)..self.first(p),
            false => 0..0,
        }
    }

    /// The keys a query at `p` sees, in cache-position order, when keys `0..end` are present, before any
    /// block-sparse selection.
    pub fn keys(&self, p: usize, end: usize) -> impl Iterator<Item = usize> {
        (0..self.sinks_before(p)).chain(self.first(p)..=self.last(p, end))
    }

    /// The cache position of a query at `p`: its index among the keys it sees.
    pub fn query_position(&self, p: usize) -> usize {
        self.sinks_before(p) + p - self.first(p)
    }

    /// Positions a KV cache keeps to serve forwards of up to `capacity` tokens: the sinks, the window before a
    /// forward plus the forward itself (a ring), or everything (`max_context`; a repositioning ring may serve
    /// longer contexts, so it keeps its full size).
    pub fn cache_rows(&self, capacity: usize, max_context: usize) -> usize {
        match (self.window, self.future) {
            (Some(w), Future::Causal) if self.repositions() => self.sinks + w + capacity,
            (Some(w), Future::Causal) => (self.sinks + w + capacity).min(max_context),
            _ => max_context,
        }
    }

    /// Most keys one query sees in a context of `max_context` positions (unbounded for a repositioning ring).
    pub fn reach(&self, max_context: usize) -> usize {
        match self.repositions() {
            true => self.sinks + self.window.unwrap_or(0),
            false => max_context,
        }
    }

    /// Positions a cache holds once `positions` tokens have gone through.
    pub fn kept(&self, positions: usize) -> usize {
        match self.window {
            Some(w) => positions.min(self.sinks + w),
            None => positions,
        }
    }

    /// Short description for schedules and `inspect` (e.g. `sliding(4096)+sinks(4)`).
    pub fn describe(&self) -> String {
        let mut s = match self.window {
            Some(w) => format!("sliding({w})"),
            None => "full".to_string(),
        };
        if self.sinks > 0 {
            s += &format!("+sinks({})", self.sinks);
        }
        if self.repositions() {
            s += "+streaming";
        }
        match self.future {
            Future::Causal => {}
            Future::Prefix(n) => s += &format!("+prefix({n})"),
            Future::Bidirectional => s += "+bidirectional",
        }
        if self.dual_triangle {
            s += "+dual_triangle";
        }
        if self.absorbs() {
            s += "+absorb";
        }
        if let Some(b) = &self.sparse {
            s += &format!("+infllmv2(block {}, top {}, dense below {})", b.block, b.topk, b.dense_len);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_and_window_list_keys_in_cache_order() {
        let m = AttentionMask { window: Some(3), sinks: 2, reposition: true, ..Default::default() };
        assert_eq!(m.keys(1, 2).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(m.keys(3, 4).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(m.keys(9, 10).collect::<Vec<_>>(), vec![0, 1, 7, 8, 9]);
        assert_eq!(m.query_position(9), 4);
        assert_eq!(m.query_position(3), 3);
        assert_eq!(m.kept(100), 5);
        assert_eq!(m.cache_rows(4, 8), 9, "a repositioning ring outlives the context");
        assert_eq!(AttentionMask { reposition: false, ..m.clone() }.cache_rows(4, 8), 8);
        assert_eq!(m.reach(1000), 5);
    }

    #[test]
    fn future_modes_widen_the_span() {
        let prefix = AttentionMask { future: Future::Prefix(4), ..Default::default() };
        assert_eq!(prefix.keys(1, 6).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(prefix.keys(5, 6).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(prefix.keys(1, 3).count(), 3, "only keys present are visible");
        let all = AttentionMask { future: Future::Bidirectional, window: Some(2), ..Default::default() };
        assert_eq!(all.keys(2, 5).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(all.cache_rows(4, 100), 100, "a future-seeing window keeps every row");
    }
}
