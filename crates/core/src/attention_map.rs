//! Attention maps for visualisation. An [`AttentionTap`] keeps the queries and keys one softmax-attention layer
//! used (after norms and RoPE), one row per position, as the GPU session or the CPU reference hands them over;
//! [`AttentionTap::map`] turns them into the attention weights of any head over a window of recent queries.

use crate::reference::attention::{attention_weights, Rotation};
use crate::reference::gated_delta::{self, Dims};
use crate::reference::{feature_map, gla};
use crate::spec::{
    AttentionMask, AttentionSpec, GatedDeltaNetSpec, GlaSpec, GsaSpec, Hgrn2Spec, LightningSpec, LinearAttnSpec,
    Mamba2Spec, MixerSpec, ModelSpec, Rwkv7Spec,
};
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
    mask: AttentionMask,
    /// RoPE tables by cache position `(cos, sin, rotary_dim)` for StreamingLLM layers, whose taps hold
    /// unrotated queries and keys.
    rotation: Option<(Vec<f32>, Vec<f32>, usize)>,
    scale: f32,
    q: Vec<f32>,
    k: Vec<f32>,
}

/// A layer's state slot: its index among stateful mixers (branches of a parallel mixer each count).
fn slot_of(spec: &ModelSpec, layer: usize) -> usize {
    spec.layers[..layer].iter().map(|l| l.mixer.parts().len()).sum()
}

/// Where a layer's heads meet before its output projection, for switching heads off: a softmax-attention layer's
/// (or attention branch's) heads, or a Gated DeltaNet layer's value heads (after its output norm and gate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLayout {
    /// The mixer's state slot.
    pub slot: usize,
    /// Heads.
    pub heads: usize,
    /// Channels per head in the output projection's input.
    pub head_width: usize,
}

impl HeadLayout {
    /// The layout of `layer`'s heads, after checking that `head` is one of them.
    pub fn of(spec: &ModelSpec, layer: usize, head: usize) -> Result<Self> {
        let bad = |m: String| CoreError::InvalidInput(m);
        let l = spec
            .layers
            .get(layer)
            .ok_or_else(|| bad(format!("layer {layer} is past the model's {} layers", spec.layers.len())))?;
        let slot = slot_of(spec, layer);
        let found = l.mixer.parts().iter().enumerate().find_map(|(i, m)| match m {
            MixerSpec::Attention(a) => Some(HeadLayout { slot: slot + i, heads: a.n_heads, head_width: a.head_dim }),
            MixerSpec::GatedDeltaNet(g) => {
                Some(HeadLayout { slot: slot + i, heads: g.n_v_heads, head_width: g.head_v_dim })
            }
            _ => None,
        });
        let layout = found.ok_or_else(|| {
            bad(format!("layer {layer} has no heads to switch off (its mixer is {})", l.mixer.kind()))
        })?;
        if head >= layout.heads {
            return Err(bad(format!("head {head} is past layer {layer}'s {} heads", layout.heads)));
        }
        Ok(layout)
    }

    /// The output projection's input width.
    pub fn width(&self) -> usize {
        self.heads * self.head_width
    }
}

/// The entropy of the magnitudes of `w` (normalised to sum 1) over that of an even spread across them: 0 when
/// one entry holds everything, 1 when all are equal (0 for one entry or none).
fn normalised_entropy(w: &[f32]) -> f32 {
    let total: f32 = w.iter().map(|x| x.abs()).sum();
    if w.len() < 2 || total <= 0.0 {
        return 0.0;
    }
    let h: f32 = w.iter().map(|x| x.abs() / total).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum();
    h / (w.len() as f32).ln()
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
        // A parallel layer (Falcon-H1's attention beside Mamba2) is mapped through its attention branch.
        let parts = l.mixer.parts();
        let Some((i, a)) = parts.iter().enumerate().find_map(|(i, m)| match m {
            MixerSpec::Attention(a) => Some((i, a)),
            _ => None,
        }) else {
            return Err(bad(format!(
                "layer {layer} is not a softmax attention layer (its mixer is {})",
                l.mixer.kind()
            )));
        };
        Ok(Self::for_attention(layer, slot_of(spec, layer) + i, a))
    }

    fn for_attention(layer: usize, slot: usize, a: &AttentionSpec) -> Self {
        AttentionTap {
            layer,
            slot,
            n_heads: a.n_heads,
            n_kv_heads: a.n_kv_heads,
            head_dim: a.head_dim,
            mask: a.mask.clone(),
            rotation: a.rope.as_ref().filter(|_| a.mask.repositions()).map(|r| {
                let (cos, sin) = r.tables(a.mask.sinks + a.mask.window.unwrap_or(0));
                (cos, sin, r.rotary_dim)
            }),
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
        (0..self.n_heads).map(|head| normalised_entropy(&self.weights(head, p).1)).collect()
    }

    /// The keys query head `qh` (of kv head `kvh`) at position `p` sees and its weights over them.
    fn weights(&self, head: usize, p: usize) -> (Vec<usize>, Vec<f32>) {
        let rotation =
            self.rotation.as_ref().map(|(cos, sin, rotary_dim)| Rotation { cos, sin, rotary_dim: *rotary_dim });
        let q_row = &self.q[p * self.q_width()..][..self.q_width()];
        let heads = (self.n_heads, self.n_kv_heads, head);
        attention_weights(q_row, heads, &self.k, p, &self.mask, self.scale, rotation)
    }

    /// The weights of `head` for the last `max_queries` positions recorded.
    pub fn map(&self, head: usize, max_queries: usize) -> Result<AttentionMap> {
        if head >= self.n_heads {
            return Err(CoreError::InvalidInput(format!("head {head} is past the layer's {} heads", self.n_heads)));
        }
        let keys = self.positions();
        let first_query = keys.saturating_sub(max_queries);
        let mut weights = vec![0.0; (keys - first_query) * keys];
        for (row, p) in (first_query..keys).enumerate() {
            let (visible, w) = self.weights(head, p);
            for (j, w) in visible.into_iter().zip(w) {
                weights[row * keys + j] = w;
            }
        }
        Ok(AttentionMap { head, first_query, queries: keys - first_query, keys, weights })
    }
}

/// What a tapped recurrent layer saw per position — a delta-rule layer (Gated DeltaNet, DeltaNet, Kimi Delta
/// Attention: raw queries and keys after the short conv, update strengths, log decays), gated linear attention and
/// its relatives (GLA, HGRN2, Lightning, linear attention: queries, keys, log decays), RWKV-7 (plus its transition
/// vectors) or Gated Slot Attention (plus its slot gates). Its map is the implicit attention matrix of the recurrence: with
/// `P_r = (I - beta_r k_r k_r^T) diag(exp(g_r))` (GLA: `diag(exp(g_r))`, beta 1), output
/// `o_t = sum_s A[t, s] v_s` where `A[t, s] = beta_s q_t^T P_t P_(t-1) ... P_(s+1) k_s` (q, k as the layer uses
/// them: L2-normalised for the delta rule; q scaled by dk^-0.5). Weights can be negative; rows need not sum to 1.
#[derive(Clone, Debug)]
pub struct DeltaTap {
    /// The tapped layer.
    pub layer: usize,
    /// Its state slot.
    pub slot: usize,
    dims: Dims,
    per_channel: bool,
    rule: Rule,
    q: Vec<f32>,
    k: Vec<f32>,
    beta: Vec<f32>,
    g: Vec<f32>,
    /// RWKV-7's transition vectors `a`, `b` per position `[T, heads * dk]` (empty for the other rules).
    a: Vec<f32>,
    b: Vec<f32>,
}

/// How a recurrent layer turns its projections into the recurrence's inputs.
#[derive(Clone, Debug)]
enum Rule {
    /// The gated delta rule: `beta = beta_scale * sigmoid(b)`, decays from `[A_log | dt_bias]`.
    Delta { beta_scale: f32, gate_params: Vec<f32> },
    /// Gated linear attention and its relatives (no erasing): queries scaled by `q_scale`, log decays from
    /// `decay`, rows divided by their sum when `normalize` (Based, Hedgehog).
    Gated { decay: GateInput, q_scale: f32, normalize: bool },
    /// Gated Slot Attention: rows `[q | k | s]` and log slot gates `[heads * slots]` (dims' `dv` counts the slots);
    /// the map is of the second pass's output, linear in the values once pass one's slot softmax is replayed.
    Gsa { scale: f32 },
    /// RWKV-7's generalised delta rule, rows `[r | w | k | a | b | v]` as its prepare pass leaves them: the
    /// transition `diag(exp w) + b aᵀ` (the map is of the recurrence's output, before the group norm and bonus).
    Rwkv7,
}

/// Where a gated layer's log decays come from.
#[derive(Clone, Debug)]
enum GateInput {
    /// GLA: raw gate logits per channel, `logsigmoid(gk) / normalizer`.
    LogSigmoid(f32),
    /// HGRN2: log decays per channel as the GPU holds them.
    Log,
    /// Lightning: one constant log decay per head.
    PerHead(Vec<f32>),
    /// Linear attention: no decay.
    None,
}

impl DeltaTap {
    /// An empty tap on delta-rule `layer` of `spec`, with the layer's `[A_log | dt_bias]` (see
    /// [`DeltaTap::push_projections`]).
    pub fn new(spec: &ModelSpec, layer: usize, g: &GatedDeltaNetSpec, gate_params: Vec<f32>) -> Self {
        let dims = Dims { n_k_heads: g.n_k_heads, n_v_heads: g.n_v_heads, dk: g.head_k_dim, dv: g.head_v_dim };
        let per_channel = g.decay.as_ref().is_some_and(|d| d.per_channel);
        Self::empty(spec, layer, dims, per_channel, Rule::Delta { beta_scale: g.beta_scale, gate_params })
    }

    /// An empty tap on GLA `layer` of `spec`.
    pub fn gla(spec: &ModelSpec, layer: usize, g: &GlaSpec) -> Self {
        let dims = Dims { n_k_heads: g.n_heads, n_v_heads: g.n_heads, dk: g.head_k_dim, dv: g.head_v_dim };
        let q_scale = (g.head_k_dim as f32).powf(-0.5);
        Self::empty(
            spec,
            layer,
            dims,
            true,
            Rule::Gated { decay: GateInput::LogSigmoid(g.gate_normalizer), q_scale, normalize: false },
        )
    }

    /// An empty tap on HGRN2 `layer` of `spec` (rows: `[q | 1 - f | i]` and the log decays, after the gates).
    pub fn hgrn2(spec: &ModelSpec, layer: usize, g: &Hgrn2Spec) -> Self {
        let dims = Dims { n_k_heads: g.n_heads, n_v_heads: g.n_heads, dk: g.head_f_dim, dv: g.head_i_dim };
        let q_scale = (g.head_f_dim as f32).powf(-0.5);
        Self::empty(spec, layer, dims, true, Rule::Gated { decay: GateInput::Log, q_scale, normalize: false })
    }

    /// An empty tap on Lightning `layer` of `spec` (rows: `[q | k | v]` after the SiLU; decay `-slope` per head).
    pub fn lightning(spec: &ModelSpec, layer: usize, l: &LightningSpec) -> Self {
        let dims = Dims { n_k_heads: l.n_heads, n_v_heads: l.n_heads, dk: l.head_dim, dv: l.head_dim };
        let decay = GateInput::PerHead(l.slopes.iter().map(|s| -s).collect());
        Self::empty(spec, layer, dims, false, Rule::Gated { decay, q_scale: 1.0, normalize: false })
    }

    /// An empty tap on the Mamba2 branch of `layer` (Falcon-H1's parallel layer, or a Mamba2 layer): the scan as
    /// gated linear attention, rows `[C | B | dt x]` per head and log decays `dt A` per state channel, as its prepare
    /// pass leaves them. The map is of the scan's output before the `D` skip.
    pub fn mamba2(spec: &ModelSpec, layer: usize, m: &Mamba2Spec) -> Self {
        let dims = Dims { n_k_heads: m.n_heads, n_v_heads: m.n_heads, dk: m.state_dim, dv: m.head_dim };
        let part = spec.layers[layer].mixer.parts().iter().position(|p| matches!(p, MixerSpec::Mamba2(_)));
        let mut tap =
            Self::empty(spec, layer, dims, true, Rule::Gated { decay: GateInput::Log, q_scale: 1.0, normalize: false });
        tap.slot += part.unwrap_or(0);
        tap
    }

    /// An empty tap on Gated Slot Attention `layer` of `spec` (rows as its gates pass leaves them).
    pub fn gsa(spec: &ModelSpec, layer: usize, g: &GsaSpec) -> Self {
        let dims = Dims { n_k_heads: g.n_heads, n_v_heads: g.n_heads, dk: g.head_k_dim, dv: g.slots };
        Self::empty(spec, layer, dims, true, Rule::Gsa { scale: g.scale })
    }

    /// An empty tap on RWKV-7 `layer` of `spec`.
    pub fn rwkv7(spec: &ModelSpec, layer: usize, r: &Rwkv7Spec) -> Self {
        let dims = Dims { n_k_heads: r.n_heads, n_v_heads: r.n_heads, dk: r.head_dim, dv: r.head_v_dim };
        Self::empty(spec, layer, dims, true, Rule::Rwkv7)
    }

    /// Appends RWKV-7 positions: receptance `r`, log decays `w`, keys `k` and transition vectors `a`, `b`, each
    /// `[T, heads * dk]`.
    pub fn push_rwkv7(&mut self, r: &[f32], w: &[f32], k: &[f32], (a, b): (&[f32], &[f32])) {
        self.push(r, k, &vec![1.0; r.len() / self.dims.dk], w);
        self.a.extend_from_slice(a);
        self.b.extend_from_slice(b);
    }

    /// An empty tap on linear-attention `layer` of `spec` (Hadamard, Based, Hedgehog; rows: `[φq | φk | v]` after
    /// the feature maps, values carrying the normaliser's column when normalised).
    pub fn linear_attention(spec: &ModelSpec, layer: usize, l: &LinearAttnSpec) -> Self {
        let dims = Dims { n_k_heads: l.n_heads, n_v_heads: l.n_heads, dk: l.features(), dv: l.carried_values() };
        let rule = Rule::Gated { decay: GateInput::None, q_scale: l.scale, normalize: l.normalize };
        Self::empty(spec, layer, dims, false, rule)
    }

    fn empty(spec: &ModelSpec, layer: usize, dims: Dims, per_channel: bool, rule: Rule) -> Self {
        DeltaTap {
            layer,
            slot: slot_of(spec, layer),
            dims,
            per_channel,
            rule,
            q: Vec::new(),
            k: Vec::new(),
            beta: Vec::new(),
            g: Vec::new(),
            a: Vec::new(),
            b: Vec::new(),
        }
    }

    /// f32 values per position of the layer's `[q | k | v]` row (what [`push_projections`](Self::push_projections)
    /// takes first).
    pub fn qkv_width(&self) -> usize {
        let keys = if matches!(self.rule, Rule::Rwkv7) { 5 } else { 2 };
        keys * self.dims.n_k_heads * self.dims.dk + self.dims.n_v_heads * self.dims.dv
    }

    /// f32 values per position of the layer's gate-input row: `[b | a]` (delta rule) or `gk` (GLA).
    pub fn gate_width(&self) -> usize {
        match &self.rule {
            Rule::Gated { decay: GateInput::LogSigmoid(_) | GateInput::Log, .. } => self.dims.n_v_heads * self.dims.dk,
            Rule::Gsa { .. } => self.dims.n_v_heads * self.dims.dv,
            Rule::Gated { .. } | Rule::Rwkv7 => 0,
            Rule::Delta { .. } => self.dims.n_v_heads * if self.per_channel { 1 + self.dims.dk } else { 2 },
        }
    }

    /// Appends positions from raw queries and keys `[T, n_k_heads * dk]`, update strengths `beta` `[T,
    /// n_v_heads]` (scaled) and log decays `g` (`[T, n_v_heads]`, or `[T, n_v_heads * dk]` per channel).
    pub fn push(&mut self, q: &[f32], k: &[f32], beta: &[f32], g: &[f32]) {
        self.q.extend_from_slice(q);
        self.k.extend_from_slice(k);
        self.beta.extend_from_slice(beta);
        self.g.extend_from_slice(g);
    }

    /// Appends positions from the layer's rows as the GPU holds them: `[q | k | v]` (after the conv) and the gate
    /// inputs (`[b | a]`, or GLA's `gk`), turned into update strengths and log decays as the layer does.
    pub fn push_projections(&mut self, qkv: &[f32], gates: &[f32]) {
        let (key, hv) = (self.dims.n_k_heads * self.dims.dk, self.dims.n_v_heads);
        if matches!(self.rule, Rule::Rwkv7) {
            let part = |i: usize| -> Vec<f32> {
                qkv.chunks_exact(self.qkv_width()).flat_map(|row| row[i * key..][..key].to_vec()).collect()
            };
            let (r, w, k, a, b) = (part(0), part(1), part(2), part(3), part(4));
            return self.push_rwkv7(&r, &w, &k, (&a, &b));
        }
        let (mut q, mut k, mut b, mut a) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let split = if matches!(self.rule, Rule::Delta { .. }) { hv } else { 0 };
        let gate_width = self.gate_width();
        for (t, row) in qkv.chunks_exact(self.qkv_width()).enumerate() {
            q.extend_from_slice(&row[..key]);
            k.extend_from_slice(&row[key..2 * key]);
            let gate = &gates[t * gate_width..][..gate_width];
            b.extend_from_slice(&gate[..split]);
            a.extend_from_slice(&gate[split..]);
        }
        let positions = q.len() / key;
        let (beta, g) = match &self.rule {
            Rule::Gated { decay, .. } => {
                let g = match decay {
                    GateInput::LogSigmoid(normalizer) => gla::log_decay(&a, *normalizer),
                    GateInput::Log => a,
                    GateInput::PerHead(per_head) => per_head.repeat(positions),
                    GateInput::None => vec![0.0; positions * hv],
                };
                (vec![1.0; positions * hv], g)
            }
            Rule::Rwkv7 => unreachable!("pushed above"),
            Rule::Gsa { .. } => (vec![1.0; positions * hv], a),
            Rule::Delta { beta_scale, gate_params } => {
                let (a_log, dt_bias) = gate_params.split_at(hv);
                let beta = b.iter().map(|&x| beta_scale / (1.0 + (-x).exp())).collect();
                let g = match self.per_channel {
                    true => gated_delta::channel_gates(&a, a_log, dt_bias),
                    false => gated_delta::gates(&a, &b, a_log, dt_bias).0,
                };
                (beta, g)
            }
        };
        self.push(&q, &k, &beta, &g);
    }

    /// Positions recorded.
    pub fn positions(&self) -> usize {
        self.beta.len() / self.dims.n_v_heads
    }

    /// Keeps the first `positions`.
    pub fn truncate(&mut self, positions: usize) {
        let (key, hv) = (self.dims.n_k_heads * self.dims.dk, self.dims.n_v_heads);
        self.q.truncate(positions * key);
        self.k.truncate(positions * key);
        self.beta.truncate(positions * hv);
        let gates = match self.rule {
            Rule::Gsa { .. } => self.dims.dv,
            _ if self.per_channel => self.dims.dk,
            _ => 1,
        };
        self.g.truncate(positions * hv * gates);
        self.a.truncate(positions * key);
        self.b.truncate(positions * key);
    }

    /// Value heads (the heads a map is drawn for).
    pub fn heads(&self) -> usize {
        self.dims.n_v_heads
    }

    /// Gated Slot Attention's implicit weights of `head` at `t`: with `D_j(s) = (1 - e^{g_s[j]}) Π_{s<r<=t} e^{g_r[j]}`,
    /// pass one's slot keys are `Σ_s D_j(s) k_s`, its softmax over the slots gives `a_t`, and
    /// `A[t, s] = Σ_j a_t[j] D_j(s)`.
    fn slot_row(&self, head: usize, t: usize, scale: f32) -> Vec<f32> {
        let (h, dk, m) = (self.dims.n_v_heads, self.dims.dk, self.dims.dv);
        let gate = |s: usize, j: usize| self.g[(s * h + head) * m + j];
        let mut weights = vec![vec![0.0f32; m]; t + 1];
        let mut keys = vec![0.0f32; m * dk];
        let mut carried = vec![1.0f32; m];
        for s in (0..=t).rev() {
            let k = &self.k[(s * h + head) * dk..][..dk];
            for j in 0..m {
                let w = carried[j] * (1.0 - gate(s, j).exp());
                weights[s][j] = w;
                keys[j * dk..][..dk].iter_mut().zip(k).for_each(|(acc, x)| *acc += w * x);
                carried[j] *= gate(s, j).exp();
            }
        }
        let q = &self.q[(t * h + head) * dk..][..dk];
        let scores: Vec<f32> =
            (0..m).map(|j| keys[j * dk..][..dk].iter().zip(q).map(|(a, b)| a * b).sum::<f32>() * scale).collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = e.iter().sum();
        weights.iter().map(|w| w.iter().zip(&e).map(|(x, a)| x * a / total).sum()).collect()
    }

    /// The implicit weights of value head `head` for query position `t` over keys `0..=t`.
    fn row(&self, head: usize, t: usize) -> Vec<f32> {
        if let Rule::Gsa { scale } = self.rule {
            return self.slot_row(head, t, scale);
        }
        let d = &self.dims;
        let kh = head / (d.n_v_heads / d.n_k_heads);
        let at = |x: &[f32], p: usize| x[(p * d.n_k_heads + kh) * d.dk..][..d.dk].to_vec();
        let (delta, q_scale, normalize) = match &self.rule {
            Rule::Delta { .. } => (true, 1.0 / (d.dk as f32).sqrt(), false),
            Rule::Gated { q_scale, normalize, .. } => (false, *q_scale, *normalize),
            Rule::Rwkv7 => (false, 1.0, false),
            Rule::Gsa { .. } => unreachable!("slot rows above"),
        };
        let mut w = match delta {
            true => gated_delta::l2norm(&at(&self.q, t), q_scale),
            false => at(&self.q, t).iter().map(|x| x * q_scale).collect(),
        };
        let mut out = vec![0.0; t + 1];
        for s in (0..=t).rev() {
            let ks = if delta { gated_delta::l2norm(&at(&self.k, s), 1.0) } else { at(&self.k, s) };
            let beta = self.beta[s * d.n_v_heads + head];
            let dot: f32 = w.iter().zip(&ks).map(|(a, b)| a * b).sum();
            out[s] = beta * dot;
            let erase = if delta { beta * dot } else { 0.0 };
            // RWKV-7 carries the query back through diag(exp w_s) + a_s b_sᵀ (the transpose of b aᵀ).
            let through_b = match self.rule {
                Rule::Rwkv7 => at(&self.b, s).iter().zip(&w).map(|(x, y)| x * y).sum::<f32>(),
                _ => 0.0,
            };
            let a_s = if matches!(self.rule, Rule::Rwkv7) { at(&self.a, s) } else { Vec::new() };
            // w <- D_s (w - beta_s k_s (k_s . w)): carry the query back past position s.
            for (c, (wc, kc)) in w.iter_mut().zip(&ks).enumerate() {
                let g = match self.per_channel {
                    true => self.g[(s * d.n_v_heads + head) * d.dk + c],
                    false => self.g[s * d.n_v_heads + head],
                };
                *wc = g.exp() * (*wc - kc * erase) + a_s.get(c).map_or(0.0, |x| x * through_b);
            }
        }
        if normalize {
            let total = out.iter().sum::<f32>() + feature_map::NORMALIZER_EPS;
            out.iter_mut().for_each(|w| *w /= total);
        }
        out
    }

    /// The implicit weights of value head `head` for the last `max_queries` positions recorded.
    pub fn map(&self, head: usize, max_queries: usize) -> Result<AttentionMap> {
        if head >= self.heads() {
            return Err(CoreError::InvalidInput(format!("head {head} is past the layer's {} heads", self.heads())));
        }
        let keys = self.positions();
        let first_query = keys.saturating_sub(max_queries);
        let mut weights = vec![0.0; (keys - first_query) * keys];
        for (r, t) in (first_query..keys).enumerate() {
            weights[r * keys..r * keys + t + 1].copy_from_slice(&self.row(head, t));
        }
        Ok(AttentionMap { head, first_query, queries: keys - first_query, keys, weights })
    }

    /// How spread out each head's implicit weights are at the last position: the entropy of their magnitudes,
    /// normalised as in [`AttentionTap::entropies`].
    pub fn entropies(&self) -> Vec<f32> {
        let Some(t) = self.positions().checked_sub(1) else { return vec![0.0; self.heads()] };
        (0..self.heads()).map(|h| normalised_entropy(&self.row(h, t))).collect()
    }
}

/// A tap on a layer that has an attention map: softmax attention (its weights), a recurrent layer (the implicit
/// weights of its recurrence), or a parallel layer's two branches (Falcon-H1: the attention heads, then the Mamba2
/// heads).
#[derive(Clone, Debug)]
pub enum LayerTap {
    /// Softmax attention.
    Softmax(AttentionTap),
    /// A recurrent mixer: Gated DeltaNet, DeltaNet, KDA, GLA and its relatives, RWKV-7, GSA, Mamba2.
    Delta(DeltaTap),
    /// Attention beside Mamba2 in one layer.
    Parallel(AttentionTap, Box<DeltaTap>),
}

/// One recorded branch of a tap: its mixer's state slot and the two rows a GPU forward copies out per position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapBranch {
    /// The branch's state slot.
    pub slot: usize,
    /// f32 values per position of the two rows: queries and keys (softmax), or `[q | k | v]` and the gate inputs.
    pub row_widths: (usize, usize),
}

impl LayerTap {
    /// A tap on `layer` whose mixer is softmax attention or a parallel layer (both branches when one is Mamba2).
    pub fn attention(spec: &ModelSpec, layer: usize) -> Result<Self> {
        let softmax = AttentionTap::new(spec, layer)?;
        let parts = spec.layers[layer].mixer.parts();
        Ok(match parts.iter().find_map(|m| if let MixerSpec::Mamba2(m) = m { Some(m) } else { None }) {
            Some(m) => LayerTap::Parallel(softmax, Box::new(DeltaTap::mamba2(spec, layer, m))),
            None => LayerTap::Softmax(softmax),
        })
    }

    /// The tapped layer.
    pub fn layer(&self) -> usize {
        match self {
            LayerTap::Softmax(t) | LayerTap::Parallel(t, _) => t.layer,
            LayerTap::Delta(t) => t.layer,
        }
    }

    /// The branches a GPU forward records, in the order [`LayerTap::push_rows`] takes them.
    pub fn branches(&self) -> Vec<TapBranch> {
        let softmax = |t: &AttentionTap| TapBranch { slot: t.slot, row_widths: (t.q_width(), t.k_width()) };
        let delta = |t: &DeltaTap| TapBranch { slot: t.slot, row_widths: (t.qkv_width(), t.gate_width()) };
        match self {
            LayerTap::Softmax(t) => vec![softmax(t)],
            LayerTap::Delta(t) => vec![delta(t)],
            LayerTap::Parallel(a, d) => vec![softmax(a), delta(d)],
        }
    }

    /// Appends positions from the two rows a GPU forward copied out for `branch` (see [`LayerTap::branches`]).
    pub fn push_rows(&mut self, branch: usize, first: &[f32], second: &[f32]) {
        match (self, branch) {
            (LayerTap::Softmax(t) | LayerTap::Parallel(t, _), 0) => t.push(first, second),
            (LayerTap::Delta(t), 0) => t.push_projections(first, second),
            (LayerTap::Parallel(_, t), 1) => t.push_projections(first, second),
            (_, b) => unreachable!("branch {b} is past the tap's branches"),
        }
    }

    /// The softmax branch recording state slot `slot`, if there is one.
    pub fn softmax_at(&mut self, slot: usize) -> Option<&mut AttentionTap> {
        match self {
            LayerTap::Softmax(t) | LayerTap::Parallel(t, _) if t.slot == slot => Some(t),
            _ => None,
        }
    }

    /// The recurrent branch recording state slot `slot`, if there is one.
    pub fn delta_at(&mut self, slot: usize) -> Option<&mut DeltaTap> {
        match self {
            LayerTap::Delta(t) if t.slot == slot => Some(t),
            LayerTap::Parallel(_, t) if t.slot == slot => Some(t),
            _ => None,
        }
    }

    /// Positions recorded.
    pub fn positions(&self) -> usize {
        match self {
            LayerTap::Softmax(t) | LayerTap::Parallel(t, _) => t.positions(),
            LayerTap::Delta(t) => t.positions(),
        }
    }

    /// Keeps the first `positions`.
    pub fn truncate(&mut self, positions: usize) {
        match self {
            LayerTap::Softmax(t) => t.truncate(positions),
            LayerTap::Delta(t) => t.truncate(positions),
            LayerTap::Parallel(a, d) => {
                a.truncate(positions);
                d.truncate(positions);
            }
        }
    }

    /// Heads with a map (value heads for a recurrent layer; a parallel layer's attention heads, then its Mamba2
    /// heads).
    pub fn heads(&self) -> usize {
        match self {
            LayerTap::Softmax(t) => t.heads(),
            LayerTap::Delta(t) => t.heads(),
            LayerTap::Parallel(a, d) => a.heads() + d.heads(),
        }
    }

    /// The weights of `head` for the last `max_queries` positions recorded.
    pub fn map(&self, head: usize, max_queries: usize) -> Result<AttentionMap> {
        match self {
            LayerTap::Softmax(t) => t.map(head, max_queries),
            LayerTap::Delta(t) => t.map(head, max_queries),
            LayerTap::Parallel(a, _) if head < a.heads() => a.map(head, max_queries),
            LayerTap::Parallel(a, d) => {
                let map = d.map(head - a.heads(), max_queries)?;
                Ok(AttentionMap { head, ..map })
            }
        }
    }

    /// Each head's normalised entropy at the last position.
    pub fn entropies(&self) -> Vec<f32> {
        match self {
            LayerTap::Softmax(t) => t.entropies(),
            LayerTap::Delta(t) => t.entropies(),
            LayerTap::Parallel(a, d) => [a.entropies(), d.entropies()].concat(),
        }
    }
}

/// Heads with an attention map in `layer` of `spec`: softmax heads, the value heads of a delta-rule layer, else 0.
pub fn map_heads(spec: &ModelSpec, layer: usize) -> usize {
    match spec.layers.get(layer).map(|l| &l.mixer) {
        // A differential head is two maps subtracted; it is not drawn yet.
        Some(MixerSpec::Attention(a)) if a.differential.is_none() => a.n_heads,
        Some(MixerSpec::GatedDeltaNet(g)) => g.n_v_heads,
        Some(MixerSpec::Gla(g)) => g.n_heads,
        Some(MixerSpec::Hgrn2(g)) => g.n_heads,
        Some(MixerSpec::Lightning(l)) => l.n_heads,
        Some(MixerSpec::LinearAttn(l)) => l.n_heads,
        Some(MixerSpec::Rwkv7(r)) => r.n_heads,
        Some(MixerSpec::Gsa(g)) => g.n_heads,
        // A parallel layer maps its attention heads, then its Mamba2 heads.
        Some(MixerSpec::Parallel(parts)) => parts
            .iter()
            .map(|m| match m {
                MixerSpec::Attention(a) if a.differential.is_none() => a.n_heads,
                MixerSpec::Mamba2(m) => m.n_heads,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Checks that `layer` of `spec` has an attention map (softmax or delta rule).
pub fn check_mapped(spec: &ModelSpec, layer: usize) -> Result<()> {
    let l = spec.layers.get(layer).ok_or_else(|| {
        CoreError::InvalidInput(format!("layer {layer} is past the model's {} layers", spec.layers.len()))
    })?;
    match map_heads(spec, layer) {
        0 => Err(CoreError::InvalidInput(format!(
            "layer {layer} has no attention map (its mixer is {}; softmax, delta-rule, GLA, HGRN2, Lightning and \
             linear-attention layers have one)",
            l.mixer.kind()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        let mut rng = crate::sampling::Rng::new(seed);
        (0..n).map(|_| lo + (hi - lo) * rng.next_f32()).collect()
    }

    #[test]
    fn implicit_mamba2_weights_reproduce_the_scan_before_its_skip() {
        use crate::reference::mamba2;
        let config = include_str!("../../../tests/fixtures/falcon_h1/config.json");
        let spec = ModelSpec::from_config_json(config).unwrap();
        let Some(MixerSpec::Mamba2(m)) =
            spec.layers[0].mixer.parts().into_iter().find(|p| matches!(p, MixerSpec::Mamba2(_)))
        else {
            panic!("Falcon-H1 layers hold Mamba2")
        };
        let dims = mamba2::Dims { heads: 4, head_dim: 3, groups: 2, state: 5, dt_limit: (0.0, f32::INFINITY) };
        let (h, p, t_len) = (dims.heads, dims.head_dim, 9);
        let width = h * p + 2 * dims.groups * dims.state;
        let xbc = noise(11, t_len * width, -1.0, 1.0);
        let dt_raw = noise(12, t_len * h, -1.0, 1.0);
        let params = [noise(13, h, -1.0, 1.0), noise(14, h, -0.5, 0.5), noise(15, h, -1.0, 1.0)].concat();
        let mut state = vec![0.0; h * dims.state * p];
        let y = mamba2::scan(&xbc, &dt_raw, &params, &mut state, &dims);
        let (q, k, g) = mamba2::as_gated(&xbc, &dt_raw, &params, &dims);
        let spec_dims =
            Mamba2Spec { n_heads: h, head_dim: p, n_groups: dims.groups, state_dim: dims.state, ..m.clone() };
        let mut tap = DeltaTap::mamba2(&spec, 0, &spec_dims);
        tap.push(&q, &k, &vec![1.0; t_len * h], &g);
        for head in 0..h {
            let map = tap.map(head, t_len).unwrap();
            for t in 0..t_len {
                for j in 0..p {
                    let x = |s: usize| xbc[s * width + head * p + j];
                    let dt = |s: usize| {
                        gated_delta::softplus(dt_raw[s * h + head] + params[h + head])
                            .clamp(dims.dt_limit.0, dims.dt_limit.1)
                    };
                    let mixed: f32 = (0..=t).map(|s| map.weights[t * t_len + s] * dt(s) * x(s)).sum();
                    let want = y[t * h * p + head * p + j] - params[2 * h + head] * x(t);
                    assert!((mixed - want).abs() < 1e-5, "head {head} t {t} channel {j}: {mixed} vs {want}");
                }
            }
        }
    }

    #[test]
    fn implicit_delta_weights_reproduce_the_recurrence() {
        let dims = Dims { n_k_heads: 2, n_v_heads: 4, dk: 5, dv: 3 };
        let t_len = 11;
        for per_channel in [false, true] {
            let decays = if per_channel { dims.n_v_heads * dims.dk } else { dims.n_v_heads };
            let q = noise(1, t_len * dims.n_k_heads * dims.dk, -1.0, 1.0);
            let k = noise(2, t_len * dims.n_k_heads * dims.dk, -1.0, 1.0);
            let v = noise(3, t_len * dims.n_v_heads * dims.dv, -1.0, 1.0);
            let beta = noise(4, t_len * dims.n_v_heads, 0.1, 1.9);
            let g = noise(5, t_len * decays, -0.6, 0.0);
            let decay = match per_channel {
                true => gated_delta::Decay::PerChannel(&g),
                false => gated_delta::Decay::PerHead(&g),
            };
            let mut state = vec![0.0; dims.n_v_heads * dims.dk * dims.dv];
            let want = gated_delta::recurrent(&q, &k, &v, decay, &beta, &mut state, &dims);
            let rule = Rule::Delta { beta_scale: 1.0, gate_params: Vec::new() };
            let mut tap = tap_of(dims, per_channel, rule);
            tap.push(&q, &k, &beta, &g);
            let map = tap.map(3, 4).unwrap();
            assert_eq!((map.first_query, map.queries, map.keys), (t_len - 4, 4, t_len));
            for t in 0..t_len {
                for h in 0..dims.n_v_heads {
                    let row = tap.row(h, t);
                    for c in 0..dims.dv {
                        let got: f32 =
                            row.iter().enumerate().map(|(s, w)| w * v[(s * dims.n_v_heads + h) * dims.dv + c]).sum();
                        let expect = want[(t * dims.n_v_heads + h) * dims.dv + c];
                        assert!(
                            (got - expect).abs() < 1e-4,
                            "per_channel {per_channel} t {t} h {h}: {got} vs {expect}"
                        );
                    }
                }
            }
            assert!(tap.entropies().iter().all(|e| (0.0..=1.0).contains(e)));
        }
    }

    #[test]
    fn implicit_gla_weights_reproduce_the_recurrence() {
        let d = gla::Dims::new(3, 4, 2);
        let t_len = 9;
        let q = noise(6, t_len * 3 * 4, -1.0, 1.0);
        let k = noise(7, t_len * 3 * 4, -1.0, 1.0);
        let v = noise(8, t_len * 3 * 2, -1.0, 1.0);
        let g = gla::log_decay(&noise(9, t_len * 3 * 4, -3.0, 3.0), 16.0);
        let want = gla::recurrent(&q, &k, &v, &g, &mut [0.0; 3 * 4 * 2], &d);
        let dims = Dims { n_k_heads: 3, n_v_heads: 3, dk: 4, dv: 2 };
        let rule = Rule::Gated { decay: GateInput::LogSigmoid(16.0), q_scale: 0.5, normalize: false };
        let mut tap = tap_of(dims, true, rule);
        tap.push(&q, &k, &vec![1.0; t_len * 3], &g);
        for t in 0..t_len {
            for h in 0..3 {
                let row = tap.row(h, t);
                for c in 0..2 {
                    let got: f32 = row.iter().enumerate().map(|(s, w)| w * v[(s * 3 + h) * 2 + c]).sum();
                    let expect = want[(t * 3 + h) * 2 + c];
                    assert!((got - expect).abs() < 1e-4, "t {t} h {h}: {got} vs {expect}");
                }
            }
        }
    }

    fn tap_of(dims: Dims, per_channel: bool, rule: Rule) -> DeltaTap {
        DeltaTap {
            layer: 0,
            slot: 0,
            dims,
            per_channel,
            rule,
            q: vec![],
            k: vec![],
            beta: vec![],
            g: vec![],
            a: vec![],
            b: vec![],
        }
    }

    /// `Σ_s row[s] v_s` for every position and head of `tap`, `[T, heads, dv]`.
    fn mixed(tap: &DeltaTap, v: &[f32], t_len: usize, dv: usize) -> Vec<f32> {
        let heads = tap.heads();
        let mut out = Vec::new();
        for t in 0..t_len {
            for h in 0..heads {
                let row = tap.row(h, t);
                out.extend(
                    (0..dv).map(|c| row.iter().enumerate().map(|(s, w)| w * v[(s * heads + h) * dv + c]).sum::<f32>()),
                );
            }
        }
        out
    }

    #[test]
    fn implicit_weights_of_lightning_hgrn2_and_normalised_linear_attention_reproduce_their_outputs() {
        let (heads, dk, dv, t_len) = (2, 3, 2, 8);
        let dims = Dims { n_k_heads: heads, n_v_heads: heads, dk, dv };
        let (q, k) = (noise(11, t_len * heads * dk, -1.0, 1.0), noise(12, t_len * heads * dk, -1.0, 1.0));
        let v = noise(13, t_len * heads * dv, -1.0, 1.0);
        let ones = vec![1.0; t_len * heads];
        // Lightning: one log decay per head, unscaled queries.
        let slopes = [0.3f32, 0.05];
        let per_channel: Vec<f32> = (0..t_len * heads).flat_map(|i| [-slopes[i % heads]; 3]).collect();
        let want = gla::recurrent(
            &q,
            &k,
            &v,
            &per_channel,
            &mut [0.0; 12],
            &gla::Dims { scale: 1.0, ..gla::Dims::new(heads, dk, dv) },
        );
        let rule = Rule::Gated { decay: GateInput::PerHead(vec![-0.3, -0.05]), q_scale: 1.0, normalize: false };
        let mut tap = tap_of(dims, false, rule);
        tap.push(&q, &k, &ones, &[-0.3, -0.05].repeat(t_len));
        assert!(max_diff(&mixed(&tap, &v, t_len, dv), &want) < 1e-5, "lightning");
        // HGRN2: log decays per channel as given.
        let g = noise(14, t_len * heads * dk, -2.0, 0.0);
        let want = gla::recurrent(&q, &k, &v, &g, &mut [0.0; 12], &gla::Dims::new(heads, dk, dv));
        let rule = Rule::Gated { decay: GateInput::Log, q_scale: (dk as f32).powf(-0.5), normalize: false };
        let mut tap = tap_of(dims, true, rule);
        tap.push(&q, &k, &ones, &g);
        assert!(max_diff(&mixed(&tap, &v, t_len, dv), &want) < 1e-5, "hgrn2");
        // Based: Taylor features, normalised rows.
        let (fq, fk) = (feature_map::taylor(&q, dk), feature_map::taylor(&k, dk));
        let f = 1 + dk + dk * (dk + 1) / 2;
        let want = feature_map::normalized(&fq, &fk, &v, heads, f, dv);
        let rule = Rule::Gated { decay: GateInput::None, q_scale: 1.0, normalize: true };
        let mut tap = tap_of(Dims { dk: f, ..dims }, false, rule);
        tap.push(&fq, &fk, &ones, &vec![0.0; t_len * heads]);
        assert!(max_diff(&mixed(&tap, &v, t_len, dv), &want) < 1e-5, "based");
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn implicit_rwkv7_weights_reproduce_the_generalised_delta_rule() {
        use crate::reference::rwkv7;
        let (heads, dk, dv, t_len) = (2, 4, 3, 7);
        let n = t_len * heads * dk;
        let (r, k) = (noise(21, n, -1.0, 1.0), noise(22, n, -1.0, 1.0));
        let w = noise(23, n, -0.6, -0.05);
        let kk = noise(24, n, -0.5, 0.5);
        let (a, b): (Vec<f32>, Vec<f32>) = (kk.iter().map(|x| -x).collect(), kk.iter().map(|x| x * 0.7).collect());
        let v = noise(25, t_len * heads * dv, -1.0, 1.0);
        let inputs = rwkv7::Inputs { r: &r, w: &w, k: &k, v: &v, a: &a, b: &b };
        let want = rwkv7::recurrent(&inputs, &mut vec![0.0; heads * dk * dv], &rwkv7::Dims { heads, dk, dv });
        let mut tap = tap_of(Dims { n_k_heads: heads, n_v_heads: heads, dk, dv }, true, Rule::Rwkv7);
        tap.push_rwkv7(&r, &w, &k, (&a, &b));
        assert!(max_diff(&mixed(&tap, &v, t_len, dv), &want) < 1e-5);
    }

    #[test]
    fn implicit_gsa_weights_reproduce_the_two_passes() {
        use crate::reference::gsa;
        let (heads, dk, dv, slots, t_len) = (2, 3, 4, 5, 8);
        let q = noise(31, t_len * heads * dk, -1.0, 1.0);
        let k = noise(32, t_len * heads * dk, -1.0, 1.0);
        let v = noise(33, t_len * heads * dv, -1.0, 1.0);
        let g = noise(34, t_len * heads * slots, -2.0, -0.05);
        let d = gsa::Dims { heads, dk, dv, slots, scale: 0.6 };
        let want = gsa::recurrent(&q, &k, &v, &g, &mut vec![0.0; d.state_len()], &d);
        let mut tap =
            tap_of(Dims { n_k_heads: heads, n_v_heads: heads, dk, dv: slots }, true, Rule::Gsa { scale: 0.6 });
        tap.push(&q, &k, &vec![1.0; t_len * heads], &g);
        assert!(max_diff(&mixed(&tap, &v, t_len, dv), &want) < 1e-5);
    }
}
