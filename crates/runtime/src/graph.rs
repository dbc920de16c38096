//! The forward pass, built from the per-layer schedule: every layer kind maps to a fixed sequence of kernel
//! calls recorded into a [`Plan`]. The prefill form uses tiled matmuls and per-query attention; the decode
//! form uses matrix-vector kernels and key-parallel attention. Both read the same weights and buffers.

use crate::error::Result;
use crate::weights::{
    GateInputs, GatedMlpWeights, HgfWeights, LayerWeights, LinearWeights, LoraWeights, MixerWeights, MlpWeights,
    ModelWeights, MoeWeights, NormWeights,
};
use ternlight_core::spec::{
    Activation, AttentionMask, AttentionSpec, GatedDeltaNetSpec, GatedMlpSpec, GlaSpec, GsaSpec, Hgrn2Spec, LayerSpec,
    LightningSpec, LinearAttnSpec, Mamba2Spec, MixerSpec, MlaSpec, MlpSpec, ModelSpec, MoeSpec, RatSpec, RopeSpec,
    Rwkv7Spec, ShortConvSpec,
};
use ternlight_gpu::buffer::Weight;
use ternlight_gpu::kernels::attention::{self, Attention, DecodeSpread};
use ternlight_gpu::kernels::block_sparse::{pool_keys, select, Selection};
use ternlight_gpu::kernels::conv::{short_conv, ShortConv};
use ternlight_gpu::kernels::gated_deltanet::{self, ChunkScratch, DeltaNet, HeadOutputNorm};
use ternlight_gpu::kernels::gla::{self, Decay, Gla};
use ternlight_gpu::kernels::gsa::Gsa;
use ternlight_gpu::kernels::hgrn2;
use ternlight_gpu::kernels::linear_attn::{divide, features, Heads};
use ternlight_gpu::kernels::mamba2::Mamba2;
use ternlight_gpu::kernels::matmul::{linear, Epilogue, InputNorm, Linear, MatmulShape};
use ternlight_gpu::kernels::mla::Mla;
use ternlight_gpu::kernels::moe::{
    combine_slots, expert_linear, group, grouped_linear, route, ExpertLinear, GroupedLinear, Router,
};
use ternlight_gpu::kernels::moh::Moh;
use ternlight_gpu::kernels::norm::rms_norm_gated;
use ternlight_gpu::kernels::norm::{rms_norm, NormArgs, NormOutput};
use ternlight_gpu::kernels::rat::{rat, Rat};
use ternlight_gpu::kernels::rope::{rope, rope_normed, HeadNorms, RopeTables};
use ternlight_gpu::kernels::rwkv7::Rwkv7;
use ternlight_gpu::kernels::sample::TokenSampler;
use ternlight_gpu::kernels::ternary::{
    act_quant, act_quant_bindings, act_quant_hgf, dp4_ready, matvec_dp4, packed_mid, packed_stride, stack_bindings,
    Gated, HgfDown, HgfUp, MatvecDp4, Quantised, Stacked,
};
use ternlight_gpu::kernels::{
    embedding::embedding,
    mlp::{activation, gated_act, gated_act_row_gated},
    residual::scaled_residual,
};
use ternlight_gpu::plan::{Op, Plan, Rows};
use ternlight_gpu::{wgpu, Gpu, GpuError};

/// Which form of the forward pass to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Many tokens at once.
    Prefill,
    /// One token at a time.
    Decode,
}

/// Per-layer state that persists across forwards.
pub enum LayerState {
    /// KV cache `[rows, n_kv_heads, head_dim]` f32 each; position p in row `p % rows`. Full-attention layers hold
    /// the whole context; sliding-window layers a ring of window + prefill capacity rows.
    Attention {
        /// Keys (after RoPE); for MLA, rows of `[latent | key tail]`.
        k: wgpu::Buffer,
        /// Values; `None` for MLA, whose values are the latent at the start of each key row.
        v: Option<wgpu::Buffer>,
        /// Rows held.
        rows: usize,
        /// Leading rows pinned to the first positions (attention sinks); the others are a ring.
        pinned: usize,
        /// Rows a context still reads once the window has moved on (sinks + window; `rows` without a window).
        keeps: usize,
        /// Block-sparse layers: mean-pooled keys of every complete fine window `[windows, n_kv_heads, head_dim]`.
        pooled: Option<wgpu::Buffer>,
        /// Hybrid windows: the Taylor state of the keys that left the window (see `kernels::attention::absorb`).
        memory: Option<wgpu::Buffer>,
    },
    /// Fixed-size recurrent state `[n_v_heads, dk, dv]` f32 and conv history `[channels, kernel - 1]` f32.
    Recurrent {
        /// The delta-rule state.
        state: wgpu::Buffer,
        /// The short-conv history.
        conv: wgpu::Buffer,
    },
}

impl LayerState {
    /// The buffers of this state (for zeroing, snapshots and memory accounting), each with whether it fills row by
    /// row with the context (a KV cache, pooled keys) rather than being a fixed-size state used whole.
    pub fn buffers(&self) -> Vec<(&wgpu::Buffer, bool)> {
        match self {
            LayerState::Attention { k, v, pooled, memory, .. } => {
                let rows = [Some(k), v.as_ref(), pooled.as_ref()].into_iter().flatten().map(|b| (b, true));
                rows.chain(memory.as_ref().map(|m| (m, false))).collect()
            }
            LayerState::Recurrent { state, conv } => vec![(state, false), (conv, false)],
        }
    }
}

/// Activation buffers sized for `capacity` tokens per forward.
pub struct Scratch {
    /// Token ids `[capacity]` u32.
    pub ids: wgpu::Buffer,
    /// Residual stream `[capacity, hidden]`.
    pub x: wgpu::Buffer,
    /// Normed input of a block `[capacity, hidden]`.
    pub h: wgpu::Buffer,
    /// Block output before its post-norm `[capacity, hidden]`.
    pub tmp: wgpu::Buffer,
    /// Queries `[capacity, max q width]`.
    pub q: wgpu::Buffer,
    /// Keys `[capacity, max kv width]`.
    pub k: wgpu::Buffer,
    /// Values `[capacity, max kv width]`.
    pub v: wgpu::Buffer,
    /// Attention output `[capacity, max q width]`.
    pub attn: wgpu::Buffer,
    /// MLP gate `[capacity, max intermediate]`.
    pub gate: wgpu::Buffer,
    /// MLP up `[capacity, max intermediate]`.
    pub up: wgpu::Buffer,
    /// MLP activation `[capacity, max intermediate]`.
    pub act: wgpu::Buffer,
    /// Gathered rows for the head `[logit capacity, hidden]`.
    pub xl: wgpu::Buffer,
    /// Logits `[logit capacity, vocab]`.
    pub logits: wgpu::Buffer,
    /// Decode attention scratch: per head, scores over the key reach and the splits' partial records
    /// (`DecodeSpread::scratch_row`).
    pub scores: wgpu::Buffer,
    /// Attention output gates `[capacity, max q width]`.
    pub attn_gate: wgpu::Buffer,
    /// Linear-attention projections before the conv `[capacity, max qkv width]`.
    pub qkv_raw: wgpu::Buffer,
    /// Linear-attention q/k/v after conv + SiLU `[capacity, max qkv width]`.
    pub qkv: wgpu::Buffer,
    /// Gate inputs `[capacity, 2 * max value heads]` (`[b | a]`).
    pub ab: wgpu::Buffer,
    /// Output-gate inputs `[capacity, max value width]`.
    pub z: wgpu::Buffer,
    /// Linear-attention outputs `[capacity, max value width]`.
    pub lin_out: wgpu::Buffer,
    /// Chunkwise delta-rule / GLA scratch.
    pub chunk: ChunkScratch,
    /// Low-rank gate activations `[capacity, max rank]`.
    pub low_rank: wgpu::Buffer,
    /// Per-channel gate logits `[capacity, max key width]`.
    pub gk: wgpu::Buffer,
    /// Gated-convolution operands `[capacity, max conv channels]` each.
    pub conv_parts: [wgpu::Buffer; 3],
    /// Zero per-head log decays `[max heads]` for linear attention (never written).
    pub zero_decay: wgpu::Buffer,
    /// MoE router logits `[capacity, max experts]`.
    pub router_logits: wgpu::Buffer,
    /// MoE routes `[capacity, max top_k, 2]` (expert, weight).
    pub routes: wgpu::Buffer,
    /// MoE prefill: per expert, the `(token, slot)` rows routed to it `[max experts, capacity]` u32.
    pub expert_lists: wgpu::Buffer,
    /// MoE prefill: rows per expert `[max experts]` u32.
    pub expert_counts: wgpu::Buffer,
    /// MoE prefill: each slot's down-projection output `[capacity, max top_k, hidden]`.
    pub expert_slots: wgpu::Buffer,
    /// Shared-expert gate logits `[capacity]`.
    pub row_gate: wgpu::Buffer,
    /// MLA queries absorbed into the latent space `[capacity, heads * (rank + rope)]`.
    pub mla_q: wgpu::Buffer,
    /// MLA attention output in the latent space `[capacity, heads * rank]`.
    pub mla_ctx: wgpu::Buffer,
    /// Gated Slot Attention's second-pass inputs `[capacity, heads * (2 slots + dv)]`.
    pub gsa_second: wgpu::Buffer,
    /// Int8 fake-quantised inputs of ternary layers `[capacity, widest input]`.
    pub xq: wgpu::Buffer,
    /// The same as packed records for the integer matvec (i8x4 words, factor and low-rank values per token:
    /// `[capacity, packed_stride(widest input, width of hgf_mid)]`).
    pub xq_rows: wgpu::Buffer,
    /// Hybrid Gated Flow's low-rank activations `[capacity, 3 x max rank + gate inputs]`: one layer's, or up to
    /// three distinct corrections' side by side for projections that share one quantisation in decode, with a
    /// Gated DeltaNet's gate inputs there.
    pub hgf_mid: wgpu::Buffer,
    /// RWKV's token-shifted inputs `[capacity, hidden]`: six for a time mixer (the first also serves the channel
    /// mixer); none without RWKV layers.
    pub shifted: Vec<wgpu::Buffer>,
    /// RWKV-7 layer 0's values `[capacity, value width]`, which later layers lerp towards.
    pub v_first: wgpu::Buffer,
    /// RWKV-7's output gate `[capacity, value width]`.
    pub rwkv_gate: wgpu::Buffer,
    /// A LoRA's activated low-rank values `[capacity, max rank]`.
    pub lora_act: wgpu::Buffer,
    /// Mixture-of-Head router logits `[capacity, widest router row]`.
    pub moh_logits: wgpu::Buffer,
    /// Mixture-of-Head head weights `[capacity, max heads]`.
    pub moh_weights: wgpu::Buffer,
    /// Attention output after Mixture-of-Head weighting `[capacity, max q width]`.
    pub moh_out: wgpu::Buffer,
    /// Block-sparse selection scores `[capacity, n_kv_heads * blocks of the context]`.
    pub block_scores: wgpu::Buffer,
    /// Selected key blocks `[capacity, n_kv_heads * most selected]` u32.
    pub block_lists: wgpu::Buffer,
    /// Selected blocks per (token, kv head) `[capacity, n_kv_heads]` u32.
    pub block_counts: wgpu::Buffer,
}

/// Everything a plan binds besides the weights.
pub struct Resources {
    /// Activations.
    pub scratch: Scratch,
    /// State per stateful mixer, in schedule order (see [`MixerSpec::parts`]).
    pub states: Vec<LayerState>,
    /// Distinct RoPE tables, and which one each state slot's mixer uses.
    pub ropes: Vec<(RopeSpec, RopeTables)>,
    /// Index into `ropes` per state slot.
    pub rope_of_slot: Vec<Option<usize>>,
    /// Tokens one forward may hold.
    pub capacity: usize,
    /// Logit rows one forward may compute.
    pub logit_capacity: usize,
    /// Most keys one query may see (the context, or a StreamingLLM ring's sinks and window if longer).
    pub key_reach: usize,
    /// Routed layers' attention entropies at the last token of each prefill forward, `heads` floats per
    /// state slot (see `kernels::attention::entropy`), and that stride: what routed policies decide from.
    pub entropies: Option<(wgpu::Buffer, usize)>,
    /// Draws the next token on the GPU at the end of a forward that asks for one (see [`TokenSampler::set`]).
    pub sampler: TokenSampler,
}

/// The widths linear-attention scratch must hold, the maximum over layers.
#[derive(Default)]
struct LinearWidths {
    qkv: usize,
    value: usize,
    heads: usize,
    dk: usize,
    dv: usize,
}

impl LinearWidths {
    fn add(&mut self, qkv: usize, heads: usize, dk: usize, dv: usize) {
        self.qkv = self.qkv.max(qkv);
        self.value = self.value.max(heads * dv);
        (self.heads, self.dk, self.dv) = (self.heads.max(heads), self.dk.max(dk), self.dv.max(dv));
    }
}

/// Fixed-size state of a recurrent layer: `state_len` and `conv_len` f32, zeroed.
fn recurrent(gpu: &Gpu, state_len: usize, conv_len: usize) -> LayerState {
    LayerState::Recurrent { state: gpu.zeros("recurrent state", state_len), conv: gpu.zeros("conv state", conv_len) }
}

fn check_binding(gpu: &Gpu, what: &str, bytes: u64) -> Result<()> {
    if bytes > gpu.info.max_binding {
        return Err(GpuError::Limit(format!(
            "{what} needs {bytes} bytes in one binding; this device allows {}",
            gpu.info.max_binding
        ))
        .into());
    }
    Ok(())
}

impl Resources {
    /// Allocates state for `max_context` positions and scratch for `capacity` tokens (`logit_capacity` head rows).
    pub fn new(
        gpu: &Gpu,
        spec: &ModelSpec,
        max_context: usize,
        capacity: usize,
        logit_capacity: usize,
    ) -> Result<Self> {
        let (mut qw, mut kvw, mut inter, mut heads) = (0, 0, 0, 0);
        // The widest values a decode attention head sums (its partial records in the scores' rows are that wide).
        let mut value_width = 0;
        let mut lin = LinearWidths::default();
        let (mut rank, mut keyw, mut conv_w, mut zero_w) = (0, 0, 0, 0);
        let (mut experts, mut top_k, mut gate_w, mut mla_w, mut gsa_w) = (0, 0, 0, 0, 0);
        let mut rwkv_v = None;
        let mut states = Vec::with_capacity(spec.layers.len());
        // Block-sparse layers' widest (block scores, block lists, counts) per token.
        let mut sparse = (0, 0, 0);
        // Mixture-of-Head layers' widest (router logits, heads, attention output) per token.
        let mut moh = (0, 0, 0);
        let mut ropes: Vec<(RopeSpec, RopeTables)> = Vec::new();
        let mut rope_of_slot = Vec::with_capacity(spec.layers.len());
        // RoPE tables and decode scores cover the context and the cache positions StreamingLLM layers rotate by.
        let key_reach = spec.attention_layers().map(|a| a.mask.reach(max_context)).fold(max_context, usize::max);
        // The index of `rope`'s tables in `ropes`, uploading them on first use.
        let rope_index = |ropes: &mut Vec<(RopeSpec, RopeTables)>, rope: &RopeSpec| match ropes
            .iter()
            .position(|(s, _)| s == rope)
        {
            Some(i) => i,
            None => {
                ropes.push((rope.clone(), RopeTables::new(gpu, rope, key_reach)));
                ropes.len() - 1
            }
        };
        for (i, layer) in spec.layers.iter().enumerate() {
            for mixer in layer.mixer.parts() {
                match mixer {
                    MixerSpec::Attention(a) => {
                        qw = qw.max(a.n_heads * a.head_dim);
                        kvw = kvw.max(a.n_kv_heads * a.head_dim);
                        if let Some(m) = &a.head_routing {
                            let w = m.logit_width();
                            moh = (moh.0.max(w), moh.1.max(a.n_heads), moh.2.max(a.n_heads * a.head_dim));
                        }
                        heads = heads.max(a.n_heads);
                        value_width = value_width.max(a.head_dim);
                        // Every key a forward's queries need: sinks, the window before the first token, the forward.
                        let rows = a.mask.cache_rows(capacity, max_context);
                        let bytes = 4 * rows as u64 * (a.n_kv_heads * a.head_dim) as u64;
                        check_binding(gpu, &format!("layer {i} KV cache of {rows} positions"), bytes)?;
                        let len = rows * a.n_kv_heads * a.head_dim;
                        states.push(LayerState::Attention {
                            k: gpu.zeros("k cache", len),
                            v: Some(gpu.zeros("v cache", len)),
                            rows,
                            keeps: a.mask.kept(rows),
                            pinned: a.mask.sinks,
                            pooled: a.mask.sparse.map(|b| {
                                let kv = a.n_kv_heads;
                                sparse.0 = sparse.0.max(kv * b.blocks(max_context));
                                sparse.1 = sparse.1.max(kv * b.max_selected());
                                sparse.2 = sparse.2.max(kv);
                                gpu.zeros("pooled keys", b.windows(max_context) * kv * a.head_dim)
                            }),
                            memory: match a.memory_len() {
                                0 => None,
                                len => {
                                    check_binding(gpu, &format!("layer {i} hybrid memory"), 4 * len as u64)?;
                                    Some(gpu.zeros("hybrid memory", len))
                                }
                            },
                        });
                        rope_of_slot.push(a.rope.as_ref().map(|r| rope_index(&mut ropes, r)));
                    }
                    MixerSpec::Rat(r) => {
                        lin.qkv = lin.qkv.max(r.in_width()).max(2 * r.hidden);
                        lin.value = lin.value.max(r.hidden);
                        let len = r.state_len(max_context);
                        check_binding(gpu, &format!("layer {i} RAT chunk summaries"), 4 * len as u64)?;
                        states.push(recurrent(gpu, len, 0));
                        rope_of_slot.push(Some(rope_index(&mut ropes, &r.rope)));
                    }
                    MixerSpec::Mla(m) => {
                        let (latent, q_abs) = (m.kv_rank + m.rope_dim, m.n_heads * (m.kv_rank + m.rope_dim));
                        qw = qw.max(m.n_heads * (m.nope_dim + m.rope_dim)).max(m.n_heads * m.v_dim);
                        kvw = kvw.max(latent);
                        heads = heads.max(m.n_heads);
                        value_width = value_width.max(m.kv_rank);
                        mla_w = mla_w.max(q_abs);
                        let bytes = 4 * max_context as u64 * latent as u64;
                        check_binding(gpu, &format!("layer {i} latent cache of {max_context} positions"), bytes)?;
                        states.push(LayerState::Attention {
                            k: gpu.zeros("latent cache", max_context * latent),
                            v: None,
                            rows: max_context,
                            keeps: max_context,
                            pinned: 0,
                            pooled: None,
                            memory: None,
                        });
                        rope_of_slot.push(None);
                    }
                    MixerSpec::GatedDeltaNet(g) => {
                        lin.add(g.qkv_width(), g.n_v_heads, g.head_k_dim, g.head_v_dim);
                        gate_w = gate_w.max(g.gate_width());
                        let downs =
                            g.decay.iter().flat_map(|d| &d.a_down).chain(g.output_gate.iter().flat_map(|z| &z.down));
                        rank = downs.map(|l| l.out_features).fold(rank, usize::max);
                        let conv = g.qkv_width() * (g.conv_kernel - 1);
                        states.push(recurrent(gpu, g.n_v_heads * g.head_k_dim * g.head_v_dim, conv));
                    }
                    MixerSpec::LinearAttn(l) => {
                        let (f, dv) = (l.features(), l.carried_values());
                        let raw = l.n_heads * (2 * l.head_k_dim + l.head_v_dim);
                        lin.add(raw.max(l.n_heads * (2 * f + dv)), l.n_heads, f, dv);
                        zero_w = zero_w.max(l.n_heads);
                        states.push(recurrent(gpu, l.n_heads * f * dv, 0));
                    }
                    MixerSpec::ShortConv(c) => {
                        conv_w = conv_w.max(c.channels);
                        lin.value = lin.value.max(c.channels);
                        states.push(recurrent(gpu, 0, c.channels * (c.kernel - 1)));
                    }
                    MixerSpec::Hgrn2(g) => {
                        lin.add(g.n_heads * (2 * g.head_f_dim + g.head_i_dim), g.n_heads, g.head_f_dim, g.head_i_dim);
                        keyw = keyw.max(g.n_heads * g.head_f_dim);
                        states.push(recurrent(gpu, g.n_heads * g.head_f_dim * g.head_i_dim, 0));
                    }
                    MixerSpec::Lightning(l) => {
                        let d = l.head_dim;
                        lin.add(3 * l.n_heads * d, l.n_heads, d, d);
                        states.push(recurrent(gpu, l.n_heads * d * d, 0));
                    }
                    MixerSpec::Gla(g) => {
                        lin.add(g.qkv_width(), g.n_heads, g.head_k_dim, g.head_v_dim);
                        (rank, keyw) = (rank.max(g.gk_down.out_features), keyw.max(g.n_heads * g.head_k_dim));
                        states.push(recurrent(gpu, g.n_heads * g.head_k_dim * g.head_v_dim, 0));
                    }
                    MixerSpec::Mamba2(m) => {
                        let (h, n, p) = (m.n_heads, m.state_dim, m.head_dim);
                        lin.add(h * (2 * n + p), h, n, p);
                        (keyw, gate_w, conv_w) = (keyw.max(h * n), gate_w.max(h), conv_w.max(m.conv_channels()));
                        let conv = m.conv_channels() * (m.conv_kernel - 1);
                        states.push(recurrent(gpu, h * n * p, conv));
                    }
                    MixerSpec::Gsa(g) => {
                        let (h, k, v, m) = (g.n_heads, g.head_k_dim, g.head_v_dim, g.slots);
                        lin.add(h * (2 * k + m), h, k, m);
                        lin.add(h * (2 * k + v), h, m, v);
                        (keyw, gsa_w) = (keyw.max(h * m), gsa_w.max(h * (2 * m + v)));
                        states.push(recurrent(gpu, h * m * (k + v), 0));
                    }
                    MixerSpec::Rwkv7(r) => {
                        let (h, dk, dv) = (r.n_heads, r.head_dim, r.head_v_dim);
                        lin.add(5 * h * dk + h * dv, h, dk, dv);
                        let loras = [&r.w_lora, &r.a_lora, &r.g_lora].into_iter().chain(&r.v_lora);
                        rank = loras.map(|l| l.down.out_features).fold(rank, usize::max);
                        rwkv_v = Some(rwkv_v.unwrap_or(0).max(h * dv));
                        // The time mixer's token-shift history, then its channel mixer's.
                        states.push(recurrent(gpu, r.state_len(), 2 * spec.hidden));
                    }
                    MixerSpec::Parallel(_) => unreachable!("parts are never parallel"),
                }
                if !matches!(mixer, MixerSpec::Attention(_) | MixerSpec::Mla(_) | MixerSpec::Rat(_)) {
                    rope_of_slot.push(None);
                }
            }
            if matches!(layer.mlp, MlpSpec::ChannelMix(_)) && !matches!(layer.mixer, MixerSpec::Rwkv7(_)) {
                return Err(
                    GpuError::shape("graph", format!("layer {i}: a channel mixer needs an RWKV time mixer")).into()
                );
            }
            inter = inter.max(layer.mlp.activation_width());
            if let MlpSpec::Moe(m) = &layer.mlp {
                (experts, top_k) = (experts.max(m.experts.len()), top_k.max(m.top_k));
            }
        }
        let h = spec.hidden;
        let hgf_rank = spec.layers.iter().map(LayerSpec::hgf_rank).max().unwrap_or(0);
        // Decode's quantiser leaves a Gated DeltaNet's gate inputs beside the HGF values where its projections are
        // ternary (see `Builder::gated_deltanet`).
        let side_rows = (spec.layers.iter().flat_map(|l| l.mixer.parts()))
            .filter_map(|m| match m {
                MixerSpec::GatedDeltaNet(g) if g.in_proj.iter().any(|p| p.ternary.is_some()) => Some(g.gate_width()),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let (xq_width, mid_width) = (h.max(qw).max(inter), 3 * hgf_rank + side_rows);
        for (what, width) in [("queries", qw), ("MLP activations", inter), ("hidden states", h)] {
            check_binding(gpu, &format!("{what} for {capacity} tokens"), 4 * capacity as u64 * width as u64)?;
        }
        let LinearWidths { qkv: qkvw, value: vw, heads: hv, dk, dv } = lin;
        let scratch = Scratch {
            ids: gpu.zeros("ids", capacity),
            x: gpu.zeros("x", capacity * h),
            h: gpu.zeros("h", capacity * h),
            tmp: gpu.zeros("tmp", capacity * h),
            q: gpu.zeros("q", capacity * qw),
            k: gpu.zeros("k", capacity * kvw),
            v: gpu.zeros("v", capacity * kvw),
            attn: gpu.zeros("attn", capacity * qw),
            gate: gpu.zeros("gate", capacity * inter),
            up: gpu.zeros("up", capacity * inter),
            act: gpu.zeros("act", capacity * inter),
            xl: gpu.zeros("xl", logit_capacity * h),
            logits: gpu.zeros("logits", logit_capacity * spec.vocab),
            scores: gpu.zeros("scores", heads * DecodeSpread::of(gpu).scratch_row(value_width, key_reach)),
            attn_gate: gpu.zeros("attn gate", capacity * qw),
            qkv_raw: gpu.zeros("qkv raw", capacity * qkvw),
            qkv: gpu.zeros("qkv", capacity * qkvw),
            ab: gpu.zeros("ab", capacity * gate_w),
            z: gpu.zeros("z", capacity * vw),
            lin_out: gpu.zeros("linear attention out", capacity * vw),
            chunk: ChunkScratch::new(gpu, if hv > 0 { capacity } else { 1 }, hv.max(1), dk.max(1), dv.max(1)),
            low_rank: gpu.zeros("low rank", capacity * rank),
            gk: gpu.zeros("gk", capacity * keyw),
            conv_parts: ["conv b", "conv c", "conv x"].map(|l| gpu.zeros(l, capacity * conv_w)),
            zero_decay: gpu.zeros("zero decay", zero_w),
            router_logits: gpu.zeros("router logits", capacity * experts),
            routes: gpu.zeros("routes", capacity * 2 * top_k),
            expert_lists: gpu.zeros("expert lists", capacity * experts),
            expert_counts: gpu.zeros("expert counts", experts),
            expert_slots: gpu.zeros("expert slot outputs", capacity * top_k * if experts > 0 { h } else { 0 }),
            row_gate: gpu.zeros("shared expert gate", capacity),
            mla_q: gpu.zeros("absorbed queries", capacity * mla_w),
            mla_ctx: gpu.zeros("latent context", capacity * mla_w),
            gsa_second: gpu.zeros("slot attention second pass", capacity * gsa_w),
            xq: gpu.zeros("quantised activations", capacity * xq_width),
            xq_rows: gpu.zeros("packed int8 activations", capacity * packed_stride(xq_width, mid_width)),
            hgf_mid: gpu.zeros("hgf correction", capacity * mid_width),
            shifted: (0..if rwkv_v.is_some() { 6 } else { 0 })
                .map(|_| gpu.zeros("token shift", capacity * h))
                .collect(),
            v_first: gpu.zeros("v_first", capacity * rwkv_v.unwrap_or(0)),
            rwkv_gate: gpu.zeros("rwkv output gate", capacity * rwkv_v.unwrap_or(0)),
            lora_act: gpu.zeros("lora activations", capacity * rank),
            moh_logits: gpu.zeros("head router logits", capacity * moh.0),
            moh_weights: gpu.zeros("head weights", capacity * moh.1),
            moh_out: gpu.zeros("weighted heads", capacity * moh.2),
            block_scores: gpu.zeros("block scores", capacity * sparse.0),
            block_lists: gpu.zeros("block lists", capacity * sparse.1),
            block_counts: gpu.zeros("block counts", capacity * sparse.2),
        };
        let routed = spec.attention_layers().any(|a| a.mask.sparse.is_some_and(|cfg| cfg.pools_only()));
        let entropies = routed.then(|| (gpu.zeros("attention entropies", states.len() * heads), heads));
        let sampler = TokenSampler::new(gpu, spec.vocab, max_context);
        Ok(Resources { scratch, states, ropes, rope_of_slot, capacity, logit_capacity, key_reach, entropies, sampler })
    }

    /// Bytes of per-layer state (KV caches, recurrent and conv states) held by the session.
    pub fn state_bytes(&self) -> u64 {
        self.states.iter().flat_map(LayerState::buffers).map(|(b, _)| b.size()).sum()
    }
}

/// Heads of one layer switched off, to see what they contribute: their outputs are multiplied by 0 before the
/// output projection (before an attention layer's output gate, after a Gated DeltaNet layer's norm and gate).
pub struct AblatedHeads {
    /// The layer's state slot.
    pub slot: usize,
    /// [capacity, heads * head width] f32: 0 on the ablated heads' channels, 1 elsewhere.
    pub mask: wgpu::Buffer,
    /// The masked output, [capacity, heads * head width] f32.
    pub out: wgpu::Buffer,
}

/// What a plan records beyond the forward pass, for looking inside the model: attention taps and ablated heads.
#[derive(Clone, Copy, Default)]
pub struct Inspection<'a> {
    /// Where tapped layers' queries and keys are copied.
    pub taps: &'a [&'a TapBuffers],
    /// Layers with heads switched off.
    pub ablated: &'a [AblatedHeads],
}

/// Where a plan copies what a tapped layer's attention map needs, `capacity` rows each: a softmax layer's
/// queries and keys (after norms and RoPE), or a recurrent layer's `[q | k | v]` (after any conv) and its gate
/// inputs (`[b | a]` for the delta rule, `gk` for GLA).
pub struct TapBuffers {
    /// The tapped layer's state slot.
    pub slot: usize,
    /// The two row buffers, f32.
    pub rows: [wgpu::Buffer; 2],
}

/// Records forwards of one model in one mode.
struct Builder<'a> {
    gpu: &'a Gpu,
    plan: Plan,
    res: &'a Resources,
    inspection: Inspection<'a>,
    mode: Mode,
    /// How decode attention spreads over workgroups.
    spread: DecodeSpread,
    hidden: usize,
    /// The current block's scaled-residual factors (MiniMax), if any.
    scaled: Option<(f32, f32)>,
    /// State slot of the next mixer (one per stateful mixer, branches of a parallel mixer each having one).
    slot: usize,
    /// The current block's pre-norm when decode folds it into the projections that read `h` (which is then not
    /// written): see [`Builder::block_input`].
    folded_norm: Option<FoldedNorm>,
}

/// Outputs `(y, first column, width)` that put the products of `layers` side by side in rows of `width`.
fn side_by_side_outputs<'b>(
    layers: &[&LinearWeights],
    y: &'b wgpu::Buffer,
    width: usize,
) -> Vec<(&'b wgpu::Buffer, usize, usize)> {
    let starts = layers.iter().scan(0, |at, l| {
        *at += l.w.rows;
        Some(*at - l.w.rows)
    });
    starts.map(|at| (y, at, width)).collect()
}

/// The block input quantised once for several projections ([`Builder::quantise_block_input`]).
struct SharedQuantisation {
    /// Per projection, the first of its Hybrid Gated Flow low-rank values in a token's record in `xq_rows` (`None`
    /// without a correction).
    offsets: Vec<Option<usize>>,
    /// The first of the side matrix's products, when one was asked for.
    side_offset: Option<usize>,
    /// Low-rank values per token.
    width: usize,
    /// The quantised input's width.
    input_width: usize,
}

impl SharedQuantisation {
    /// Where the side matrix's products are in `xq_rows`: (first word, words per token), when it was asked for.
    fn side_columns(&self) -> Option<(usize, usize)> {
        let record = packed_stride(self.input_width, self.width);
        self.side_offset.map(|at| (packed_mid(self.input_width) + at, record))
    }

    /// The fused up projection of `l`, projection `i` of the quantised group, when it has a correction.
    fn correction<'l>(&self, l: &'l LinearWeights, i: usize) -> Option<HgfUp<'l>> {
        l.hgf.as_deref().zip(self.offsets[i]).map(|(h, offset)| HgfUp::new(&h.b, offset))
    }
}

/// A plain RMSNorm that the matrix-vector kernels apply to their input themselves.
#[derive(Clone)]
struct FoldedNorm(NormWeights);

impl FoldedNorm {
    /// `n` when it can be folded: RMSNorm over the whole row of `dim`, without centring or bias.
    fn of(n: &NormWeights, dim: usize) -> Option<Self> {
        let plain = n.bias.is_none() && !n.spec.centered && n.spec.dim == dim;
        plain.then(|| FoldedNorm(n.clone()))
    }

    fn input_norm(&self) -> InputNorm<'_> {
        self.0.as_input_norm()
    }
}

impl<'a> Builder<'a> {
    fn shape(&self) -> MatmulShape {
        match self.mode {
            Mode::Prefill => MatmulShape::Tiled,
            Mode::Decode => MatmulShape::Vector,
        }
    }

    fn linear(
        &mut self,
        x: &wgpu::Buffer,
        l: &LinearWeights,
        y: &wgpu::Buffer,
        rows: Rows,
        epilogue: Epilogue,
    ) -> Result<()> {
        self.linear_at(x, l, y, rows, epilogue, (0, 0))
    }

    /// A linear layer writing columns `offset..` of rows `stride` wide.
    fn linear_cols(
        &mut self,
        x: &wgpu::Buffer,
        l: &LinearWeights,
        y: &wgpu::Buffer,
        offset: usize,
        stride: usize,
    ) -> Result<()> {
        self.linear_at(x, l, y, Rows::Tokens, Epilogue::Store, (offset, stride))
    }

    /// A linear layer, with its Hybrid Gated Flow correction when it has one: on ternary layers the correction's
    /// down projection rides in the activation-quantisation kernel, and on the integer path its up projection in
    /// the matvec too.
    fn linear_at(
        &mut self,
        x: &wgpu::Buffer,
        l: &LinearWeights,
        y: &wgpu::Buffer,
        rows: Rows,
        epilogue: Epilogue,
        (y_offset, y_stride): (usize, usize),
    ) -> Result<()> {
        let shape = self.shape();
        let s = &self.res.scratch;
        // The int8 quantiser folds one norm: not the block's beside the layer's own.
        if l.w.ternary && l.input_norm.is_some() && self.folded_input(x).1.is_some() {
            self.write_folded_input()?;
        }
        let (x, folded) = self.folded_input(x);
        let norm = match (&l.input_norm, &folded) {
            (Some(n), _) => Some(n.as_input_norm()),
            (None, folded) => folded.as_ref().map(FoldedNorm::input_norm),
        };
        let hgf = l.hgf.as_deref().filter(|h| h.a.blocks.len() == 1 && h.b.blocks.len() == 1);
        let a = hgf.map(|h| [h.a.as_ref()]);
        let normed_input = folded.is_some() || hgf.is_some_and(|h| h.reads_input_norm);
        let down = a.as_ref().map(|a| HgfDown { a, mid: Some(&s.hgf_mid), normed_input });
        let quantise = |b: &mut Self, out: Quantised| match &down {
            Some(d) if l.w.ternary => act_quant_hgf(b.gpu, &mut b.plan, (x, out), (l.w.cols, rows), norm, d),
            _ => act_quant(b.gpu, &mut b.plan, (x, out), l.w.cols, rows, norm),
        };
        if dp4_ready(self.gpu, &l.w) && l.bias.is_none() {
            // Ternary layers: int8 words and the integer products, a prefill's tokens in tiles of the matmul's rows.
            quantise(self, Quantised::Packed(&s.xq_rows))?;
            let call = MatvecDp4 {
                y_offset,
                y_stride,
                rows,
                tile_rows: if shape == MatmulShape::Tiled { self.gpu.tuning.tm } else { 1 },
                accumulate: epilogue == Epilogue::Accumulate,
                mid_width: hgf.map_or(0, |h| h.a.rows),
                hgf: hgf.map(|h| HgfUp::new(&h.b, 0)),
                ..MatvecDp4::new(&s.xq_rows, &l.w, l.scale, y)
            };
            matvec_dp4(self.gpu, &mut self.plan, &call)?;
            return match hgf {
                Some(_) => Ok(()),
                None => self.hgf_correction((x, folded.as_ref()), l, y, rows, (y_offset, y_stride), false),
            };
        }
        let input = match l.w.ternary {
            true => {
                quantise(self, Quantised::Float(&s.xq))?;
                &s.xq
            }
            false => x,
        };
        let args = Linear {
            bias: l.bias.as_ref(),
            scale: l.scale,
            y_offset,
            y_stride,
            rows,
            epilogue,
            input_norm: folded.as_ref().filter(|_| !l.w.ternary).map(FoldedNorm::input_norm),
            ..Linear::new(input, &l.w, y, shape)
        };
        linear(self.gpu, &mut self.plan, &args)?;
        let mid_done = hgf.is_some() && l.w.ternary;
        self.hgf_correction((x, folded.as_ref()), l, y, rows, (y_offset, y_stride), mid_done)
    }

    /// What a projection of `x` reads: the stream and the block's pre-norm when `x` is `h` and the norm is folded,
    /// else `x` itself.
    fn folded_input<'x>(&self, x: &'x wgpu::Buffer) -> (&'x wgpu::Buffer, Option<FoldedNorm>)
    where
        'a: 'x,
    {
        let s = &self.res.scratch;
        match &self.folded_norm {
            Some(f) if std::ptr::eq(x, &s.h) => (&s.x, Some(f.clone())),
            _ => (x, None),
        }
    }

    /// Writes the folded pre-norm's output to `h` after all, for a reader that cannot fold it.
    fn write_folded_input(&mut self) -> Result<()> {
        let Some(FoldedNorm(n)) = self.folded_norm.take() else { return Ok(()) };
        let s = &self.res.scratch;
        self.norm(&n, 1, Rows::Tokens, &s.x, NormOutput::Write(&s.h))
    }

    /// `y += diag(g) B (A x)` for a layer with a Hybrid Gated Flow correction (`A x` already in `hgf_mid` when
    /// `mid_done`; `x` normalised first when a folded norm comes with it); nothing for the others.
    fn hgf_correction(
        &mut self,
        (x, folded): (&wgpu::Buffer, Option<&FoldedNorm>),
        l: &LinearWeights,
        y: &wgpu::Buffer,
        rows: Rows,
        (y_offset, y_stride): (usize, usize),
        mid_done: bool,
    ) -> Result<()> {
        let Some(h) = &l.hgf else { return Ok(()) };
        let (mid, shape) = (&self.res.scratch.hgf_mid, self.shape());
        let product = |x, w, y, (y_offset, y_stride), epilogue, input_norm| Linear {
            y_offset,
            y_stride,
            rows,
            epilogue,
            input_norm,
            ..Linear::new(x, w, y, shape)
        };
        if !mid_done {
            let down = product(x, &h.a, mid, (0, 0), Epilogue::Store, folded.map(FoldedNorm::input_norm));
            linear(self.gpu, &mut self.plan, &down)?;
        }
        let up = product(mid, &h.b, y, (y_offset, y_stride), Epilogue::Accumulate, None);
        Ok(linear(self.gpu, &mut self.plan, &up)?)
    }

    /// Quantises the block input (the folded pre-norm included) to int8 once for one-token ternary projections of
    /// it that have no bias or norm of their own, all read through the integer matvec, with the low-rank values of
    /// their Hybrid Gated Flow corrections (each distinct down projection once, up to three). Returns `None`,
    /// recording nothing, where they do not qualify.
    fn quantise_block_input(&mut self, layers: &[&LinearWeights]) -> Result<Option<SharedQuantisation>> {
        self.quantise_block_input_with(layers, None)
    }

    /// [`quantise_block_input`](Self::quantise_block_input) that also leaves the products of `side`, an f32 matrix
    /// of the same input, in `hgf_mid` (a Gated DeltaNet's gate inputs), among at most three matrices in all.
    fn quantise_block_input_with(
        &mut self,
        layers: &[&LinearWeights],
        side: Option<&Weight>,
    ) -> Result<Option<SharedQuantisation>> {
        let cols = layers.first().map(|l| l.w.cols);
        let one_block = |h: &HgfWeights| h.a.blocks.len() == 1 && h.b.blocks.len() == 1;
        let qualifies = |l: &&LinearWeights| {
            dp4_ready(self.gpu, &l.w)
                && l.bias.is_none()
                && l.input_norm.is_none()
                && l.hgf.as_deref().is_none_or(one_block)
                && Some(l.w.cols) == cols
        };
        let products = layers.len() + usize::from(side.is_some());
        if self.shape() != MatmulShape::Vector || products < 2 || !layers.iter().all(qualifies) {
            return Ok(None);
        }
        let mut downs: Vec<&Weight> = Vec::new();
        let mut offsets = Vec::with_capacity(layers.len());
        for l in layers {
            offsets.push(l.hgf.as_deref().map(|h| {
                let at = downs.iter().position(|a| std::ptr::eq(*a, h.a.as_ref())).unwrap_or_else(|| {
                    downs.push(&h.a);
                    downs.len() - 1
                });
                downs[..at].iter().map(|a| a.rows).sum()
            }));
        }
        let side_offset = side.map(|w| {
            downs.push(w);
            downs[..downs.len() - 1].iter().map(|a| a.rows).sum()
        });
        let s = &self.res.scratch;
        let (x, folded) = self.folded_input(&s.h);
        let bindings = act_quant_bindings(folded.is_some(), downs.len());
        let same_dtype = downs.windows(2).all(|p| p[0].dtype == p[1].dtype);
        let fits = |a: &&Weight| Some(a.cols) == cols && a.blocks.len() == 1;
        if downs.len() > 3 || !same_dtype || !downs.iter().all(fits) || bindings > self.gpu.info.max_storage_buffers {
            return Ok(None);
        }
        let norm = folded.as_ref().map(FoldedNorm::input_norm);
        let packed = Quantised::Packed(&s.xq_rows);
        let width = cols.unwrap_or(0);
        match downs.is_empty() {
            true => act_quant(self.gpu, &mut self.plan, (x, packed), width, Rows::Tokens, norm)?,
            false => {
                let down = HgfDown { a: &downs, mid: None, normed_input: folded.is_some() };
                act_quant_hgf(self.gpu, &mut self.plan, (x, packed), (width, Rows::Tokens), norm, &down)?
            }
        }
        Ok(Some(SharedQuantisation {
            offsets,
            side_offset,
            width: downs.iter().map(|a| a.rows).sum(),
            input_width: width,
        }))
    }

    /// The integer matvecs of projections of the block input [`quantise_block_input`](Self::quantise_block_input)
    /// left, each into `(buffer, first column, row width)` (width 0: its own rows). Projections that fill whole
    /// outputs of their own go up to four to a dispatch, as the device's storage-buffer limit allows; where their
    /// corrections' `diag(g) B` matrices would take more bindings than it does, they are copied into one.
    fn quantised_products(
        &mut self,
        layers: &[&LinearWeights],
        outputs: &[(&wgpu::Buffer, usize, usize)],
        q: &SharedQuantisation,
    ) -> Result<()> {
        let s = &self.res.scratch;
        let hgf = |i: usize| q.correction(layers[i], i);
        let whole = |i: usize| outputs[i].1 == 0 && (outputs[i].2 == 0 || outputs[i].2 == layers[i].w.rows);
        let limit = self.gpu.info.max_storage_buffers;
        let mut i = 0;
        while i < layers.len() {
            // The projections after `i` that may stack below it: whole outputs, one-block matrices, three at most.
            let one_block = |j: usize| layers[j].w.blocks.len() == 1;
            let mut end = i + 1;
            while one_block(i) && end - i < 4 && end < layers.len() && whole(end) && one_block(end) {
                end += 1;
            }
            // The corrected projections among them, and those before projection e.
            let corrected: Vec<usize> = (i..end).filter(|&j| hgf(j).is_some()).collect();
            let before = |e: usize| corrected.iter().take_while(move |&&j| j < e).filter_map(|&j| hgf(j));
            // The most projections a dispatch takes: each correction bound alone, or all in one matrix.
            let fits = |e: usize, shared| stack_bindings(e - i - 1, before(e).count(), shared) <= limit;
            let longest = |shared: bool| (i + 1..=end).rev().find(|&e| fits(e, shared)).unwrap_or(i + 1);
            let (alone, shared) = (longest(false), longest(true));
            let ranks: Vec<usize> = before(shared).map(|h| h.bg.cols).collect();
            let end = match shared > alone && ranks.windows(2).all(|r| r[0] == r[1]) {
                true => shared,
                false => alone,
            };
            let parts: Vec<&Weight> = before(end).map(|h| h.bg).collect();
            let packed = match end > alone {
                true => Some(Weight::stack_rows(self.gpu, "HGF up projections", &parts)?),
                false => None,
            };
            // Projection j's correction, in the shared matrix where there is one.
            let up = |j: usize| match &packed {
                Some(bg) => hgf(j).map(|h| HgfUp { bg, row0: before(j).map(|p| p.bg.rows).sum(), offset: h.offset }),
                None => hgf(j),
            };
            let (y, y_offset, y_stride) = outputs[i];
            let first = MatvecDp4 {
                y_offset,
                y_stride,
                mid_width: q.width,
                hgf: up(i),
                ..MatvecDp4::new(&s.xq_rows, &layers[i].w, layers[i].scale, y)
            };
            let stacked: Vec<Stacked> = (i + 1..end)
                .map(|j| Stacked { w: &layers[j].w, scale: layers[j].scale, y: outputs[j].0, hgf: up(j) })
                .collect();
            matvec_dp4(self.gpu, &mut self.plan, &MatvecDp4 { stacked: &stacked, ..first })?;
            i = end;
        }
        Ok(())
    }

    /// Projections of the block input written side by side into rows of `width` (e.g. `[q | k | v]`): runs of up to
    /// three plain float projections alike go as one stacked product.
    fn side_by_side<'p>(
        &mut self,
        projections: impl IntoIterator<Item = &'p LinearWeights>,
        y: &wgpu::Buffer,
        width: usize,
    ) -> Result<()> {
        let projections: Vec<&LinearWeights> = projections.into_iter().collect();
        let outputs = side_by_side_outputs(&projections, y, width);
        match self.quantise_block_input(&projections)? {
            Some(q) => self.quantised_products(&projections, &outputs, &q),
            None => self.float_products(&projections, &outputs),
        }
    }

    /// Float projections of the block input, each into `(buffer, first column, row width)` (width 0: its own rows):
    /// runs of up to three plain projections alike go as one stacked product, written side by side into one output
    /// or each into a whole output of its own (a layer's q, k and v).
    fn float_products(
        &mut self,
        projections: &[&LinearWeights],
        outputs: &[(&wgpu::Buffer, usize, usize)],
    ) -> Result<()> {
        let own = |j: usize| outputs[j].1 == 0 && (outputs[j].2 == 0 || outputs[j].2 == projections[j].w.rows);
        let mut i = 0;
        while i < projections.len() {
            let (first, (y, offset, width)) = (projections[i], outputs[i]);
            let separate = own(i);
            // Whether projection j's output continues the run's layout.
            let follows = |j: usize| match separate {
                true => own(j),
                false => {
                    let column = offset + projections[i..j].iter().map(|l| l.w.rows).sum::<usize>();
                    std::ptr::eq(outputs[j].0, y) && (outputs[j].1, outputs[j].2) == (column, width)
                }
            };
            let run = 1 + (i + 1..i + stack_run(&projections[i..])).take_while(|&j| follows(j)).count();
            if run > 1 {
                let (x, folded) = self.folded_input(&self.res.scratch.h);
                let rest: Vec<&Weight> = projections[i + 1..i + run].iter().map(|l| &l.w).collect();
                let own_outputs: Vec<&wgpu::Buffer> = match separate {
                    true => outputs[i + 1..i + run].iter().map(|o| o.0).collect(),
                    false => Vec::new(),
                };
                let (y_offset, y_stride) = if separate { (0, 0) } else { (offset, width) };
                let args = Linear {
                    scale: first.scale,
                    y_offset,
                    y_stride,
                    input_norm: folded.as_ref().map(FoldedNorm::input_norm),
                    stacked: &rest,
                    stacked_outputs: &own_outputs,
                    ..Linear::new(x, &first.w, y, self.shape())
                };
                linear(self.gpu, &mut self.plan, &args)?;
            } else {
                self.linear_cols(&self.res.scratch.h, first, y, offset, width)?;
            }
            i += run;
        }
        Ok(())
    }

    /// The tail of linear-attention mixers: a per-head RMSNorm of `lin_out` (times `act(z)` when `gate` names an
    /// activation), then the output projection into the residual.
    fn output_norm_and_project(
        &mut self,
        norm: &NormWeights,
        heads: usize,
        gate: Option<Activation>,
        out: &LinearWeights,
        post: &Option<NormWeights>,
    ) -> Result<()> {
        self.output_norm(norm, heads, gate)?;
        self.project_residual(&self.res.scratch.lin_out, out, post)
    }

    /// A linear mixer's output norm (per head, gated by `z` when `gate`), in place in `lin_out`.
    fn output_norm(&mut self, norm: &NormWeights, heads: usize, gate: Option<Activation>) -> Result<()> {
        let s = &self.res.scratch;
        let args = NormArgs {
            weight: &norm.w,
            dim: norm.spec.dim,
            groups_per_row: heads,
            rows: Rows::Tokens,
            eps: norm.spec.eps,
            unit_offset: norm.spec.unit_offset,
            row_stride: 0,
            centered: norm.spec.centered,
            bias: norm.bias.as_ref(),
        };
        let gate = gate.map(|act| (&s.z, act));
        Ok(rms_norm_gated(self.gpu, &mut self.plan, &args, &s.lin_out, NormOutput::InPlace, gate)?)
    }

    fn norm(&mut self, n: &NormWeights, groups: usize, rows: Rows, x: &wgpu::Buffer, out: NormOutput) -> Result<()> {
        let args = NormArgs {
            weight: &n.w,
            dim: n.spec.dim,
            groups_per_row: groups,
            rows,
            eps: n.spec.eps,
            unit_offset: n.spec.unit_offset,
            row_stride: 0,
            centered: n.spec.centered,
            bias: n.bias.as_ref(),
        };
        Ok(rms_norm(self.gpu, &mut self.plan, &args, x, out)?)
    }

    /// `x += post(l(input))`, fused into the projection when there is neither a post-norm nor scaled residuals.
    fn project_residual(&mut self, input: &wgpu::Buffer, l: &LinearWeights, post: &Option<NormWeights>) -> Result<()> {
        let (target, epilogue) = self.residual_target(post);
        self.linear(input, l, target, Rows::Tokens, epilogue)?;
        self.finish_residual(post)
    }

    /// Where a block's output goes: added straight into the stream, or stored in `tmp` for a post-norm or a scaled
    /// residual.
    fn residual_target(&self, post: &Option<NormWeights>) -> (&'a wgpu::Buffer, Epilogue) {
        let s = &self.res.scratch;
        match (post, self.scaled) {
            (None, None) => (&s.x, Epilogue::Accumulate),
            _ => (&s.tmp, Epilogue::Store),
        }
    }

    /// Folds a block output left in `tmp` into the stream: `x += post(tmp)`, or `x = alpha h + beta post(tmp)`.
    fn finish_residual(&mut self, post: &Option<NormWeights>) -> Result<()> {
        let s = &self.res.scratch;
        match (post, self.scaled) {
            (None, None) => Ok(()),
            (Some(n), None) => self.norm(n, 1, Rows::Tokens, &s.tmp, NormOutput::Residual(&s.x)),
            (post, Some((alpha, beta))) => {
                if let Some(n) = post {
                    self.norm(n, 1, Rows::Tokens, &s.tmp, NormOutput::InPlace)?;
                }
                Ok(scaled_residual(self.gpu, &mut self.plan, (alpha, &s.h), (beta, &s.tmp), &s.x, self.hidden)?)
            }
        }
    }

    fn attention(
        &mut self,
        slot: usize,
        a: &AttentionSpec,
        w: &MixerWeights,
        post: &Option<NormWeights>,
    ) -> Result<()> {
        let MixerWeights::Attention { q, k, v, o, qk_norm, gate, sub_norm, lambda, routers } = w else {
            unreachable!("attention weights")
        };
        let s = &self.res.scratch;
        // The output gate's projection reads the block input too: quantised with q, k and v where they are.
        let mut layers = vec![q, k, v];
        let mut outputs = vec![(&s.q, 0, 0), (&s.k, 0, 0), (&s.v, 0, 0)];
        if let Some(gate) = gate {
            layers.push(gate);
            outputs.push((&s.attn_gate, 0, 0));
        }
        match self.quantise_block_input(&layers)? {
            Some(shared) => self.quantised_products(&layers, &outputs, &shared)?,
            None => self.float_products(&layers, &outputs)?,
        }
        let tables = self.res.rope_of_slot[slot].map(|r| &self.res.ropes[r].1);
        // StreamingLLM layers cache unrotated keys; attention rotates by cache position.
        let rotation = tables.filter(|_| a.mask.repositions());
        // Decode normalises and rotates whole heads in one dispatch.
        let head_norms = match (qk_norm, tables, rotation) {
            (Some((qn, kn)), Some(t), None) if self.mode == Mode::Decode && lambda.is_none() => {
                let whole_head = |n: &NormWeights| n.spec.dim == a.head_dim && FoldedNorm::of(n, a.head_dim).is_some();
                let same = (qn.spec.eps, qn.spec.unit_offset) == (kn.spec.eps, kn.spec.unit_offset);
                let norms = HeadNorms { q: &qn.w, k: &kn.w, eps: qn.spec.eps, unit_offset: qn.spec.unit_offset };
                (whole_head(qn) && whole_head(kn) && same).then_some((norms, t))
            }
            _ => None,
        };
        if let Some((norms, tables)) = head_norms {
            let targets = [(&s.q, a.n_heads), (&s.k, a.n_kv_heads)];
            rope_normed(self.gpu, &mut self.plan, targets, a.head_dim, tables, norms)?;
        } else if let Some((qn, kn)) = qk_norm {
            let width = a.n_heads * a.head_dim;
            self.norm(qn, width / qn.spec.dim, Rows::Tokens, &s.q, NormOutput::InPlace)?;
            self.norm(kn, a.n_kv_heads * a.head_dim / kn.spec.dim, Rows::Tokens, &s.k, NormOutput::InPlace)?;
        }
        if let (Some(tables), None, None) = (tables, rotation, &head_norms) {
            // Differential heads rotate each half as a head of its own.
            let halves = if lambda.is_some() { 2 } else { 1 };
            let targets = [(&s.q, a.n_heads * halves), (&s.k, a.n_kv_heads * halves)];
            rope(self.gpu, &mut self.plan, &targets, a.head_dim / halves, tables)?;
        }
        let LayerState::Attention { k: kc, v: Some(vc), rows, pinned, pooled, memory, .. } = &self.res.states[slot]
        else {
            unreachable!("KV cache")
        };
        let row_bytes = (a.n_kv_heads * a.head_dim * 4) as u64;
        if let Some(tap) = self.inspection.taps.iter().find(|t| t.slot == slot) {
            let [q, k] = &tap.rows;
            let q_row_bytes = (a.n_heads * a.head_dim * 4) as u64;
            self.plan.push(Op::copy_rows(&s.q, q, q_row_bytes));
            self.plan.push(Op::copy_rows(&s.k, k, row_bytes));
        }
        let (cache_rows, pinned) = (*rows as u64, *pinned as u64);
        self.plan.push(Op::AppendRows { src: s.k.clone(), dst: kc.clone(), row_bytes, cache_rows, pinned });
        self.plan.push(Op::AppendRows { src: s.v.clone(), dst: vc.clone(), row_bytes, cache_rows, pinned });
        if let (Some(cfg), Some(pooled)) = (&a.mask.sparse, pooled) {
            pool_keys(self.gpu, &mut self.plan, cfg, kc, pooled, (a.n_kv_heads, a.head_dim))?;
        }
        // A routed layer that is dense at every length only pools its keys; it attends with the plain kernels.
        let selection = a.mask.sparse.filter(|cfg| !cfg.pools_only()).map(|cfg| Selection {
            cfg,
            blocks: &s.block_lists,
            counts: &s.block_counts,
        });
        if let (Some(sel), Some(pooled)) = (&selection, pooled) {
            let heads = (a.n_heads, a.n_kv_heads, a.head_dim);
            let max_blocks = sel.cfg.blocks(*rows);
            select(self.gpu, &mut self.plan, sel, &s.q, pooled, &s.block_scores, heads, (a.scale, max_blocks))?;
        }
        let call = Attention {
            sparse: selection.as_ref(),
            differential: *lambda,
            rotation,
            memory: memory.as_ref(),
            output_gate: gate.as_ref().map(|_| &s.attn_gate),
            ..Attention::new((&s.q, &s.attn), (kc, vc, *rows), (a.n_heads, a.n_kv_heads, a.head_dim), &a.mask, a.scale)
        };
        match self.mode {
            Mode::Prefill => attention::prefill(self.gpu, &mut self.plan, &call)?,
            Mode::Decode => {
                attention::decode_with(self.gpu, &mut self.plan, &call, &s.scores, self.res.key_reach, self.spread)?
            }
        }
        attention::absorb(self.gpu, &mut self.plan, &call)?;
        // Routed layers (dense through a prefill) are measured for the router; nothing else reads entropies.
        let routed = a.mask.sparse.is_some_and(|cfg| cfg.pools_only());
        if let (Mode::Prefill, true, Some((entropies, stride))) = (self.mode, routed, &self.res.entropies) {
            attention::entropy(self.gpu, &mut self.plan, &call, entropies, slot * stride)?;
        }
        let width = a.n_heads * a.head_dim;
        let mut attn = &s.attn;
        if let Some(m) = &a.head_routing {
            let moh = Moh { heads: a.n_heads, shared: m.shared, top_k: m.top_k, head_dim: a.head_dim };
            self.side_by_side(routers, &s.moh_logits, m.logit_width())?;
            moh.route(self.gpu, &mut self.plan, &s.moh_logits, &s.moh_weights)?;
            moh.scale(self.gpu, &mut self.plan, attn, &s.moh_weights, &s.moh_out)?;
            attn = &s.moh_out;
        }
        if let Some(ablated) = self.inspection.ablated.iter().find(|x| x.slot == slot) {
            gated_act(self.gpu, &mut self.plan, Activation::Identity, &ablated.mask, attn, &ablated.out, width)?;
            attn = &ablated.out;
        }
        if let Some(n) = sub_norm {
            self.norm(n, width / n.spec.dim, Rows::Tokens, attn, NormOutput::InPlace)?;
        }
        self.project_residual(attn, o, post)
    }

    fn gated_deltanet(
        &mut self,
        slot: usize,
        g: &GatedDeltaNetSpec,
        w: &MixerWeights,
        post: &Option<NormWeights>,
    ) -> Result<()> {
        let MixerWeights::GatedDeltaNet { in_proj, conv, z, gate_inputs, gate_params, norm, out, .. } = w else {
            unreachable!("gated deltanet weights")
        };
        let LayerState::Recurrent { state, conv: conv_state } = &self.res.states[slot] else {
            unreachable!("recurrent state")
        };
        let s = &self.res.scratch;
        let width = g.qkv_width();
        let gate_width = g.gate_width();
        // The projections of the block input share one quantisation where they take one: an output gate read
        // straight from it, and the gate inputs as the quantiser's side products.
        let mut layers: Vec<&LinearWeights> = in_proj.iter().collect();
        let mut outputs = side_by_side_outputs(&layers, &s.qkv_raw, width);
        if let Some((None, up)) = z {
            layers.push(up);
            outputs.push((&s.z, 0, 0));
        }
        let stacked = match gate_inputs {
            GateInputs::Stacked(ba) => Some(&ba.w),
            GateInputs::Separate { .. } => None,
        };
        let shared = match layers.len() > in_proj.len() || stacked.is_some() {
            true => self.quantise_block_input_with(&layers, stacked)?,
            false => None,
        };
        match &shared {
            Some(q) => self.quantised_products(&layers, &outputs, q)?,
            None => self.side_by_side(in_proj, &s.qkv_raw, width)?,
        }
        let z_projected = shared.is_some() && layers.len() > in_proj.len();
        // Where the gate inputs are: the quantiser's side products, or [b | a] side by side in `ab`.
        let side_columns = shared.as_ref().and_then(SharedQuantisation::side_columns);
        let (ab, ab_columns) = match side_columns {
            Some(columns) => (&s.xq_rows, columns),
            None => (&s.ab, (0, gate_width)),
        };
        let call = ShortConv {
            x: &s.qkv_raw,
            weight: conv,
            bias: None,
            state: conv_state,
            y: &s.qkv,
            channels: width,
            kernel: g.conv_kernel,
            silu: true,
            advance: true,
            sequential: self.mode == Mode::Decode,
            state_offset: 0,
        };
        short_conv(self.gpu, &mut self.plan, &call)?;
        if side_columns.is_none() {
            match gate_inputs {
                GateInputs::Stacked(ba) => self.linear(&s.h, ba, &s.ab, Rows::Tokens, Epilogue::Store)?,
                // [b | a] side by side.
                GateInputs::Separate { b, a, a_down: None } => self.side_by_side([b, a], &s.ab, gate_width)?,
                GateInputs::Separate { b, a, a_down: Some(down) } => {
                    self.linear_cols(&s.h, b, &s.ab, 0, gate_width)?;
                    self.linear(&s.h, down, &s.low_rank, Rows::Tokens, Epilogue::Store)?;
                    let at = (g.n_v_heads, gate_width);
                    self.linear_at(&s.low_rank, a, &s.ab, Rows::Tokens, Epilogue::Store, at)?;
                }
            }
        }
        if let (Some((down, up)), false) = (z, z_projected) {
            let input = match down {
                Some(down) => {
                    self.linear(&s.h, down, &s.low_rank, Rows::Tokens, Epilogue::Store)?;
                    &s.low_rank
                }
                None => &s.h,
            };
            self.linear(input, up, &s.z, Rows::Tokens, Epilogue::Store)?;
        }
        if let Some(tap) = self.inspection.taps.iter().find(|t| t.slot == slot) {
            let [first, second] = &tap.rows;
            self.plan.push(Op::copy_rows(&s.qkv, first, (width * 4) as u64));
            let (offset, stride) = ab_columns;
            self.plan.push(Op::CopyTokenRows {
                src: ab.clone(),
                src_at: (offset as u64 * 4, stride as u64 * 4),
                dst: second.clone(),
                row_bytes: (gate_width * 4) as u64,
            });
        }
        let call = DeltaNet {
            n_k_heads: g.n_k_heads,
            n_v_heads: g.n_v_heads,
            dk: g.head_k_dim,
            dv: g.head_v_dim,
            qkv: &s.qkv,
            ab,
            ab_columns,
            gate_params,
            per_channel: g.decay.as_ref().is_some_and(|d| d.per_channel),
            beta_scale: g.beta_scale,
            state,
            out: &s.lin_out,
        };
        let gate_act = g.output_gate.as_ref().map(|z| z.act);
        // Decode normalises (and gates) each head's outputs in the recurrent kernel where the norm is a plain
        // per-head RMSNorm.
        let plain_gate = gate_act.is_none_or(|a| matches!(a, Activation::Silu | Activation::Sigmoid));
        let fused_norm = FoldedNorm::of(norm, g.head_v_dim).filter(|_| plain_gate && self.mode == Mode::Decode);
        let head_norm = fused_norm.as_ref().map(|n| HeadOutputNorm {
            weight: &n.0.w,
            eps: n.0.spec.eps,
            unit_offset: n.0.spec.unit_offset,
            gate: gate_act.map(|act| (&s.z, act)),
        });
        match self.mode {
            Mode::Prefill => gated_deltanet::chunked(self.gpu, &mut self.plan, &call, &s.chunk)?,
            Mode::Decode => gated_deltanet::recurrent(self.gpu, &mut self.plan, &call, head_norm.as_ref())?,
        }
        if fused_norm.is_none() {
            self.output_norm(norm, g.n_v_heads, gate_act)?;
        }
        match self.inspection.ablated.iter().find(|x| x.slot == slot) {
            Some(ablated) => {
                let width = g.n_v_heads * g.head_v_dim;
                let s = &self.res.scratch;
                gated_act(
                    self.gpu,
                    &mut self.plan,
                    Activation::Identity,
                    &ablated.mask,
                    &s.lin_out,
                    &ablated.out,
                    width,
                )?;
                self.project_residual(&ablated.out, out, post)
            }
            None => self.project_residual(&self.res.scratch.lin_out, out, post),
        }
    }

    fn gla(&mut self, slot: usize, g: &GlaSpec, w: &MixerWeights, post: &Option<NormWeights>) -> Result<()> {
        let MixerWeights::Gla { qkv, gk_down, gk_up, g: gate, norm, out } = w else { unreachable!("GLA weights") };
        let LayerState::Recurrent { state, .. } = &self.res.states[slot] else { unreachable!("recurrent state") };
        let s = &self.res.scratch;
        self.side_by_side(qkv, &s.qkv, g.qkv_width())?;
        self.linear(&s.h, gk_down, &s.low_rank, Rows::Tokens, Epilogue::Store)?;
        self.linear(&s.low_rank, gk_up, &s.gk, Rows::Tokens, Epilogue::Store)?;
        if let Some(z) = gate {
            self.linear(&s.h, z, &s.z, Rows::Tokens, Epilogue::Store)?;
        }
        self.tap_rows(slot, (&s.qkv, g.qkv_width()), Some((&s.gk, g.n_heads * g.head_k_dim)));
        let call = Gla {
            heads: g.n_heads,
            dk: g.head_k_dim,
            dv: g.head_v_dim,
            decay: Decay::LogSigmoid(g.gate_normalizer),
            q_scale: (g.head_k_dim as f32).powf(-0.5),
            qkv: &s.qkv,
            gk: &s.gk,
            state,
            state_offset: 0,
            out: &s.lin_out,
        };
        match self.mode {
            Mode::Prefill => gla::chunked(self.gpu, &mut self.plan, &call, &s.chunk)?,
            Mode::Decode => gla::recurrent(self.gpu, &mut self.plan, &call)?,
        }
        self.output_norm_and_project(norm, g.n_heads, gate.as_ref().map(|_| Activation::Silu), out, post)
    }

    /// Copies a tapped recurrent layer's rows for its implicit attention map: `first` (`[q | k | v]`,
    /// `first_width` floats) and, when the layer has gate inputs, `second`.
    fn tap_rows(&mut self, slot: usize, first: (&wgpu::Buffer, usize), second: Option<(&wgpu::Buffer, usize)>) {
        let Some(tap) = self.inspection.taps.iter().find(|t| t.slot == slot) else { return };
        for ((src, width), dst) in [Some(first), second].into_iter().flatten().zip(&tap.rows) {
            let row_bytes = (width * 4) as u64;
            self.plan.push(Op::copy_rows(src, dst, row_bytes));
        }
    }

    /// Feature-mapped q and k, then the GLA kernels with zero decay, then the normaliser's division or the norm.
    fn linear_attn(
        &mut self,
        slot: usize,
        l: &LinearAttnSpec,
        w: &MixerWeights,
        post: &Option<NormWeights>,
    ) -> Result<()> {
        let MixerWeights::LinearAttn { qkv, feature, norm, out } = w else { unreachable!("linear attention") };
        let LayerState::Recurrent { state, .. } = &self.res.states[slot] else { unreachable!("recurrent state") };
        let s = &self.res.scratch;
        let (key, dv) = (l.n_heads * l.head_k_dim, l.carried_values());
        let width = 2 * key + l.n_heads * l.head_v_dim;
        for (p, offset) in qkv.iter().zip([0, key, 2 * key]) {
            self.linear_cols(&s.h, p, &s.qkv_raw, offset, width)?;
        }
        let heads = Heads { heads: l.n_heads, dk: l.head_k_dim, dv: l.head_v_dim, normalize: l.normalize };
        features(self.gpu, &mut self.plan, &l.feature, feature.as_ref(), &s.qkv_raw, &s.qkv, heads)?;
        self.tap_rows(slot, (&s.qkv, l.n_heads * (2 * l.features() + dv)), None);
        let call = Gla {
            heads: l.n_heads,
            dk: l.features(),
            dv,
            decay: Decay::PerHead,
            q_scale: l.scale,
            qkv: &s.qkv,
            gk: &s.zero_decay,
            state,
            state_offset: 0,
            out: &s.lin_out,
        };
        match self.mode {
            Mode::Prefill => gla::chunked(self.gpu, &mut self.plan, &call, &s.chunk)?,
            Mode::Decode => gla::recurrent(self.gpu, &mut self.plan, &call)?,
        }
        match norm {
            Some(norm) => self.output_norm_and_project(norm, l.n_heads, None, out, post),
            None if l.normalize => {
                divide(self.gpu, &mut self.plan, &s.lin_out, &s.qkv_raw, l.n_heads, l.head_v_dim)?;
                self.project_residual(&s.qkv_raw, out, post)
            }
            None => self.project_residual(&s.lin_out, out, post),
        }
    }

    /// `y = C ⊙ conv(B ⊙ x)`, then `out_proj` into the residual.
    fn short_conv(
        &mut self,
        slot: usize,
        c: &ShortConvSpec,
        w: &MixerWeights,
        post: &Option<NormWeights>,
    ) -> Result<()> {
        let MixerWeights::ShortConv { b, c: cg, x, conv, out } = w else { unreachable!("short conv weights") };
        let LayerState::Recurrent { conv: conv_state, .. } = &self.res.states[slot] else { unreachable!("conv state") };
        let s = &self.res.scratch;
        let [pb, pc, px] = &s.conv_parts;
        for (l, y) in [(b, pb), (cg, pc), (x, px)] {
            self.linear(&s.h, l, y, Rows::Tokens, Epilogue::Store)?;
        }
        gated_act(self.gpu, &mut self.plan, Activation::Identity, pb, px, &s.lin_out, c.channels)?;
        let call = ShortConv {
            x: &s.lin_out,
            weight: conv,
            bias: None,
            state: conv_state,
            y: px,
            channels: c.channels,
            kernel: c.kernel,
            silu: false,
            advance: true,
            sequential: self.mode == Mode::Decode,
            state_offset: 0,
        };
        short_conv(self.gpu, &mut self.plan, &call)?;
        gated_act(self.gpu, &mut self.plan, Activation::Identity, pc, px, pb, c.channels)?;
        self.project_residual(pb, out, post)
    }

    fn hgrn2(&mut self, slot: usize, g: &Hgrn2Spec, w: &MixerWeights, post: &Option<NormWeights>) -> Result<()> {
        let MixerWeights::Hgrn2 { q, f, i, norm, out, lower_bound } = w else { unreachable!("HGRN2 weights") };
        let LayerState::Recurrent { state, .. } = &self.res.states[slot] else { unreachable!("recurrent state") };
        let s = &self.res.scratch;
        let (key, value) = (g.n_heads * g.head_f_dim, g.n_heads * g.head_i_dim);
        let width = 2 * key + value;
        self.linear_cols(&s.h, q, &s.qkv, 0, width)?;
        self.linear_cols(&s.h, i, &s.qkv, 2 * key, width)?;
        self.linear(&s.h, f, &s.gk, Rows::Tokens, Epilogue::Store)?;
        hgrn2::gates(self.gpu, &mut self.plan, &s.qkv, &s.gk, lower_bound.as_ref(), key, width)?;
        self.tap_rows(slot, (&s.qkv, width), Some((&s.gk, key)));
        let call = Gla {
            heads: g.n_heads,
            dk: g.head_f_dim,
            dv: g.head_i_dim,
            decay: Decay::Log,
            q_scale: (g.head_f_dim as f32).powf(-0.5),
            qkv: &s.qkv,
            gk: &s.gk,
            state,
            state_offset: 0,
            out: &s.lin_out,
        };
        match self.mode {
            Mode::Prefill => gla::chunked(self.gpu, &mut self.plan, &call, &s.chunk)?,
            Mode::Decode => gla::recurrent(self.gpu, &mut self.plan, &call)?,
        }
        self.output_norm_and_project(norm, 1, None, out, post)
    }

    /// Multi-head latent attention with weight absorption: the latent `[c | k_tail]` rows are cached, queries move
    /// into the latent space, attention runs over one shared latent head, and the context leaves through `kv_b`'s value
    /// half.
    fn mla(&mut self, slot: usize, m: &MlaSpec, w: &MixerWeights, post: &Option<NormWeights>) -> Result<()> {
        let MixerWeights::Mla { q, kv_a, kv_norm, kv_b, o } = w else { unreachable!("MLA weights") };
        let LayerState::Attention { k: cache, rows, .. } = &self.res.states[slot] else { unreachable!("latent cache") };
        let s = &self.res.scratch;
        let latent = m.kv_rank + m.rope_dim;
        self.linear(&s.h, q, &s.q, Rows::Tokens, Epilogue::Store)?;
        self.linear(&s.h, kv_a, &s.k, Rows::Tokens, Epilogue::Store)?;
        let args = NormArgs {
            weight: &kv_norm.w,
            dim: m.kv_rank,
            groups_per_row: 1,
            rows: Rows::Tokens,
            eps: kv_norm.spec.eps,
            unit_offset: kv_norm.spec.unit_offset,
            row_stride: latent,
            centered: false,
            bias: None,
        };
        rms_norm(self.gpu, &mut self.plan, &args, &s.k, NormOutput::InPlace)?;
        let row_bytes = (latent * 4) as u64;
        let cache_rows = *rows as u64;
        self.plan.push(Op::AppendRows { src: s.k.clone(), dst: cache.clone(), row_bytes, cache_rows, pinned: 0 });
        let absorb = Mla {
            n_heads: m.n_heads,
            nope: m.nope_dim,
            rope: m.rope_dim,
            v_dim: m.v_dim,
            rank: m.kv_rank,
            kv_b: &kv_b.w,
        };
        absorb.absorb_queries(self.gpu, &mut self.plan, &s.q, &s.mla_q)?;
        let causal = AttentionMask::default();
        let call = Attention {
            v_dim: m.kv_rank,
            ..Attention::new((&s.mla_q, &s.mla_ctx), (cache, cache, *rows), (m.n_heads, 1, latent), &causal, m.scale)
        };
        match self.mode {
            Mode::Prefill => attention::prefill(self.gpu, &mut self.plan, &call)?,
            Mode::Decode => {
                attention::decode_with(self.gpu, &mut self.plan, &call, &s.scores, self.res.key_reach, self.spread)?
            }
        }
        absorb.expand_output(self.gpu, &mut self.plan, &s.mla_ctx, &s.attn)?;
        self.project_residual(&s.attn, o, post)
    }

    /// SiLU'd `[q | k | v]`, the GLA kernels with a constant per-head decay and unscaled queries, then the norm over
    /// all heads gated by `sigmoid(output_gate(h))`.
    fn lightning(
        &mut self,
        slot: usize,
        l: &LightningSpec,
        w: &MixerWeights,
        post: &Option<NormWeights>,
    ) -> Result<()> {
        let MixerWeights::Lightning { qkv, decay, gate, norm, out } = w else { unreachable!("lightning weights") };
        let LayerState::Recurrent { state, .. } = &self.res.states[slot] else { unreachable!("recurrent state") };
        let s = &self.res.scratch;
        let width = 3 * l.n_heads * l.head_dim;
        self.side_by_side(qkv, &s.qkv_raw, width)?;
        activation(self.gpu, &mut self.plan, Activation::Silu, &s.qkv_raw, &s.qkv, width)?;
        self.tap_rows(slot, (&s.qkv, width), None);
        self.linear(&s.h, gate, &s.z, Rows::Tokens, Epilogue::Store)?;
        let call = Gla {
            heads: l.n_heads,
            dk: l.head_dim,
            dv: l.head_dim,
            decay: Decay::PerHead,
            q_scale: 1.0,
            qkv: &s.qkv,
            gk: decay,
            state,
            state_offset: 0,
            out: &s.lin_out,
        };
        match self.mode {
            Mode::Prefill => gla::chunked(self.gpu, &mut self.plan, &call, &s.chunk)?,
            Mode::Decode => gla::recurrent(self.gpu, &mut self.plan, &call)?,
        }
        self.output_norm_and_project(norm, 1, Some(Activation::Sigmoid), out, post)
    }

    /// `h = pre(x)`, or a copy of `x` for a block without a pre-norm.
    /// `h`, the input of a block's mixer or MLP: the stream `x` through the pre-norm, if any. In decode, when
    /// `h_read_by_projections_only` (the block reads `h` through linear layers alone) and the norm is a plain
    /// RMSNorm, the norm is folded into those projections instead (one dispatch fewer).
    fn block_input(&mut self, pre: &Option<NormWeights>, h_read_by_projections_only: bool) -> Result<()> {
        let s = &self.res.scratch;
        let fold = self.mode == Mode::Decode && h_read_by_projections_only && self.scaled.is_none();
        if let Some(folded) = pre.as_ref().and_then(|n| FoldedNorm::of(n, self.hidden)).filter(|_| fold) {
            self.folded_norm = Some(folded);
            return Ok(());
        }
        match pre {
            Some(n) => self.norm(n, 1, Rows::Tokens, &s.x, NormOutput::Write(&s.h)),
            None => {
                let row_bytes = (self.hidden * 4) as u64;
                self.plan.push(Op::copy_rows(&s.x, &s.h, row_bytes));
                Ok(())
            }
        }
    }

    /// Mamba2: `in_proj` parts, the biased conv + SiLU over `x|B|C`, the GLA kernels on `(C, B, dt x)` with log
    /// decays `dt A`, the `D` skip, then `silu(z)` gating (or the gated group norm) and `out_proj`.
    fn mamba2(&mut self, slot: usize, m: &Mamba2Spec, w: &MixerWeights, post: &Option<NormWeights>) -> Result<()> {
        let MixerWeights::Mamba2 { z, xbc, dt, conv, conv_bias, params, norm, out } = w else {
            unreachable!("Mamba2 weights")
        };
        let LayerState::Recurrent { state, conv: conv_state } = &self.res.states[slot] else {
            unreachable!("Mamba2 state")
        };
        let s = &self.res.scratch;
        let (h, n, p) = (m.n_heads, m.state_dim, m.head_dim);
        let channels = m.conv_channels();
        let conv_out = &s.conv_parts[0];
        self.side_by_side(xbc, &s.qkv_raw, channels)?;
        self.linear(&s.h, z, &s.z, Rows::Tokens, Epilogue::Store)?;
        self.linear(&s.h, dt, &s.ab, Rows::Tokens, Epilogue::Store)?;
        let call = ShortConv {
            x: &s.qkv_raw,
            weight: conv,
            bias: conv_bias.as_ref(),
            state: conv_state,
            y: conv_out,
            channels,
            kernel: m.conv_kernel,
            silu: true,
            advance: true,
            sequential: self.mode == Mode::Decode,
            state_offset: 0,
        };
        short_conv(self.gpu, &mut self.plan, &call)?;
        let ssm = Mamba2 {
            n_heads: h,
            head_dim: p,
            n_groups: m.n_groups,
            state: n,
            dt_limit: m.dt_limit,
            xbc: conv_out,
            params,
        };
        ssm.prepare(self.gpu, &mut self.plan, &s.ab, &s.qkv, &s.gk)?;
        self.tap_rows(slot, (&s.qkv, h * (2 * n + p)), Some((&s.gk, h * n)));
        let call = Gla {
            heads: h,
            dk: n,
            dv: p,
            decay: Decay::Log,
            q_scale: 1.0,
            qkv: &s.qkv,
            gk: &s.gk,
            state,
            state_offset: 0,
            out: &s.lin_out,
        };
        match self.mode {
            Mode::Prefill => gla::chunked(self.gpu, &mut self.plan, &call, &s.chunk)?,
            Mode::Decode => gla::recurrent(self.gpu, &mut self.plan, &call)?,
        }
        ssm.skip(self.gpu, &mut self.plan, &s.lin_out)?;
        match norm {
            Some(norm) => self.output_norm_and_project(norm, m.n_groups, Some(Activation::Silu), out, post),
            None => {
                gated_act(self.gpu, &mut self.plan, Activation::Silu, &s.z, &s.lin_out, &s.qkv_raw, m.inner())?;
                self.project_residual(&s.qkv_raw, out, post)
            }
        }
    }

    /// Gated Slot Attention: projections, gates and feature maps, a GLA pass decaying along the slots of its values,
    /// the slot softmax, a GLA pass decaying along the slots of its keys (both states in one buffer), then the norm
    /// of `silu(o)` and `o_proj`.
    /// RAT: `in_proj`, the recurrence and chunk attention, `o_proj` into the residual.
    fn rat(&mut self, slot: usize, r: &RatSpec, w: &MixerWeights, post: &Option<NormWeights>) -> Result<()> {
        let MixerWeights::Rat { in_proj, gate_bias, out } = w else { unreachable!("RAT weights") };
        let LayerState::Recurrent { state, .. } = &self.res.states[slot] else { unreachable!("RAT state") };
        let rope = self.res.rope_of_slot[slot].map(|i| &self.res.ropes[i].1).expect("RAT has RoPE tables");
        let s = &self.res.scratch;
        self.linear(&s.h, in_proj, &s.qkv_raw, Rows::Tokens, Epilogue::Store)?;
        let call = Rat {
            hidden: r.hidden,
            head_dim: r.head_dim,
            groups: r.groups,
            chunk: r.chunk,
            proj: &s.qkv_raw,
            gate_bias,
            state,
            chunks: (state.size() as usize / 4) / (2 * r.hidden) - 1,
            scan: &s.qkv,
            out: &s.lin_out,
            rope,
        };
        rat(self.gpu, &mut self.plan, &call)?;
        self.project_residual(&s.lin_out, out, post)
    }

    fn gsa(&mut self, slot: usize, g: &GsaSpec, w: &MixerWeights, post: &Option<NormWeights>) -> Result<()> {
        let MixerWeights::Gsa { qkv, f, norm, out } = w else { unreachable!("GSA weights") };
        let LayerState::Recurrent { state, .. } = &self.res.states[slot] else { unreachable!("GSA state") };
        let s = &self.res.scratch;
        let (h, k, v, m) = (g.n_heads, g.head_k_dim, g.head_v_dim, g.slots);
        self.side_by_side(qkv, &s.qkv_raw, h * (2 * k + v))?;
        self.linear(&s.h, f, &s.gk, Rows::Tokens, Epilogue::Store)?;
        let glue = Gsa { heads: h, dk: k, dv: v, slots: m, normalizer: g.gate_normalizer };
        glue.gates(self.gpu, &mut self.plan, &s.qkv_raw, &s.gk, (&s.qkv, &s.gsa_second))?;
        self.tap_rows(slot, (&s.qkv, h * (2 * k + m)), Some((&s.gk, h * m)));
        let pass = |qkv, (dk, dv), decay, q_scale, state_offset, out| Gla {
            heads: h,
            dk,
            dv,
            decay,
            q_scale,
            qkv,
            gk: &s.gk,
            state,
            state_offset,
            out,
        };
        let first = pass(&s.qkv, (k, m), Decay::PerValue, g.scale, 0, &s.lin_out);
        let second = pass(&s.gsa_second, (m, v), Decay::Log, 1.0, h * k * m, &s.z);
        for (i, call) in [first, second].iter().enumerate() {
            if i == 1 {
                glue.softmax(self.gpu, &mut self.plan, &s.lin_out, &s.gsa_second)?;
            }
            match self.mode {
                Mode::Prefill => gla::chunked(self.gpu, &mut self.plan, call, &s.chunk)?,
                Mode::Decode => gla::recurrent(self.gpu, &mut self.plan, call)?,
            }
        }
        activation(self.gpu, &mut self.plan, Activation::Silu, &s.z, &s.lin_out, h * v)?;
        self.output_norm_and_project(norm, 1, None, out, post)
    }

    /// `y = up(act(down(x)))` into columns `offset..` of rows `stride` wide.
    fn lora(&mut self, x: &wgpu::Buffer, l: &LoraWeights, y: &wgpu::Buffer, at: (usize, usize)) -> Result<()> {
        let s = &self.res.scratch;
        self.linear(x, &l.down, &s.low_rank, Rows::Tokens, Epilogue::Store)?;
        let mid = match l.act {
            Activation::Identity => &s.low_rank,
            act => {
                activation(self.gpu, &mut self.plan, act, &s.low_rank, &s.lora_act, l.down.w.rows)?;
                &s.lora_act
            }
        };
        self.linear_at(mid, &l.up, y, Rows::Tokens, Epilogue::Store, at)
    }

    /// A kernel-2 token shift of `h` into `y` (`[mu, 1 - mu]` per channel), its history from float `offset` of
    /// `history`.
    fn token_shift(
        &mut self,
        conv: &wgpu::Buffer,
        history: &wgpu::Buffer,
        offset: usize,
        y: &wgpu::Buffer,
        advance: bool,
    ) -> Result<()> {
        let s = &self.res.scratch;
        let call = ShortConv {
            x: &s.h,
            weight: conv,
            bias: None,
            state: history,
            state_offset: offset,
            y,
            channels: self.hidden,
            kernel: 2,
            silu: false,
            advance,
            sequential: self.mode == Mode::Decode,
        };
        Ok(short_conv(self.gpu, &mut self.plan, &call)?)
    }

    /// RWKV-7's time mixer: six token shifts, the projections and LoRAs written into one `[r|w|k|a|b|v]` row per
    /// token, their preparation, the rule (chunkwise or recurrent), the group norm + bonus + gate, then `o_proj`.
    fn rwkv7(&mut self, slot: usize, r: &Rwkv7Spec, w: &MixerWeights, post: &Option<NormWeights>) -> Result<()> {
        let MixerWeights::Rwkv7(wt) = w else { unreachable!("RWKV-7 weights") };
        let LayerState::Recurrent { state, conv } = &self.res.states[slot] else { unreachable!("RWKV-7 state") };
        let s = &self.res.scratch;
        for (i, (mu, y)) in wt.shift.iter().zip(&s.shifted).enumerate() {
            self.token_shift(mu, conv, 0, y, i + 1 == wt.shift.len())?;
        }
        let [xr, xw, xk, xv, xa, xg] = [0, 1, 2, 3, 4, 5].map(|i| &s.shifted[i]);
        let call = Rwkv7 { heads: r.n_heads, dk: r.head_dim, dv: r.head_v_dim, x: &s.qkv };
        let (kw, width) = (r.key_dim(), call.width());
        self.linear_cols(xr, &wt.r, &s.qkv, 0, width)?;
        self.lora(xw, &wt.loras[0], &s.qkv, (kw, width))?;
        self.linear_cols(xk, &wt.k, &s.qkv, 2 * kw, width)?;
        self.lora(xa, &wt.loras[1], &s.qkv, (3 * kw, width))?;
        self.linear_cols(xv, &wt.v, &s.qkv, 5 * kw, width)?;
        if let Some(l) = &wt.v_lora {
            self.lora(xv, l, &s.z, (0, 0))?;
        }
        self.lora(xg, &wt.loras[2], &s.rwkv_gate, (0, 0))?;
        call.prepare(self.gpu, &mut self.plan, [&wt.k_k, &wt.k_a], &s.v_first, wt.v_lora.as_ref().map(|_| &s.z))?;
        self.tap_rows(slot, (&s.qkv, width), None);
        match self.mode {
            Mode::Prefill => call.chunked(self.gpu, &mut self.plan, state, &s.lin_out, &s.chunk)?,
            Mode::Decode => call.recurrent(self.gpu, &mut self.plan, state, &s.lin_out)?,
        }
        let norm = [&wt.g_norm[0], &wt.g_norm[1], &wt.r_k];
        call.finish(self.gpu, &mut self.plan, &s.lin_out, &s.rwkv_gate, norm, r.g_norm.eps)?;
        self.project_residual(&s.lin_out, &wt.o, post)
    }

    /// Records one stateful mixer into the residual, using the next state slot.
    fn mix(&mut self, spec: &MixerSpec, w: &MixerWeights, post: &Option<NormWeights>) -> Result<()> {
        let slot = self.slot;
        match spec {
            MixerSpec::Attention(a) => self.attention(slot, a, w, post),
            MixerSpec::GatedDeltaNet(g) => self.gated_deltanet(slot, g, w, post),
            MixerSpec::Gla(g) => self.gla(slot, g, w, post),
            MixerSpec::Hgrn2(g) => self.hgrn2(slot, g, w, post),
            MixerSpec::ShortConv(c) => self.short_conv(slot, c, w, post),
            MixerSpec::LinearAttn(l) => self.linear_attn(slot, l, w, post),
            MixerSpec::Lightning(l) => self.lightning(slot, l, w, post),
            MixerSpec::Mla(m) => self.mla(slot, m, w, post),
            MixerSpec::Mamba2(m) => self.mamba2(slot, m, w, post),
            MixerSpec::Gsa(g) => self.gsa(slot, g, w, post),
            MixerSpec::Rwkv7(r) => self.rwkv7(slot, r, w, post),
            MixerSpec::Rat(r) => self.rat(slot, r, w, post),
            MixerSpec::Parallel(_) => unreachable!("parallel mixers are recorded part by part"),
        }
    }

    fn layer(&mut self, spec: &ternlight_core::spec::LayerSpec, w: &LayerWeights) -> Result<()> {
        let s = &self.res.scratch;
        self.scaled = spec.residuals.map(|r| r.mixer);
        // RWKV-7 token-shifts h; every other mixer reads it through its projections. Parallel branches add into the
        // stream one after the other, so the later ones need h written.
        let parts = spec.mixer.parts();
        let shifts = matches!(spec.mixer, MixerSpec::Rwkv7(_));
        self.block_input(&w.pre_mixer, !shifts && parts.len() == 1)?;
        if parts.len() > 1 && (w.post_mixer.is_some() || self.scaled.is_some()) {
            return Err(GpuError::shape("graph", "parallel mixers add straight into the residual: no post-norm").into());
        }
        for (part, weights) in parts.into_iter().zip(w.mixer.parts()) {
            self.mix(part, weights, &w.post_mixer)?;
            self.slot += 1;
        }
        self.folded_norm = None;
        self.scaled = spec.residuals.map(|r| r.mlp);
        // Experts and channel mixers read h with kernels of their own.
        self.block_input(&w.pre_mlp, matches!(spec.mlp, MlpSpec::Gated(_)))?;
        match (&spec.mlp, &w.mlp) {
            (MlpSpec::Gated(g), MlpWeights::Gated(weights)) => {
                self.gated_activation(g, weights, None)?;
                if let Some(n) = &weights.sub_norm {
                    self.norm(n, 1, Rows::Tokens, &s.act, NormOutput::InPlace)?;
                }
                self.project_residual(&s.act, &weights.down, &w.post_mlp)
            }
            (MlpSpec::Moe(m), weights) => self.moe(m, weights, &w.post_mlp),
            (MlpSpec::ChannelMix(c), MlpWeights::ChannelMix(cw)) => {
                // The layer's one mixer is its RWKV time mixer (checked at allocation); the channel mixer's shift
                // history follows the time mixer's in that slot's conv state.
                let LayerState::Recurrent { conv, .. } = &self.res.states[self.slot - 1] else {
                    unreachable!("RWKV layer state")
                };
                self.token_shift(&cw.shift, conv, self.hidden, &s.shifted[0], true)?;
                self.linear(&s.shifted[0], &cw.key, &s.gate, Rows::Tokens, Epilogue::Store)?;
                activation(self.gpu, &mut self.plan, Activation::Relu2, &s.gate, &s.act, c.key.out_features)?;
                self.project_residual(&s.act, &cw.value, &w.post_mlp)
            }
            _ => unreachable!("MLP weights match the spec"),
        }?;
        self.folded_norm = None;
        Ok(())
    }

    /// `act = act(gate(h)) * up(h)`, times `sigmoid(row_gate)` per token when given.
    fn gated_activation(
        &mut self,
        g: &GatedMlpSpec,
        w: &GatedMlpWeights,
        row_gate: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let s = &self.res.scratch;
        let (gate, up) = (&w.gate, &w.up);
        let alike = gate.scale == up.scale && gate.w.same_layout(&up.w);
        if row_gate.is_none() && gate.plain() && up.plain() && alike {
            // Both products and the activation in one kernel.
            let (x, folded) = self.folded_input(&s.h);
            let args = Linear {
                scale: gate.scale,
                epilogue: Epilogue::Gated(g.act),
                input_norm: folded.as_ref().map(FoldedNorm::input_norm),
                up: Some(&up.w),
                ..Linear::new(x, &gate.w, &s.act, self.shape())
            };
            return Ok(linear(self.gpu, &mut self.plan, &args)?);
        }
        let one_block = gate.w.same_layout(&up.w) && gate.w.blocks.len() == 1;
        match self.quantise_block_input(&[gate, up])? {
            Some(q) if row_gate.is_none() && one_block => {
                // Both integer products (each with its own scale and correction) and the activation in one kernel.
                let call = MatvecDp4 {
                    gated: Some(Gated { up: &up.w, scale: up.scale, act: g.act, hgf: q.correction(up, 1) }),
                    mid_width: q.width,
                    hgf: q.correction(gate, 0),
                    ..MatvecDp4::new(&s.xq_rows, &gate.w, gate.scale, &s.act)
                };
                return Ok(matvec_dp4(self.gpu, &mut self.plan, &call)?);
            }
            Some(q) => self.quantised_products(&[gate, up], &[(&s.gate, 0, 0), (&s.up, 0, 0)], &q)?,
            None => {
                self.linear(&s.h, gate, &s.gate, Rows::Tokens, Epilogue::Store)?;
                self.linear(&s.h, up, &s.up, Rows::Tokens, Epilogue::Store)?;
            }
        }
        let io = [&s.gate, &s.up, &s.act];
        match row_gate {
            None => gated_act(self.gpu, &mut self.plan, g.act, io[0], io[1], io[2], g.intermediate())?,
            Some(rg) => gated_act_row_gated(self.gpu, &mut self.plan, g.act, io, g.intermediate(), rg)?,
        }
        Ok(())
    }

    /// Routing, the shared expert, then the selected experts' products summed into the residual (or into `tmp` for
    /// a post-norm).
    fn moe(&mut self, m: &MoeSpec, w: &MlpWeights, post: &Option<NormWeights>) -> Result<()> {
        let MlpWeights::Moe(moe) = w else { unreachable!("MoE weights") };
        let MoeWeights { router, selection_bias, gate, up, down, shared, shared_gate } = moe.as_ref();
        let s = &self.res.scratch;
        self.linear(&s.h, router, &s.router_logits, Rows::Tokens, Epilogue::Store)?;
        let r = Router {
            scoring: m.scoring,
            selection_bias: selection_bias.as_ref(),
            n_experts: m.experts.len(),
            top_k: m.top_k,
            normalize: m.normalize,
            scale: m.scale,
        };
        route(self.gpu, &mut self.plan, &r, &s.router_logits, &s.routes)?;
        let (target, mut epilogue) = self.residual_target(post);
        if let (Some(spec), Some(weights)) = (&m.shared, shared) {
            if let Some(g) = shared_gate {
                self.linear(&s.h, g, &s.row_gate, Rows::Tokens, Epilogue::Store)?;
            }
            self.gated_activation(spec, weights, shared_gate.as_ref().map(|_| &s.row_gate))?;
            self.linear(&s.act, &weights.down, target, Rows::Tokens, epilogue)?;
            epilogue = Epilogue::Accumulate;
        }
        let (width, hidden, top_k) = (m.expert_intermediate(), m.experts[0].down.out_features, m.top_k);
        match self.mode {
            Mode::Decode => {
                let expert = |x, w, n, y, combine| ExpertLinear { x, w, n, routes: &s.routes, top_k, y, combine };
                expert_linear(self.gpu, &mut self.plan, &expert(&s.h, gate, width, &s.gate, None))?;
                expert_linear(self.gpu, &mut self.plan, &expert(&s.h, up, width, &s.up, None))?;
                gated_act(self.gpu, &mut self.plan, m.experts[0].act, &s.gate, &s.up, &s.act, top_k * width)?;
                expert_linear(self.gpu, &mut self.plan, &expert(&s.act, down, hidden, target, Some(epilogue)))?;
            }
            Mode::Prefill => {
                let (lists, counts) = (&s.expert_lists, &s.expert_counts);
                group(self.gpu, &mut self.plan, &s.routes, (m.experts.len(), top_k), lists, counts)?;
                let grouped = |x, slot_input, w, n, y| GroupedLinear { x, slot_input, w, n, top_k, lists, counts, y };
                grouped_linear(self.gpu, &mut self.plan, &grouped(&s.h, false, gate, width, &s.gate))?;
                grouped_linear(self.gpu, &mut self.plan, &grouped(&s.h, false, up, width, &s.up))?;
                gated_act(self.gpu, &mut self.plan, m.experts[0].act, &s.gate, &s.up, &s.act, top_k * width)?;
                grouped_linear(self.gpu, &mut self.plan, &grouped(&s.act, true, down, hidden, &s.expert_slots))?;
                combine_slots(
                    self.gpu,
                    &mut self.plan,
                    (&s.expert_slots, &s.routes),
                    (hidden, top_k),
                    target,
                    epilogue,
                )?;
            }
        }
        self.finish_residual(post)
    }
}

/// How many of `projections`, from the first, go as one stacked product: up to three plain float projections of
/// one dtype, width and scale, one block each (1 where the first is not such).
fn stack_run(projections: &[&LinearWeights]) -> usize {
    let first = projections[0];
    let stackable = |l: &LinearWeights| {
        l.plain()
            && l.w.blocks.len() == 1
            && (l.w.dtype, l.w.cols, l.scale) == (first.w.dtype, first.w.cols, first.scale)
    };
    match stackable(first) {
        true => projections.iter().take(3).take_while(|l| stackable(l)).count(),
        false => 1,
    }
}

/// Records the whole forward (embedding, every layer, final norm and head on the requested rows), decode attention
/// spread as `spread` says.
pub fn build(
    gpu: &Gpu,
    spec: &ModelSpec,
    weights: &ModelWeights,
    res: &Resources,
    (mode, spread): (Mode, DecodeSpread),
    inspection: Inspection,
) -> Result<Plan> {
    let plan = Plan::with_capacity(gpu, res.capacity, res.logit_capacity);
    let (hidden, slot, scaled, folded_norm) = (spec.hidden, 0, None, None);
    let mut b = Builder { gpu, plan, res, inspection, mode, spread, hidden, scaled, slot, folded_norm };
    let s = &res.scratch;
    embedding(gpu, &mut b.plan, &weights.embed, &s.ids, &s.x, spec.embed_scale.unwrap_or(1.0))?;
    if let Some(n) = &weights.embed_norm {
        b.norm(n, 1, Rows::Tokens, &s.x, NormOutput::InPlace)?;
    }
    // Stages for profiling: 0 the embedding, 1..=L the layers, L + 1 the head.
    for (i, (layer, w)) in spec.layers.iter().zip(&weights.layers).enumerate() {
        b.plan.push(Op::Stage(i + 1));
        b.layer(layer, w)?;
    }
    b.plan.push(Op::Stage(spec.layers.len() + 1));
    b.plan.push(Op::GatherLogitRows { src: s.x.clone(), dst: s.xl.clone(), row_bytes: (spec.hidden * 4) as u64 });
    let shape = b.shape();
    // Decode folds a plain final norm into the head's matrix-vector product.
    let folded = FoldedNorm::of(&weights.final_norm, spec.hidden).filter(|_| shape == MatmulShape::Vector);
    if folded.is_none() {
        b.norm(&weights.final_norm, 1, Rows::Logits, &s.xl, NormOutput::InPlace)?;
    }
    linear(
        gpu,
        &mut b.plan,
        &Linear {
            scale: spec.logit_scale,
            rows: Rows::Logits,
            input_norm: folded.as_ref().map(FoldedNorm::input_norm),
            ..Linear::new(&s.xl, weights.head(), &s.logits, shape)
        },
    )?;
    res.sampler.record(gpu, &mut b.plan, &s.ids, &s.logits)?;
    Ok(b.plan)
}
