//! A whole decoder-only model on the CPU, driven by a [`ModelSpec`]: the oracle for the GPU runtime.

use super::gated_delta::{self, Dims};
use super::moe::{route, Routing};
use super::norm::layer_norm;
use super::norm::rms_norm_gated;
use super::{
    attention::{attention_qk_v, differential, Rotation},
    conv::short_conv,
    embedding::embedding,
    linear::linear,
    mlp::{activate, gated},
    norm::rms_norm,
    rope::rope,
};
use super::{feature_map, gla, gsa, hgrn2, mamba2, moh, rat, rwkv7, ternary};
use crate::attention_map::{check_mapped, DeltaTap, HeadLayout, LayerTap};
use crate::spec::{
    Activation, AttentionMask, AttentionSpec, FeatureMap, GatedDeltaNetSpec, GatedMlpSpec, GlaSpec, GsaSpec, Hgrn2Spec,
    LightningSpec, LinearAttnSpec, LinearSpec, LoraSpec, Mamba2Spec, MixerSpec, MlaSpec, MlpSpec, ModelSpec, MoeSpec,
    NormSpec, RatSpec, Rwkv7Spec, ShortConvSpec, Ternary,
};
use crate::tensors::{check_against_spec, TensorSource};
use crate::{CoreError, Result};
use std::collections::HashMap;

/// Per-layer state: key/value history `[positions, n_kv_heads, head_dim]`, or a fixed recurrent state
/// `[n_v_heads, dk, dv]` with the conv history `[channels, kernel - 1]`.
#[derive(Clone)]
enum LayerCache {
    Kv { k: Vec<f32>, v: Vec<f32> },
    Recurrent { state: Vec<f32>, conv: Vec<f32> },
    Rat(rat::RatState),
}

impl LayerCache {
    fn empty(mixer: &MixerSpec) -> Self {
        match mixer {
            MixerSpec::Attention(_) | MixerSpec::Mla(_) => LayerCache::Kv { k: Vec::new(), v: Vec::new() },
            MixerSpec::Rat(_) => LayerCache::Rat(rat::RatState::default()),
            MixerSpec::GatedDeltaNet(g) => LayerCache::Recurrent {
                state: vec![0.0; g.n_v_heads * g.head_k_dim * g.head_v_dim],
                conv: vec![0.0; g.qkv_width() * (g.conv_kernel - 1)],
            },
            MixerSpec::Gla(g) => {
                LayerCache::Recurrent { state: vec![0.0; g.n_heads * g.head_k_dim * g.head_v_dim], conv: Vec::new() }
            }
            MixerSpec::Hgrn2(g) => {
                LayerCache::Recurrent { state: vec![0.0; g.n_heads * g.head_f_dim * g.head_i_dim], conv: Vec::new() }
            }
            MixerSpec::ShortConv(c) => {
                LayerCache::Recurrent { state: Vec::new(), conv: vec![0.0; c.channels * (c.kernel - 1)] }
            }
            MixerSpec::LinearAttn(l) => LayerCache::Recurrent {
                state: vec![0.0; l.n_heads * l.features() * l.carried_values()],
                conv: Vec::new(),
            },
            MixerSpec::Lightning(l) => {
                LayerCache::Recurrent { state: vec![0.0; l.n_heads * l.head_dim * l.head_dim], conv: Vec::new() }
            }
            MixerSpec::Gsa(g) => LayerCache::Recurrent {
                state: vec![0.0; g.n_heads * g.slots * (g.head_k_dim + g.head_v_dim)],
                conv: Vec::new(),
            },
            MixerSpec::Mamba2(m) => LayerCache::Recurrent {
                state: vec![0.0; m.n_heads * m.state_dim * m.head_dim],
                conv: vec![0.0; m.conv_channels() * (m.conv_kernel - 1)],
            },
            MixerSpec::Rwkv7(r) => {
                LayerCache::Recurrent { state: vec![0.0; r.state_len()], conv: vec![0.0; r.r_proj.in_features] }
            }
            MixerSpec::Parallel(_) => unreachable!("caches are per part of a parallel mixer"),
        }
    }

    /// One cache per stateful mixer of `spec`, in schedule order (branches of a parallel mixer each get one).
    fn all(spec: &ModelSpec) -> Vec<Self> {
        spec.layers.iter().flat_map(|l| l.mixer.parts()).map(LayerCache::empty).collect()
    }
}

/// Which form of the gated delta rule a forward uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaForm {
    /// Chunkwise for more than one token, recurrent for one (as prefill and decode kernels do).
    Auto,
    /// Always the token-by-token recurrence.
    Recurrent,
}

/// The model on the CPU in f32 with a KV cache; `forward` appends tokens and returns their logits.
pub struct ReferenceModel {
    spec: ModelSpec,
    weights: HashMap<String, Vec<f32>>,
    rope_tables: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    cache: Vec<LayerCache>,
    /// Each layer's channel-mixer token shift (the previous token's input; empty for other MLPs).
    shifts: Vec<Vec<f32>>,
    /// RWKV-7 layer 0's values in the current forward, which later layers interpolate towards.
    v_first: Vec<f32>,
    position: usize,
    form: DeltaForm,
    tap: Option<LayerTap>,
    /// Switched-off heads as (state slot, head).
    ablated: Vec<(usize, usize)>,
}

impl ReferenceModel {
    /// Decodes every tensor of `spec` from `source` to f32, after checking names and shapes.
    pub fn new(spec: ModelSpec, source: &dyn TensorSource) -> Result<Self> {
        check_against_spec(&spec, source)?;
        let mut weights = HashMap::new();
        for decl in spec.tensors() {
            let values = match decl.packed {
                // Ternary codes unpack to f32 [out, in] (the declared shape is the packed [out / 4, in]).
                true => ternary::unpack_rows(&source.bytes(&decl.name)?, 4 * decl.shape[0], decl.shape[1]),
                false => source.f32(&decl.name)?,
            };
            weights.insert(decl.name.clone(), values);
        }
        let rope_tables = spec
            .layers
            .iter()
            .flat_map(|l| l.mixer.parts())
            .map(|m| match m {
                MixerSpec::Attention(a) => a.rope.as_ref().map(|r| r.tables(spec.max_positions)),
                MixerSpec::Rat(r) => Some(r.rope.tables(spec.max_positions / r.chunk + 1)),
                _ => None,
            })
            .collect();
        let cache = LayerCache::all(&spec);
        let shifts = channel_mix_shifts(&spec);
        Ok(ReferenceModel {
            spec,
            weights,
            rope_tables,
            cache,
            shifts,
            v_first: Vec::new(),
            position: 0,
            form: DeltaForm::Auto,
            tap: None,
            ablated: Vec::new(),
        })
    }

    /// Selects the delta-rule form (to check that chunkwise and recurrent agree end to end).
    pub fn set_delta_form(&mut self, form: DeltaForm) {
        self.form = form;
    }

    /// Tokens processed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Starts recording what layer `layer` needs for its attention map (`None` stops): queries and keys of a
    /// softmax layer, or a delta-rule layer's queries, keys, update strengths and decays.
    pub fn set_attention_tap(&mut self, layer: Option<usize>) -> Result<()> {
        self.tap = match layer {
            None => None,
            Some(l) => {
                check_mapped(&self.spec, l)?;
                Some(match &self.spec.layers[l].mixer {
                    MixerSpec::GatedDeltaNet(g) => {
                        let params = match &g.decay {
                            Some(d) => [self.w(&d.a_log), self.w(&d.dt_bias)].concat(),
                            None => [vec![gated_delta::NO_DECAY_A_LOG; g.n_v_heads], vec![0.0; g.n_v_heads]].concat(),
                        };
                        LayerTap::Delta(DeltaTap::new(&self.spec, l, g, params))
                    }
                    MixerSpec::Gla(g) => LayerTap::Delta(DeltaTap::gla(&self.spec, l, g)),
                    MixerSpec::Hgrn2(g) => LayerTap::Delta(DeltaTap::hgrn2(&self.spec, l, g)),
                    MixerSpec::Lightning(m) => LayerTap::Delta(DeltaTap::lightning(&self.spec, l, m)),
                    MixerSpec::LinearAttn(m) => LayerTap::Delta(DeltaTap::linear_attention(&self.spec, l, m)),
                    MixerSpec::Rwkv7(r) => LayerTap::Delta(DeltaTap::rwkv7(&self.spec, l, r)),
                    MixerSpec::Gsa(g) => LayerTap::Delta(DeltaTap::gsa(&self.spec, l, g)),
                    _ => LayerTap::attention(&self.spec, l)?,
                })
            }
        };
        Ok(())
    }

    /// Switches off `heads` ((layer, head) pairs of softmax-attention or Gated DeltaNet layers): their outputs are
    /// zeroed before the output projection (before the output gate in attention, after it in Gated DeltaNet).
    pub fn set_ablation(&mut self, heads: &[(usize, usize)]) -> Result<()> {
        let mut ablated = Vec::with_capacity(heads.len());
        for &(layer, head) in heads {
            ablated.push((HeadLayout::of(&self.spec, layer, head)?.slot, head));
        }
        self.ablated = ablated;
        Ok(())
    }

    /// What the attention tap recorded.
    pub fn attention_tap(&self) -> Option<&LayerTap> {
        self.tap.as_ref()
    }

    /// Runs the softmax-attention layers with the masks of `from` (the same model under another policy) from the
    /// next forward on, keeping the context: what a session's router does after a prefill.
    pub fn set_attention_masks(&mut self, from: &ModelSpec) {
        for (mine, theirs) in self.spec.layers.iter_mut().zip(&from.layers) {
            for (m, t) in mine.mixer.parts_mut().into_iter().zip(theirs.mixer.parts()) {
                if let (MixerSpec::Attention(a), MixerSpec::Attention(b)) = (m, t) {
                    a.mask = b.mask.clone();
                }
            }
        }
    }

    /// Forgets the context.
    pub fn reset(&mut self) {
        if let Some(tap) = &mut self.tap {
            tap.truncate(0);
        }
        self.cache = LayerCache::all(&self.spec);
        self.shifts = channel_mix_shifts(&self.spec);
        self.position = 0;
    }

    fn w(&self, name: &str) -> &[f32] {
        &self.weights[name]
    }

    /// `scale * x W^T + b` over the layer's rows of its stored tensor; ternary layers quantise `x` per token and
    /// multiply the ternary product by their multiplier.
    fn linear(&self, x: &[f32], l: &LinearSpec) -> Vec<f32> {
        let (w, k) = (self.w(&l.weight), l.in_features);
        let rows = l.row_indices();
        let pick = |w: &[f32], width: usize| -> Vec<f32> {
            rows.iter().flat_map(|&r| w[r * width..(r + 1) * width].iter().copied()).collect()
        };
        let mut y = match (&l.ternary, &l.rows) {
            (Some(t), _) => {
                // Codes and multiplier belong to the whole stored tensor; the layer takes its rows of the codes.
                let (codes, multiplier) = match t {
                    Ternary::PackedRows { weight_scale } => (w.to_vec(), 1.0 / self.w(weight_scale)[0]),
                    Ternary::Absmean { .. } => ternary::absmean(w),
                };
                let normed = match t {
                    Ternary::Absmean { input_norm: Some(n) } => self.norm(x, n),
                    _ => x.to_vec(),
                };
                let mut y = linear(&ternary::act_quant(&normed, k), &pick(&codes, k), None, k, l.out_features);
                y.iter_mut().for_each(|v| *v *= multiplier);
                y
            }
            (None, None) => linear(x, w, None, k, l.out_features),
            (None, Some(_)) => linear(x, &pick(w, k), None, k, l.out_features),
        };
        if l.scale != 1.0 {
            y.iter_mut().for_each(|v| *v *= l.scale);
        }
        if let Some(h) = &l.hgf {
            // The correction sees the layer's unquantised input.
            let mid = linear(x, self.w(&h.lora_a), None, k, h.rank);
            let correction = linear(&mid, &pick(self.w(&h.lora_b), h.rank), None, h.rank, l.out_features);
            let g = self.w(&h.gate);
            for (row, c) in y.chunks_exact_mut(l.out_features).zip(correction.chunks_exact(l.out_features)) {
                for ((v, cv), &r) in row.iter_mut().zip(c).zip(&rows) {
                    *v += g[if h.per_channel { r } else { 0 }] * cv;
                }
            }
        }
        if let Some(b) = l.bias.as_deref().map(|b| self.w(b)) {
            for row in y.chunks_exact_mut(l.out_features) {
                row.iter_mut().zip(&rows).for_each(|(v, &r)| *v += b[r]);
            }
        }
        y
    }

    fn norm(&self, x: &[f32], n: &NormSpec) -> Vec<f32> {
        match n.centered {
            true => layer_norm(x, self.w(&n.weight), n.bias.as_deref().map(|b| self.w(b)), n.dim, n.eps),
            false => rms_norm(x, self.w(&n.weight), n.dim, n.eps, n.unit_offset),
        }
    }

    fn opt_norm(&self, x: &[f32], n: &Option<NormSpec>) -> Vec<f32> {
        n.as_ref().map_or_else(|| x.to_vec(), |n| self.norm(x, n))
    }

    fn attention(&mut self, li: usize, a: &AttentionSpec, h: &[f32], pos0: usize) -> Vec<f32> {
        let mut q = self.linear(h, &a.q_proj);
        let gate = a.gate_proj.as_ref().map(|g| self.linear(h, g));
        let mut k = self.linear(h, &a.k_proj);
        let v = self.linear(h, &a.v_proj);
        if let Some((qn, kn)) = &a.qk_norm {
            q = self.norm(&q, qn);
            k = self.norm(&k, kn);
        }
        // StreamingLLM layers cache unrotated keys and rotate by cache position inside attention.
        let mut rotation = None;
        // Differential heads rotate each half as a head of its own.
        let halves = if a.differential.is_some() { 2 } else { 1 };
        let (q_heads, k_heads, rope_dim) = (a.n_heads * halves, a.n_kv_heads * halves, a.head_dim / halves);
        if let (Some(r), Some((cos, sin))) = (&a.rope, &self.rope_tables[li]) {
            match a.mask.repositions() {
                true => rotation = Some(Rotation { cos, sin, rotary_dim: r.rotary_dim }),
                false => {
                    rope(&mut q, q_heads, rope_dim, r.rotary_dim, pos0, cos, sin);
                    rope(&mut k, k_heads, rope_dim, r.rotary_dim, pos0, cos, sin);
                }
            }
        }
        let lambda = a.differential.as_ref().map(|d| d.lambda(d.lambda.each_ref().map(|n| self.w(n))));
        let LayerCache::Kv { k: kc, v: vc } = &mut self.cache[li] else {
            unreachable!("attention layer has a KV cache")
        };
        kc.extend_from_slice(&k);
        vc.extend_from_slice(&v);
        if let Some(tap) = self.tap.as_mut().and_then(|t| t.softmax_at(li)) {
            tap.push(&q, &k);
        }
        let (heads, dims) = ((a.n_heads, a.n_kv_heads), (a.head_dim, a.head_dim));
        let mut o = match lambda {
            None => attention_qk_v(&q, kc, vc, heads, dims, pos0, &a.mask, a.scale, rotation),
            Some(lambda) => differential(&q, kc, vc, heads, a.head_dim, pos0, &a.mask, (a.scale, lambda)),
        };
        if let Some(m) = &a.head_routing {
            let logits: Vec<Vec<f32>> = m.routers.iter().map(|r| self.linear(h, r)).collect();
            let width = a.n_heads * a.head_dim;
            for (t, row) in o.chunks_mut(width).enumerate() {
                let token: Vec<f32> = logits
                    .iter()
                    .zip(&m.routers)
                    .flat_map(|(l, r)| l[t * r.out_features..(t + 1) * r.out_features].to_vec())
                    .collect();
                let weights = moh::head_weights(&token, a.n_heads, m.shared, m.top_k);
                for (c, x) in row.iter_mut().enumerate() {
                    *x *= weights[c / a.head_dim];
                }
            }
        }
        for &(_, head) in self.ablated.iter().filter(|(slot, _)| *slot == li) {
            for row in o.chunks_mut(a.n_heads * a.head_dim) {
                row[head * a.head_dim..(head + 1) * a.head_dim].fill(0.0);
            }
        }
        if let Some(gate) = gate {
            o = gated(Activation::Sigmoid, &gate, &o);
        }
        if let Some(n) = &a.sub_norm {
            o = self.norm(&o, n);
        }
        if let Some(d) = &a.differential {
            o.iter_mut().for_each(|x| *x *= 1.0 - d.lambda_init);
        }
        self.linear(&o, &a.o_proj)
    }

    fn gated_deltanet(&mut self, li: usize, g: &GatedDeltaNetSpec, h: &[f32]) -> Vec<f32> {
        let width = g.qkv_width();
        let tokens = h.len() / self.spec.hidden;
        let parts: Vec<Vec<f32>> = g.in_proj.iter().map(|l| self.linear(h, l)).collect();
        let mut qkv = Vec::with_capacity(tokens * width);
        for t in 0..tokens {
            for (p, l) in parts.iter().zip(&g.in_proj) {
                qkv.extend_from_slice(&p[t * l.out_features..(t + 1) * l.out_features]);
            }
        }
        let conv_w: Vec<f32> = g.conv.iter().flat_map(|c| self.w(c).to_vec()).collect();
        let b = self.linear(h, &g.b_proj);
        let hv = g.n_v_heads;
        let (head_decay, mut beta) = match &g.decay {
            Some(d) if !d.per_channel => {
                gated_delta::gates(&self.linear(h, &d.a_proj), &b, self.w(&d.a_log), self.w(&d.dt_bias))
            }
            _ => gated_delta::gates(&vec![0.0; b.len()], &b, &vec![gated_delta::NO_DECAY_A_LOG; hv], &vec![0.0; hv]),
        };
        let channel_decay = match &g.decay {
            Some(d) if d.per_channel => {
                let a = self.low_rank(h, d.a_down.as_ref(), &d.a_proj);
                Some(gated_delta::channel_gates(&a, self.w(&d.a_log), self.w(&d.dt_bias)))
            }
            _ => None,
        };
        beta.iter_mut().for_each(|b| *b *= g.beta_scale);
        let z = g.output_gate.as_ref().map(|z| (self.low_rank(h, z.down.as_ref(), &z.proj), z.act));
        let form = self.form;
        let LayerCache::Recurrent { state, conv } = &mut self.cache[li] else { unreachable!("GDN layer has a state") };
        let qkv = short_conv(&qkv, (&conv_w, None), conv, width, g.conv_kernel, true);
        let key = g.n_k_heads * g.head_k_dim;
        let split = |off: usize, w: usize| -> Vec<f32> {
            qkv.chunks_exact(width).flat_map(|r| r[off..off + w].to_vec()).collect()
        };
        let (q, k, v) = (split(0, key), split(key, key), split(2 * key, width - 2 * key));
        let dims = Dims { n_k_heads: g.n_k_heads, n_v_heads: g.n_v_heads, dk: g.head_k_dim, dv: g.head_v_dim };
        let decay = match &channel_decay {
            Some(c) => gated_delta::Decay::PerChannel(c),
            None => gated_delta::Decay::PerHead(&head_decay),
        };
        if let Some(tap) = self.tap.as_mut().and_then(|t| t.delta_at(li)) {
            tap.push(&q, &k, &beta, channel_decay.as_deref().unwrap_or(&head_decay));
        }
        let o = if form == DeltaForm::Auto && tokens > 1 {
            gated_delta::chunked(&q, &k, &v, decay, &beta, state, &dims)
        } else {
            gated_delta::recurrent(&q, &k, &v, decay, &beta, state, &dims)
        };
        let mut o = match z {
            Some((z, Activation::Silu)) => rms_norm_gated(&o, &z, self.w(&g.norm.weight), g.norm.dim, g.norm.eps),
            Some((z, act)) => gated(act, &z, &self.norm(&o, &g.norm)),
            None => self.norm(&o, &g.norm),
        };
        for &(_, head) in self.ablated.iter().filter(|(slot, _)| *slot == li) {
            for row in o.chunks_mut(g.n_v_heads * g.head_v_dim) {
                row[head * g.head_v_dim..(head + 1) * g.head_v_dim].fill(0.0);
            }
        }
        self.linear(&o, &g.out_proj)
    }

    /// `up(down(x))`, or `up(x)` without a down projection.
    fn low_rank(&self, x: &[f32], down: Option<&LinearSpec>, up: &LinearSpec) -> Vec<f32> {
        match down {
            Some(d) => self.linear(&self.linear(x, d), up),
            None => self.linear(x, up),
        }
    }

    fn gla(&mut self, li: usize, g: &GlaSpec, h: &[f32]) -> Vec<f32> {
        let (q, k, v) = (self.linear(h, &g.qkv[0]), self.linear(h, &g.qkv[1]), self.linear(h, &g.qkv[2]));
        let decay = gla::log_decay(&self.linear(&self.linear(h, &g.gk_down), &g.gk_up), g.gate_normalizer);
        let gate = g.g_proj.as_ref().map(|l| self.linear(h, l));
        let dims = gla::Dims::new(g.n_heads, g.head_k_dim, g.head_v_dim);
        if let Some(tap) = self.tap.as_mut().and_then(|t| t.delta_at(li)) {
            tap.push(&q, &k, &vec![1.0; q.len() / g.head_k_dim], &decay);
        }
        let form = self.form;
        let LayerCache::Recurrent { state, .. } = &mut self.cache[li] else { unreachable!("GLA layer has a state") };
        let o = if form == DeltaForm::Auto && h.len() > self.spec.hidden {
            gla::chunked(&q, &k, &v, &decay, state, &dims)
        } else {
            gla::recurrent(&q, &k, &v, &decay, state, &dims)
        };
        let o = match gate {
            Some(z) => rms_norm_gated(&o, &z, self.w(&g.norm.weight), g.norm.dim, g.norm.eps),
            None => rms_norm(&o, self.w(&g.norm.weight), g.norm.dim, g.norm.eps, false),
        };
        self.linear(&o, &g.out_proj)
    }

    fn linear_attn(&mut self, li: usize, l: &LinearAttnSpec, h: &[f32]) -> Vec<f32> {
        let d = l.head_k_dim;
        let bias = |s: &LinearSpec| self.w(s.bias.as_deref().expect("feature maps have biases")).to_vec();
        let phi = |x: &[f32], which: usize| match &l.feature {
            FeatureMap::Hadamard(layers) => {
                let [w1, w2] = [&layers[2 * which], &layers[2 * which + 1]];
                feature_map::hadamard(x, self.w(&w1.weight), &bias(w1), self.w(&w2.weight), &bias(w2), d)
            }
            FeatureMap::Taylor => feature_map::taylor(x, d),
            FeatureMap::Hedgehog(layers) => {
                let f = &layers[which];
                feature_map::hedgehog(x, self.w(&f.weight), &bias(f), d)
            }
        };
        let q = phi(&self.linear(h, &l.qkv[0]), 0);
        let k = phi(&self.linear(h, &l.qkv[1]), 1);
        let v = self.linear(h, &l.qkv[2]);
        let v = if l.normalize { feature_map::with_ones(&v, l.head_v_dim) } else { v };
        if let Some(tap) = self.tap.as_mut().and_then(|t| t.delta_at(li)) {
            let heads = q.len() / l.features();
            tap.push(&q, &k, &vec![1.0; heads], &vec![0.0; heads]);
        }
        let zero_decay = vec![0.0; q.len()];
        let dims = gla::Dims { heads: l.n_heads, dk: l.features(), dv: l.carried_values(), scale: l.scale };
        let form = self.form;
        let LayerCache::Recurrent { state, .. } = &mut self.cache[li] else { unreachable!("linear attention state") };
        let o = if form == DeltaForm::Auto && h.len() > self.spec.hidden {
            gla::chunked(&q, &k, &v, &zero_decay, state, &dims)
        } else {
            gla::recurrent(&q, &k, &v, &zero_decay, state, &dims)
        };
        let o = if l.normalize { feature_map::divide(&o, l.head_v_dim) } else { o };
        let o = match &l.norm {
            Some(n) => self.norm(&o, n),
            None => o,
        };
        self.linear(&o, &l.out_proj)
    }

    /// MLA the plain way (expanded per-head keys and values, no weight absorption), as transformers computes it.
    fn mla(&mut self, li: usize, m: &MlaSpec, h: &[f32], pos0: usize) -> Vec<f32> {
        let (heads, nope, rope, vd, rank) = (m.n_heads, m.nope_dim, m.rope_dim, m.v_dim, m.kv_rank);
        let q = self.linear(h, &m.q_proj);
        let kv = self.linear(h, &m.kv_a_proj);
        let mut k = Vec::new();
        let mut v = Vec::new();
        for row in kv.chunks_exact(rank + rope) {
            let c = self.norm(&row[..rank], &m.kv_norm);
            let kvb = self.linear(&c, &m.kv_b_proj);
            for head in kvb.chunks_exact(nope + vd) {
                k.extend_from_slice(&head[..nope]);
                k.extend_from_slice(&row[rank..]);
                v.extend_from_slice(&head[nope..]);
            }
        }
        let LayerCache::Kv { k: kc, v: vc } = &mut self.cache[li] else { unreachable!("MLA layer has a KV cache") };
        kc.extend_from_slice(&k);
        vc.extend_from_slice(&v);
        let causal = AttentionMask::default();
        let o = attention_qk_v(&q, kc, vc, (heads, heads), (nope + rope, vd), pos0, &causal, m.scale, None);
        self.linear(&o, &m.o_proj)
    }

    /// Lightning attention through the GLA recurrence with a constant per-head decay `-slope` and unscaled queries.
    fn lightning(&mut self, li: usize, l: &LightningSpec, h: &[f32]) -> Vec<f32> {
        let silu = |x: Vec<f32>| x.into_iter().map(|v| activate(Activation::Silu, v)).collect::<Vec<f32>>();
        let d = l.head_dim;
        let q = silu(self.linear(h, &l.qkv[0]));
        let (k, v) = (silu(self.linear(h, &l.qkv[1])), silu(self.linear(h, &l.qkv[2])));
        let per_token: Vec<f32> = l.slopes.iter().flat_map(|&s| std::iter::repeat_n(-s, d)).collect();
        let decay = per_token.repeat(q.len() / per_token.len());
        if let Some(tap) = self.tap.as_mut().and_then(|t| t.delta_at(li)) {
            let positions = q.len() / (l.n_heads * d);
            let per_head: Vec<f32> = l.slopes.iter().map(|s| -s).collect();
            tap.push(&q, &k, &vec![1.0; positions * l.n_heads], &per_head.repeat(positions));
        }
        let dims = gla::Dims { scale: 1.0, ..gla::Dims::new(l.n_heads, d, d) };
        let form = self.form;
        let LayerCache::Recurrent { state, .. } = &mut self.cache[li] else { unreachable!("lightning state") };
        let o = if form == DeltaForm::Auto && h.len() > self.spec.hidden {
            gla::chunked(&q, &k, &v, &decay, state, &dims)
        } else {
            gla::recurrent(&q, &k, &v, &decay, state, &dims)
        };
        let o = self.norm(&o, &l.norm);
        let o = gated(Activation::Sigmoid, &self.linear(h, &l.output_gate), &o);
        self.linear(&o, &l.out_proj)
    }

    fn short_conv(&mut self, li: usize, c: &ShortConvSpec, h: &[f32]) -> Vec<f32> {
        let n = c.channels;
        let [b, gate, x] = [0, 1, 2].map(|i| self.linear(h, &c.in_proj[i]));
        let bx = gated(Activation::Identity, &b, &x);
        let w = self.w(&c.conv).to_vec();
        let LayerCache::Recurrent { conv, .. } = &mut self.cache[li] else { unreachable!("conv layer has a state") };
        let y = gated(Activation::Identity, &gate, &short_conv(&bx, (&w, None), conv, n, c.kernel, false));
        self.linear(&y, &c.out_proj)
    }

    fn hgrn2(&mut self, li: usize, g: &Hgrn2Spec, h: &[f32]) -> Vec<f32> {
        let lb = match &g.lower_bound {
            Some((name, layer, layers)) if *layer > 0 => Some(hgrn2::lower_bound(self.w(name), *layers, *layer)),
            _ => None,
        };
        let (q, k, decay) = hgrn2::gates(&self.linear(h, &g.q_proj), &self.linear(h, &g.f_proj), lb.as_deref());
        let v = self.linear(h, &g.i_proj);
        if let Some(tap) = self.tap.as_mut().and_then(|t| t.delta_at(li)) {
            tap.push(&q, &k, &vec![1.0; q.len() / g.head_f_dim], &decay);
        }
        let dims = gla::Dims::new(g.n_heads, g.head_f_dim, g.head_i_dim);
        let form = self.form;
        let LayerCache::Recurrent { state, .. } = &mut self.cache[li] else { unreachable!("HGRN2 layer has a state") };
        let o = if form == DeltaForm::Auto && h.len() > self.spec.hidden {
            gla::chunked(&q, &k, &v, &decay, state, &dims)
        } else {
            gla::recurrent(&q, &k, &v, &decay, state, &dims)
        };
        let o = self.norm(&o, &g.norm);
        self.linear(&o, &g.out_proj)
    }

    /// One stateful mixer's output for the block input `h`, using cache `slot`.
    fn mix(&mut self, slot: usize, mixer: &MixerSpec, h: &[f32], pos0: usize) -> Vec<f32> {
        match mixer {
            MixerSpec::Attention(a) => self.attention(slot, a, h, pos0),
            MixerSpec::GatedDeltaNet(g) => self.gated_deltanet(slot, g, h),
            MixerSpec::Gla(g) => self.gla(slot, g, h),
            MixerSpec::Hgrn2(g) => self.hgrn2(slot, g, h),
            MixerSpec::ShortConv(c) => self.short_conv(slot, c, h),
            MixerSpec::LinearAttn(l) => self.linear_attn(slot, l, h),
            MixerSpec::Lightning(l) => self.lightning(slot, l, h),
            MixerSpec::Mla(m) => self.mla(slot, m, h, pos0),
            MixerSpec::Mamba2(m) => self.mamba2(slot, m, h),
            MixerSpec::Gsa(g) => self.gsa(slot, g, h),
            MixerSpec::Rwkv7(r) => self.rwkv7(slot, r, h),
            MixerSpec::Rat(r) => self.rat(slot, r, h, pos0),
            MixerSpec::Parallel(_) => unreachable!("parallel mixers run part by part"),
        }
    }

    /// RAT: `in_proj`, the recurrence and chunk attention of [`rat::rat`], then `o_proj`.
    fn rat(&mut self, li: usize, r: &RatSpec, h: &[f32], pos0: usize) -> Vec<f32> {
        let proj = self.linear(h, &r.in_proj);
        let dims = rat::RatDims {
            hidden: r.hidden,
            head_dim: r.head_dim,
            groups: r.groups,
            chunk: r.chunk,
            rotary_dim: r.rope.rotary_dim,
        };
        let bias = self.w(&r.gate_bias).to_vec();
        let (cos, sin) = self.rope_tables[li].as_ref().expect("RAT has rope tables");
        let LayerCache::Rat(state) = &mut self.cache[li] else { unreachable!("RAT layer has its state") };
        let o = rat::rat(&proj, &bias, state, pos0, &dims, (cos, sin));
        self.linear(&o, &r.out_proj)
    }

    /// Gated Slot Attention: feature maps and gates, the two passes, then the norm of `silu(o)` and `o_proj`.
    fn gsa(&mut self, slot: usize, g: &GsaSpec, h: &[f32]) -> Vec<f32> {
        let silu = |x: Vec<f32>| x.into_iter().map(|v| activate(Activation::Silu, v)).collect::<Vec<f32>>();
        let [q, k, v] = [0, 1, 2].map(|i| silu(self.linear(h, &g.qkv[i])));
        let gates = gla::log_decay(&self.linear(h, &g.f_proj), g.gate_normalizer);
        if let Some(tap) = self.tap.as_mut().and_then(|t| t.delta_at(slot)) {
            tap.push(&q, &k, &vec![1.0; q.len() / g.head_k_dim], &gates);
        }
        let dims = gsa::Dims { heads: g.n_heads, dk: g.head_k_dim, dv: g.head_v_dim, slots: g.slots, scale: g.scale };
        let LayerCache::Recurrent { state, .. } = &mut self.cache[slot] else { unreachable!("GSA state") };
        let o = gsa::recurrent(&q, &k, &v, &gates, state, &dims);
        let o = self.norm(&silu(o), &g.norm);
        self.linear(&o, &g.out_proj)
    }

    /// Mamba2: `in_proj` parts, the biased conv + SiLU over `x|B|C`, the selective scan, then the `silu(z)` gate (or
    /// the gated group norm) and `out_proj`.
    fn mamba2(&mut self, slot: usize, m: &Mamba2Spec, h: &[f32]) -> Vec<f32> {
        let tokens = h.len() / self.spec.hidden;
        let z = self.linear(h, &m.z);
        let parts: Vec<Vec<f32>> = m.xbc.iter().map(|l| self.linear(h, l)).collect();
        let mut xbc = Vec::with_capacity(tokens * m.conv_channels());
        for t in 0..tokens {
            for (part, l) in parts.iter().zip(&m.xbc) {
                xbc.extend_from_slice(&part[t * l.out_features..(t + 1) * l.out_features]);
            }
        }
        let dt_raw = self.linear(h, &m.dt);
        let params = [self.w(&m.a_log), self.w(&m.dt_bias), self.w(&m.d)].concat();
        let conv_w = self.w(&m.conv).to_vec();
        let conv_b = m.conv_bias.as_ref().map(|b| self.w(b).to_vec());
        let LayerCache::Recurrent { state, conv } = &mut self.cache[slot] else { unreachable!("Mamba2 state") };
        let xbc = short_conv(&xbc, (&conv_w, conv_b.as_deref()), conv, m.conv_channels(), m.conv_kernel, true);
        let dims = mamba2::Dims {
            heads: m.n_heads,
            head_dim: m.head_dim,
            groups: m.n_groups,
            state: m.state_dim,
            dt_limit: m.dt_limit,
        };
        if let Some(tap) = self.tap.as_mut().and_then(|t| t.delta_at(slot)) {
            let (q, k, g) = mamba2::as_gated(&xbc, &dt_raw, &params, &dims);
            tap.push(&q, &k, &vec![1.0; tokens * m.n_heads], &g);
        }
        let y = mamba2::scan(&xbc, &dt_raw, &params, state, &dims);
        let y = match &m.norm {
            Some(norm) => rms_norm_gated(&y, &z, self.w(&norm.weight), norm.dim, norm.eps),
            None => gated(Activation::Silu, &z, &y),
        };
        self.linear(&y, &m.out_proj)
    }

    /// `up(act(down(x)))`.
    fn lora(&self, x: &[f32], l: &LoraSpec) -> Vec<f32> {
        let mid: Vec<f32> = self.linear(x, &l.down).into_iter().map(|v| activate(l.act, v)).collect();
        self.linear(&mid, &l.up)
    }

    /// RWKV-7's time mixer (see [`Rwkv7Spec`]).
    fn rwkv7(&mut self, slot: usize, s: &Rwkv7Spec, h: &[f32]) -> Vec<f32> {
        let LayerCache::Recurrent { conv: prev, .. } = &mut self.cache[slot] else { unreachable!("RWKV-7 state") };
        let shifted = rwkv7::token_shift(h, prev);
        let [xr, xw, xk, xv, xa, xg] = s.shift.each_ref().map(|mu| rwkv7::shift_mix(h, &shifted, self.w(mu)));
        let r = self.linear(&xr, &s.r_proj);
        let mut v = self.linear(&xv, &s.v_proj);
        match &s.v_lora {
            None => self.v_first = v.clone(),
            Some(l) => rwkv7::mix_values(&mut v, &self.v_first, &self.lora(&xv, l)),
        }
        let (w_raw, k, a_raw) = (self.lora(&xw, &s.w_lora), self.linear(&xk, &s.k_proj), self.lora(&xa, &s.a_lora));
        let (w, k, a, b) = rwkv7::prepare(&w_raw, &k, &a_raw, [self.w(&s.k_k), self.w(&s.k_a)], s.head_dim);
        if let Some(tap) = self.tap.as_mut().and_then(|t| t.delta_at(slot)) {
            tap.push_rwkv7(&r, &w, &k, (&a, &b));
        }
        let inputs = rwkv7::Inputs { r: &r, w: &w, k: &k, v: &v, a: &a, b: &b };
        let dims = rwkv7::Dims { heads: s.n_heads, dk: s.head_dim, dv: s.head_v_dim };
        let chunked = self.form == DeltaForm::Auto && h.len() > self.spec.hidden;
        let LayerCache::Recurrent { state, .. } = &mut self.cache[slot] else { unreachable!("RWKV-7 state") };
        let o = if chunked { rwkv7::chunked(&inputs, state, &dims) } else { rwkv7::recurrent(&inputs, state, &dims) };
        let gate = self.lora(&xg, &s.g_lora);
        let n = &s.g_norm;
        let bias = n.bias.as_deref().map_or_else(|| vec![0.0; n.dim], |b| self.w(b).to_vec());
        let norm = [self.w(&n.weight), &bias, self.w(&s.r_k)];
        let o = rwkv7::finish(&o, [&r, &k, &v, &gate], norm, &dims, n.eps);
        self.linear(&o, &s.o_proj)
    }

    fn gated_mlp(&self, h: &[f32], g: &GatedMlpSpec) -> Vec<f32> {
        let a = gated(g.act, &self.linear(h, &g.gate), &self.linear(h, &g.up));
        let a = match &g.sub_norm {
            Some(n) => self.norm(&a, n),
            None => a,
        };
        self.linear(&a, &g.down)
    }

    /// Each token through its routed experts (weighted), plus the shared expert (sigmoid-gated when it has a gate).
    fn moe(&self, h: &[f32], m: &MoeSpec) -> Vec<f32> {
        let hidden = self.spec.hidden;
        let routing = Routing {
            scoring: m.scoring,
            selection_bias: m.selection_bias.as_deref().map(|b| self.w(b)),
            top_k: m.top_k,
            normalize: m.normalize,
            scale: m.scale,
        };
        let logits = self.linear(h, &m.router);
        let mut out = vec![0.0; h.len()];
        for (t, x) in h.chunks_exact(hidden).enumerate() {
            let y = &mut out[t * hidden..(t + 1) * hidden];
            for (e, weight) in route(&logits[t * m.experts.len()..(t + 1) * m.experts.len()], &routing) {
                y.iter_mut().zip(self.gated_mlp(x, &m.experts[e])).for_each(|(o, v)| *o += weight * v);
            }
            if let Some(shared) = &m.shared {
                let gate = m.shared_gate.as_ref().map_or(1.0, |g| 1.0 / (1.0 + (-self.linear(x, g)[0]).exp()));
                y.iter_mut().zip(self.gated_mlp(x, shared)).for_each(|(o, v)| *o += gate * v);
            }
        }
        out
    }

    /// Runs `ids` after the tokens already seen and returns their logits, [ids.len(), vocab].
    pub fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(CoreError::InvalidInput("no tokens to process".into()));
        }
        for &id in ids {
            self.spec.check_token(id)?;
        }
        let pos0 = self.position;
        if pos0 + ids.len() > self.spec.max_positions && !self.spec.streams() {
            return Err(CoreError::InvalidInput(format!(
                "context of {} tokens exceeds the model's {} positions",
                pos0 + ids.len(),
                self.spec.max_positions
            )));
        }
        let spec = self.spec.clone();
        let hidden = spec.hidden;
        let mut x = embedding(self.w(&spec.embed), hidden, ids, spec.embed_scale.unwrap_or(1.0));
        if let Some(n) = &spec.embed_norm {
            x = self.norm(&x, n);
        }
        let mut slot = 0;
        for (li, layer) in spec.layers.iter().enumerate() {
            let h = self.opt_norm(&x, &layer.norms.pre_mixer);
            let mut mixed = vec![0.0; h.len()];
            for part in layer.mixer.parts() {
                let out = self.mix(slot, part, &h, pos0);
                mixed.iter_mut().zip(out).for_each(|(a, b)| *a += b);
                slot += 1;
            }
            let mixed = match &layer.norms.post_mixer {
                Some(n) => self.norm(&mixed, n),
                None => mixed,
            };
            add_residual(&mut x, &h, &mixed, layer.residuals.map(|r| r.mixer));
            let h = self.opt_norm(&x, &layer.norms.pre_mlp);
            let out = match &layer.mlp {
                MlpSpec::Gated(g) => self.gated_mlp(&h, g),
                MlpSpec::Moe(m) => self.moe(&h, m),
                MlpSpec::ChannelMix(c) => {
                    let shifted = rwkv7::token_shift(&h, &mut self.shifts[li]);
                    let key = self.linear(&rwkv7::shift_mix(&h, &shifted, self.w(&c.shift)), &c.key);
                    let act: Vec<f32> = key.into_iter().map(|x| activate(Activation::Relu2, x)).collect();
                    self.linear(&act, &c.value)
                }
            };
            let out = match &layer.norms.post_mlp {
                Some(n) => self.norm(&out, n),
                None => out,
            };
            add_residual(&mut x, &h, &out, layer.residuals.map(|r| r.mlp));
        }
        let x = self.norm(&x, &spec.final_norm);
        self.position += ids.len();
        let mut logits = linear(&x, self.w(&spec.lm_head), None, hidden, spec.vocab);
        if spec.logit_scale != 1.0 {
            logits.iter_mut().for_each(|v| *v *= spec.logit_scale);
        }
        Ok(logits)
    }
}

/// `x += block` (plain residual), or `x = alpha * normed + beta * block` (MiniMax's scaled residuals).
fn add_residual(x: &mut [f32], normed: &[f32], block: &[f32], scaled: Option<(f32, f32)>) {
    match scaled {
        None => x.iter_mut().zip(block).for_each(|(a, b)| *a += b),
        Some((alpha, beta)) => {
            x.iter_mut().zip(normed.iter().zip(block)).for_each(|(a, (n, b))| *a = alpha * n + beta * b)
        }
    }
}

/// A zeroed token shift for each channel-mixer layer, nothing for the others.
fn channel_mix_shifts(spec: &ModelSpec) -> Vec<Vec<f32>> {
    spec.layers
        .iter()
        .map(|l| match &l.mlp {
            MlpSpec::ChannelMix(c) => vec![0.0; c.key.in_features],
            _ => Vec::new(),
        })
        .collect()
}
