//! A checkpoint's tensors on the GPU, organised like the spec: matrices in their stored dtype (split into
//! row blocks beyond the binding limit), norm weights and biases as f32.

use crate::error::Result;
use std::future::Future;
use std::sync::Arc;
use ternlight_core::dtype::DType;
use ternlight_core::reference::gated_delta::NO_DECAY_A_LOG;
use ternlight_core::reference::{hgrn2, ternary};
use ternlight_core::spec::{
    Activation, AttentionSpec, GatedDeltaNetSpec, GatedMlpSpec, GlaSpec, Hgf, Hgrn2Spec, LayerSpec, LightningSpec,
    LinearAttnSpec, LinearSpec, LoraSpec, MixerSpec, MlpSpec, ModelSpec, MoeSpec, NormSpec, Rwkv7Spec, ShortConvSpec,
    Ternary,
};
use ternlight_core::tensors::{check_against_spec, Finite, TensorSource};
use ternlight_core::CoreError;
use ternlight_gpu::buffer::Weight;
use ternlight_gpu::{wgpu, Gpu};

/// Progress of a weight upload, reported after each tensor.
#[derive(Clone, Debug, Default)]
pub struct LoadProgress {
    /// Tensors uploaded so far.
    pub tensors_done: usize,
    /// Tensors in all.
    pub tensors_total: usize,
    /// Bytes uploaded so far.
    pub bytes_done: u64,
    /// Bytes in all.
    pub bytes_total: u64,
    /// Layers whose weights are all on the GPU (uploaded in order).
    pub layers_ready: usize,
    /// Layers in all.
    pub layers_total: usize,
}

/// A linear layer's weight and optional bias.
pub struct LinearWeights {
    /// `[out, in]` in the stored dtype.
    pub w: Weight,
    /// `[out]` f32.
    pub bias: Option<wgpu::Buffer>,
    /// Multiplier of `x W^T` (the spec's muP factor, times a ternary layer's multiplier).
    pub scale: f32,
    /// A norm a ternary layer's input takes first, applied by its quantiser as it reads: fla `BitLinear`'s own, or a
    /// BitNet sub-norm moved here on load.
    pub input_norm: Option<NormWeights>,
    /// A Hybrid Gated Flow correction added to the product, when the layer has one.
    pub hgf: Option<Box<HgfWeights>>,
}

/// Moves a sub-norm (BitNet's, before an output projection) into the ternary layer that reads it when it is a plain
/// RMSNorm over the whole input: the layer's quantiser then applies it as it reads, one dispatch fewer. A Hybrid
/// Gated Flow correction then reads the normalised input too (the quantiser computes its low-rank values, so its
/// matrices must each be one block). Layers with a norm of their own keep the sub-norm separate, as do norms that
/// centre, carry a bias or cover part of a row. Returns the norm still to run.
fn fold_sub_norm(sub_norm: Option<NormWeights>, into: &mut LinearWeights) -> Option<NormWeights> {
    let one_block = |h: &HgfWeights| h.a.blocks.len() == 1 && h.b.blocks.len() == 1;
    match sub_norm {
        Some(n)
            if into.w.ternary
                && into.hgf.as_deref().is_none_or(one_block)
                && into.input_norm.is_none()
                && n.bias.is_none()
                && !n.spec.centered
                && n.spec.dim == into.w.cols =>
        {
            into.input_norm = Some(n);
            if let Some(h) = &mut into.hgf {
                h.reads_input_norm = true;
            }
            None
        }
        other => other,
    }
}

/// A Gated DeltaNet layer's update-strength (`b`) and decay-input (`a`) projections, whose outputs sit side by side
/// as `[b | a]`.
#[allow(clippy::large_enum_variant)] // one per layer, built at load
pub enum GateInputs {
    /// Two projections.
    Separate {
        /// Update strength.
        b: LinearWeights,
        /// Decay input (a zero matrix for plain DeltaNet).
        a: LinearWeights,
        /// The down half of a low-rank decay projection, which `a` then reads.
        a_down: Option<LinearWeights>,
    },
    /// `[b; a]` as one f32 matrix with the multipliers folded in, where both are plain float projections beside
    /// ternary ones: decode's int8 quantiser computes the gate inputs as it quantises the block input, and prefill
    /// runs it as one product.
    Stacked(LinearWeights),
}

impl GateInputs {
    /// Bytes resident on the GPU.
    fn bytes(&self) -> u64 {
        match self {
            GateInputs::Separate { b, a, a_down } => b.bytes() + a.bytes() + a_down.as_ref().map_or(0, |d| d.bytes()),
            GateInputs::Stacked(ba) => ba.bytes(),
        }
    }
}

/// Hybrid Gated Flow's low-rank path `g ⊙ B (A x)`: `A` and `B` in f32, the gate folded into `B`'s rows
/// so that the correction is two plain products.
pub struct HgfWeights {
    /// `A` `[rank, in]`, one upload shared by the projections that are rows of one stored tensor (they read the same
    /// correction input), so that decode computes their low-rank values once.
    pub a: Arc<Weight>,
    /// `a` was uploaded for an earlier projection of the same stored tensor, and is counted there.
    pub a_shared: bool,
    /// `A` reads the layer's input after its `input_norm`: set when that norm is a sub-norm the model applies before
    /// the projection, moved into the layer on load. fla `BitLinear`'s own norm belongs to the ternary product
    /// alone, and the correction reads the input before it.
    pub reads_input_norm: bool,
    /// `diag(g) B` `[out, rank]`.
    pub b: Weight,
}

impl LinearWeights {
    /// A float layer with nothing beside its product (no bias, HGF correction or own norm): one that the fused
    /// kernels (stacked projections, gated pairs) can take.
    pub fn plain(&self) -> bool {
        !self.w.ternary && self.hgf.is_none() && self.bias.is_none() && self.input_norm.is_none()
    }

    /// Bytes resident on the GPU.
    pub fn bytes(&self) -> u64 {
        self.w.bytes()
            + self.bias.as_ref().map_or(0, wgpu::Buffer::size)
            + self.input_norm.as_ref().map_or(0, NormWeights::bytes)
            + self.hgf.as_ref().map_or(0, |h| if h.a_shared { 0 } else { h.a.bytes() } + h.b.bytes())
    }
}

/// A norm's weight (and LayerNorm bias) with its spec.
#[derive(Clone)]
pub struct NormWeights {
    /// `[dim]` f32.
    pub w: wgpu::Buffer,
    /// `[dim]` f32, for a LayerNorm with a bias.
    pub bias: Option<wgpu::Buffer>,
    /// Dim, eps, offset convention.
    pub spec: NormSpec,
}

impl NormWeights {
    /// The norm as a linear kernel applies it to its own input (RMSNorm: its centring and bias are not carried).
    pub fn as_input_norm(&self) -> ternlight_gpu::kernels::matmul::InputNorm<'_> {
        ternlight_gpu::kernels::matmul::InputNorm {
            weight: &self.w,
            eps: self.spec.eps,
            unit_offset: self.spec.unit_offset,
        }
    }

    /// Bytes resident on the GPU.
    pub fn bytes(&self) -> u64 {
        self.w.size() + self.bias.as_ref().map_or(0, wgpu::Buffer::size)
    }
}

/// Weights of a token mixer.
pub enum MixerWeights {
    /// Softmax attention projections and q/k norms.
    Attention {
        /// Query projection.
        q: LinearWeights,
        /// Key projection.
        k: LinearWeights,
        /// Value projection.
        v: LinearWeights,
        /// Output projection.
        o: LinearWeights,
        /// Per-head q and k norms.
        qk_norm: Option<(NormWeights, NormWeights)>,
        /// Output-gate projection (the gate half of a gated `q_proj`, split off at load).
        gate: Option<LinearWeights>,
        /// Norm of the attention output before `o_proj` (BitNet; per head for differential attention).
        sub_norm: Option<NormWeights>,
        /// Differential attention's λ (computed from its vectors at load; `1 - λ_init` is folded into `o`).
        lambda: Option<f32>,
        /// Mixture-of-Head routers (empty without head routing).
        routers: Vec<LinearWeights>,
    },
    /// Gated DeltaNet projections, conv, gate parameters and output norm.
    GatedDeltaNet {
        /// Projections writing `[q | k | v]` side by side.
        in_proj: Vec<LinearWeights>,
        /// Conv weights `[channels, kernel]` f32, channels in `[q | k | v]` order.
        conv: wgpu::Buffer,
        /// Output-gate projections (low-rank down half, then the projection), when the output norm is gated.
        z: Option<(Option<LinearWeights>, LinearWeights)>,
        /// The update-strength and decay-input projections.
        gate_inputs: GateInputs,
        /// `[A_log | dt_bias]` f32.
        gate_params: wgpu::Buffer,
        /// The same on the host, for attention maps.
        gate_host: Vec<f32>,
        /// Gated output norm.
        norm: NormWeights,
        /// Output projection.
        out: LinearWeights,
    },
    /// HGRN2 projections, output norm and this layer's lower bound.
    Hgrn2 {
        /// Query projection.
        q: LinearWeights,
        /// Forget-gate projection.
        f: LinearWeights,
        /// Input (value) projection.
        i: LinearWeights,
        /// Output norm.
        norm: NormWeights,
        /// Output projection.
        out: LinearWeights,
        /// Per-channel lower bound of the forget gate (none for the first layer).
        lower_bound: Option<wgpu::Buffer>,
    },
    /// LFM2 gated short convolution: `in_proj` split into its B, C and x parts at load.
    ShortConv {
        /// Input gate part of `in_proj`.
        b: LinearWeights,
        /// Output gate part of `in_proj`.
        c: LinearWeights,
        /// Input part of `in_proj`.
        x: LinearWeights,
        /// Conv weights `[channels, kernel]` f32.
        conv: wgpu::Buffer,
        /// Output projection.
        out: LinearWeights,
    },
    /// Linear attention projections, feature-map layers and output norm.
    LinearAttn {
        /// q, k, v projections.
        qkv: Vec<LinearWeights>,
        /// The feature map's layers, q's then k's, each weight then bias, f32 (none for Taylor).
        feature: Option<wgpu::Buffer>,
        /// Output norm.
        norm: Option<NormWeights>,
        /// Output projection.
        out: LinearWeights,
    },
    /// RAT: the fused input projection, gate bias (f32) and output projection.
    Rat {
        /// `[z | x | g | q | k]` projection.
        in_proj: LinearWeights,
        /// Gate bias `[hidden]`.
        gate_bias: wgpu::Buffer,
        /// Output projection.
        out: LinearWeights,
    },
    /// Mamba2: the `in_proj` parts, conv, SSM parameters, optional gated norm and output projection.
    Mamba2 {
        /// The `z` gate part of `in_proj`.
        z: LinearWeights,
        /// The `x`, `B`, `C` parts, written side by side.
        xbc: Vec<LinearWeights>,
        /// The `dt` part.
        dt: LinearWeights,
        /// Conv weights `[channels, kernel]` f32.
        conv: wgpu::Buffer,
        /// Conv bias `[channels]` f32.
        conv_bias: Option<wgpu::Buffer>,
        /// `[A_log | dt_bias | D]` f32.
        params: wgpu::Buffer,
        /// Gated group norm of the output.
        norm: Option<NormWeights>,
        /// Output projection.
        out: LinearWeights,
    },
    /// Gated Slot Attention projections, slot gates and output norm.
    Gsa {
        /// q, k, v projections, written side by side.
        qkv: Vec<LinearWeights>,
        /// Slot-gate projection.
        f: LinearWeights,
        /// Norm over all heads.
        norm: NormWeights,
        /// Output projection.
        out: LinearWeights,
    },
    /// Mixers side by side (one entry per branch).
    Parallel(Vec<MixerWeights>),
    /// Multi-head latent attention projections and the latent norm.
    Mla {
        /// Query projection.
        q: LinearWeights,
        /// `[latent | key tail]` projection.
        kv_a: LinearWeights,
        /// Latent norm.
        kv_norm: NormWeights,
        /// Latent to per-head `[k_nope | v]`.
        kv_b: LinearWeights,
        /// Output projection.
        o: LinearWeights,
    },
    /// Lightning attention: q/k/v parts of `qkv_proj`, per-head log decays, output gate, norm and projection.
    Lightning {
        /// q, k, v projections.
        qkv: Vec<LinearWeights>,
        /// `-slope` per head, f32.
        decay: wgpu::Buffer,
        /// Output-gate projection.
        gate: LinearWeights,
        /// Norm over all heads.
        norm: NormWeights,
        /// Output projection.
        out: LinearWeights,
    },
    /// RWKV-7's time mixer (boxed: the largest variant).
    Rwkv7(Box<Rwkv7Weights>),
    /// Gated Linear Attention projections and output norm.
    Gla {
        /// Projections writing `[q | k | v]` side by side.
        qkv: Vec<LinearWeights>,
        /// Low-rank decay projection, down half.
        gk_down: LinearWeights,
        /// Low-rank decay projection, up half (with bias).
        gk_up: LinearWeights,
        /// Output-gate projection.
        g: Option<LinearWeights>,
        /// Output norm.
        norm: NormWeights,
        /// Output projection.
        out: LinearWeights,
    },
}

/// A low-rank projection `up(act(down(x)))`.
pub struct LoraWeights {
    /// `[rank, in]`.
    pub down: LinearWeights,
    /// Between the two.
    pub act: Activation,
    /// `[out, rank]` (with its bias, if any).
    pub up: LinearWeights,
}

impl LoraWeights {
    fn bytes(&self) -> u64 {
        self.down.bytes() + self.up.bytes()
    }
}

/// RWKV-7's time mixer (see `Rwkv7Spec`). Each token shift is a kernel-2 conv with weights `[mu, 1 - mu]` per
/// channel: `mu x_{t-1} + (1 - mu) x_t = x_t + (x_{t-1} - x_t) mu`.
pub struct Rwkv7Weights {
    /// Token-shift convs `[hidden, 2]` for r, w, k, v, a and g.
    pub shift: Vec<wgpu::Buffer>,
    /// Receptance projection.
    pub r: LinearWeights,
    /// Key projection.
    pub k: LinearWeights,
    /// Value projection.
    pub v: LinearWeights,
    /// Output projection.
    pub o: LinearWeights,
    /// Decay, in-context rate and output-gate LoRAs.
    pub loras: [LoraWeights; 3],
    /// The value-residual LoRA (after layer 0).
    pub v_lora: Option<LoraWeights>,
    /// `k_k`, `k_a` `[key dim]` and `r_k` `[heads * head_dim]`.
    pub k_k: wgpu::Buffer,
    /// See `k_k`.
    pub k_a: wgpu::Buffer,
    /// See `k_k`.
    pub r_k: wgpu::Buffer,
    /// Group-norm weight and bias `[value dim]` (zero bias when the checkpoint has none).
    pub g_norm: [wgpu::Buffer; 2],
}

impl Rwkv7Weights {
    fn bytes(&self) -> u64 {
        let buffers = self.shift.iter().chain(&self.g_norm).chain([&self.k_k, &self.k_a, &self.r_k]);
        buffers.map(wgpu::Buffer::size).sum::<u64>()
            + [&self.r, &self.k, &self.v, &self.o].into_iter().map(LinearWeights::bytes).sum::<u64>()
            + self.loras.iter().chain(&self.v_lora).map(LoraWeights::bytes).sum::<u64>()
    }
}

/// RWKV's channel mixer: the token-shift conv `[hidden, 2]`, then `value(relu(key(.))^2)`.
pub struct ChannelMixWeights {
    /// Token-shift conv.
    pub shift: wgpu::Buffer,
    /// `[intermediate, hidden]`.
    pub key: LinearWeights,
    /// `[hidden, intermediate]`.
    pub value: LinearWeights,
}

/// A gated MLP's projections.
pub struct GatedMlpWeights {
    /// Gate projection.
    pub gate: LinearWeights,
    /// Up projection.
    pub up: LinearWeights,
    /// Down projection.
    pub down: LinearWeights,
    /// Norm of the activation before `down` (BitNet).
    pub sub_norm: Option<NormWeights>,
}

impl GatedMlpWeights {
    fn bytes(&self) -> u64 {
        [&self.gate, &self.up, &self.down].into_iter().map(LinearWeights::bytes).sum::<u64>()
            + self.sub_norm.as_ref().map_or(0, NormWeights::bytes)
    }
}

/// Weights of a channel mixer.
#[allow(clippy::large_enum_variant)]
pub enum MlpWeights {
    /// One gated MLP.
    Gated(GatedMlpWeights),
    /// A mixture of experts (boxed: the larger variant).
    Moe(Box<MoeWeights>),
    /// RWKV's channel mixer.
    ChannelMix(ChannelMixWeights),
}

/// A mixture of experts: router, stacked expert projections, optional shared expert.
pub struct MoeWeights {
    /// Router projection.
    pub router: LinearWeights,
    /// Selection-only bias `[experts]` f32.
    pub selection_bias: Option<wgpu::Buffer>,
    /// Experts' gate projections stacked `[experts * intermediate, hidden]`.
    pub gate: Weight,
    /// Experts' up projections stacked likewise.
    pub up: Weight,
    /// Experts' down projections stacked `[experts * hidden, intermediate]`.
    pub down: Weight,
    /// The shared expert.
    pub shared: Option<GatedMlpWeights>,
    /// Scalar gate of the shared expert.
    pub shared_gate: Option<LinearWeights>,
}

impl MixerWeights {
    /// The weights of each stateful mixer: a parallel mixer's branches, else this one.
    pub fn parts(&self) -> Vec<&MixerWeights> {
        match self {
            MixerWeights::Parallel(branches) => branches.iter().flat_map(MixerWeights::parts).collect(),
            other => vec![other],
        }
    }

    /// Bytes of the Mamba2, GSA, RWKV-7 and parallel variants (the others are counted in [`ModelWeights::bytes`]).
    fn bytes(&self) -> u64 {
        let opt = |b: &Option<wgpu::Buffer>| b.as_ref().map_or(0, wgpu::Buffer::size);
        match self {
            MixerWeights::Mamba2 { z, xbc, dt, conv, conv_bias, params, norm, out } => {
                [z, dt, out].into_iter().chain(xbc).map(LinearWeights::bytes).sum::<u64>()
                    + conv.size()
                    + opt(conv_bias)
                    + params.size()
                    + norm.as_ref().map_or(0, NormWeights::bytes)
            }
            MixerWeights::Parallel(branches) => branches.iter().map(|b| b.bytes()).sum(),
            MixerWeights::Gsa { qkv, f, norm, out } => {
                qkv.iter().chain([f, out]).map(LinearWeights::bytes).sum::<u64>() + norm.bytes()
            }
            MixerWeights::Rwkv7(r) => r.bytes(),
            _ => 0,
        }
    }
}

/// Weights of one layer.
pub struct LayerWeights {
    /// Token mixer.
    pub mixer: MixerWeights,
    /// Channel mixer.
    pub mlp: MlpWeights,
    /// Norm before the mixer.
    pub pre_mixer: Option<NormWeights>,
    /// Norm on the mixer output.
    pub post_mixer: Option<NormWeights>,
    /// Norm before the MLP.
    pub pre_mlp: Option<NormWeights>,
    /// Norm on the MLP output.
    pub post_mlp: Option<NormWeights>,
}

/// The whole model on the GPU.
pub struct ModelWeights {
    /// Token embedding `[vocab, hidden]`.
    pub embed: Weight,
    /// Norm of the embeddings (RWKV's `pre_norm`).
    pub embed_norm: Option<NormWeights>,
    /// Output head, `None` when tied to the embedding.
    pub head: Option<Weight>,
    /// Final norm.
    pub final_norm: NormWeights,
    /// Per-layer weights in schedule order.
    pub layers: Vec<LayerWeights>,
}

impl ModelWeights {
    /// The head matrix (the embedding when tied).
    pub fn head(&self) -> &Weight {
        self.head.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes of weights resident on the GPU.
    pub fn bytes(&self) -> u64 {
        let lin = LinearWeights::bytes;
        let norm = NormWeights::bytes;
        let opt = |n: &Option<NormWeights>| n.as_ref().map_or(0, norm);
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                let mixer = match &l.mixer {
                    MixerWeights::Attention { q, k, v, o, qk_norm, gate, sub_norm, routers, .. } => {
                        routers.iter().map(lin).sum::<u64>()
                            + lin(q)
                            + lin(k)
                            + lin(v)
                            + lin(o)
                            + qk_norm.as_ref().map_or(0, |(a, b)| norm(a) + norm(b))
                            + gate.as_ref().map_or(0, lin)
                            + opt(sub_norm)
                    }
                    MixerWeights::GatedDeltaNet {
                        in_proj, conv, z, gate_inputs, gate_params, norm: n, out, ..
                    } => {
                        in_proj.iter().map(lin).sum::<u64>()
                            + conv.size()
                            + z.as_ref().map_or(0, |(down, up)| down.as_ref().map_or(0, lin) + lin(up))
                            + gate_inputs.bytes()
                            + gate_params.size()
                            + norm(n)
                            + lin(out)
                    }
                    MixerWeights::LinearAttn { qkv, feature, norm: n, out } => {
                        qkv.iter().map(lin).sum::<u64>()
                            + feature.as_ref().map_or(0, wgpu::Buffer::size)
                            + n.as_ref().map_or(0, norm)
                            + lin(out)
                    }
                    MixerWeights::Rat { in_proj, gate_bias, out } => lin(in_proj) + gate_bias.size() + lin(out),
                    MixerWeights::ShortConv { b, c, x, conv, out } => lin(b) + lin(c) + lin(x) + conv.size() + lin(out),
                    MixerWeights::Hgrn2 { q, f, i, norm: n, out, lower_bound } => {
                        lin(q)
                            + lin(f)
                            + lin(i)
                            + norm(n)
                            + lin(out)
                            + lower_bound.as_ref().map_or(0, wgpu::Buffer::size)
                    }
                    MixerWeights::Mamba2 { .. }
                    | MixerWeights::Parallel(_)
                    | MixerWeights::Gsa { .. }
                    | MixerWeights::Rwkv7(_) => l.mixer.bytes(),
                    MixerWeights::Mla { q, kv_a, kv_norm, kv_b, o } => {
                        lin(q) + lin(kv_a) + norm(kv_norm) + lin(kv_b) + lin(o)
                    }
                    MixerWeights::Lightning { qkv, decay, gate, norm: n, out } => {
                        qkv.iter().map(lin).sum::<u64>() + decay.size() + lin(gate) + norm(n) + lin(out)
                    }
                    MixerWeights::Gla { qkv, gk_down, gk_up, g, norm: n, out } => {
                        qkv.iter().map(lin).sum::<u64>()
                            + lin(gk_down)
                            + lin(gk_up)
                            + g.as_ref().map_or(0, lin)
                            + norm(n)
                            + lin(out)
                    }
                };
                let mlp = match &l.mlp {
                    MlpWeights::Gated(g) => g.bytes(),
                    MlpWeights::Moe(moe) => {
                        let MoeWeights { router, selection_bias, gate, up, down, shared, shared_gate } = moe.as_ref();
                        lin(router)
                            + selection_bias.as_ref().map_or(0, wgpu::Buffer::size)
                            + gate.bytes()
                            + up.bytes()
                            + down.bytes()
                            + shared.as_ref().map_or(0, GatedMlpWeights::bytes)
                            + shared_gate.as_ref().map_or(0, lin)
                    }
                    MlpWeights::ChannelMix(c) => c.shift.size() + lin(&c.key) + lin(&c.value),
                };
                mixer + mlp + opt(&l.pre_mixer) + opt(&l.post_mixer) + opt(&l.pre_mlp) + opt(&l.post_mlp)
            })
            .sum();
        self.embed.bytes()
            + self.head.as_ref().map_or(0, Weight::bytes)
            + norm(&self.final_norm)
            + opt(&self.embed_norm)
            + layers
    }
}

/// Uploads tensors one at a time, each fetched through the [`Prefetch`] just before it is read and let go right
/// after, counting progress.
struct Uploader<'a, P> {
    gpu: &'a Gpu,
    source: &'a dyn TensorSource,
    prefetch: &'a mut P,
    progress: LoadProgress,
    counted: std::collections::HashSet<String>,
    /// HGF down projections uploaded so far, by tensor name.
    lora_a: std::collections::HashMap<String, Arc<Weight>>,
    on_progress: &'a mut dyn FnMut(&LoadProgress),
}

impl<P: Prefetch> Uploader<'_, P> {
    /// Counts tensor `name` as uploaded (once, however many layers read it).
    fn advance(&mut self, name: &str, bytes: usize) {
        if self.counted.insert(name.to_string()) {
            self.progress.tensors_done += 1;
            self.progress.bytes_done += bytes as u64;
            (self.on_progress)(&self.progress);
        }
    }

    /// `use_bytes` applied to tensor `name`'s stored bytes, which are fetched for it and let go after; counts the
    /// tensor as uploaded.
    async fn with_bytes<T>(&mut self, name: &str, use_bytes: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
        self.prefetch.fetch(name).await?;
        let used = self.source.bytes(name).map_err(Into::into).and_then(|bytes| use_bytes(&bytes));
        self.prefetch.release(name);
        let used = used?;
        self.advance(name, self.source.byte_len(name)?);
        Ok(used)
    }

    /// Tensor `name` as f32 values on the host, counted as uploaded.
    async fn f32(&mut self, name: &str) -> Result<Vec<f32>> {
        self.prefetch.fetch(name).await?;
        let values = self.source.f32(name);
        self.prefetch.release(name);
        let values = values?;
        self.advance(name, self.source.byte_len(name)?);
        Ok(values)
    }

    /// Uploads `values` as an f32 `[rows, cols]` matrix named `name`.
    fn f32_matrix(&self, name: &str, values: &[f32], rows: usize, cols: usize) -> Result<Weight> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(Weight::upload(self.gpu, name, DType::F32, rows, cols, &bytes, self.gpu.info.max_binding)?)
    }

    /// The rows layer `l` uses of its stored matrix, decoded to f32, in output order.
    async fn f32_rows(&mut self, l: &LinearSpec) -> Result<Vec<f32>> {
        let all = self.f32(&l.weight).await?;
        let cols = l.in_features;
        Ok(l.row_indices().iter().flat_map(|&r| all[r * cols..(r + 1) * cols].iter().copied()).collect())
    }

    fn info(&self, name: &str) -> Result<ternlight_core::tensors::TensorInfo> {
        Ok(self.source.info(name)?.ok_or_else(|| CoreError::MissingTensor { name: name.into() })?)
    }

    async fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        let (gpu, dtype) = (self.gpu, self.info(name)?.dtype);
        self.with_bytes(name, |bytes| Ok(Weight::upload(gpu, name, dtype, rows, cols, bytes, gpu.info.max_binding)?))
            .await
    }

    /// Uploads the rows `rows` of matrix `name` (`cols` wide) as one matrix, in that order.
    async fn matrix_rows(&mut self, name: &str, rows: &[usize], cols: usize) -> Result<Weight> {
        let (gpu, dtype) = (self.gpu, self.info(name)?.dtype);
        let row_bytes = cols * dtype.size();
        self.with_bytes(name, |bytes| {
            let gathered: Vec<u8> =
                rows.iter().flat_map(|&r| bytes[r * row_bytes..(r + 1) * row_bytes].iter().copied()).collect();
            Ok(Weight::upload(gpu, name, dtype, rows.len(), cols, &gathered, gpu.info.max_binding)?)
        })
        .await
    }

    /// f32 values of several tensors, concatenated.
    async fn concat_vector(&mut self, names: &[&str]) -> Result<wgpu::Buffer> {
        let mut all = Vec::new();
        for name in names {
            all.extend(self.f32(name).await?);
        }
        Ok(self.gpu.upload_f32(names[0], &all))
    }

    async fn vector(&mut self, name: &str) -> Result<wgpu::Buffer> {
        let v = self.f32(name).await?;
        Ok(self.gpu.upload_f32(name, &v))
    }

    async fn opt_vector(&mut self, name: Option<&str>) -> Result<Option<wgpu::Buffer>> {
        match name {
            Some(name) => Ok(Some(self.vector(name).await?)),
            None => Ok(None),
        }
    }

    /// A ternary layer: codes packed 2 bits each on the GPU, its multiplier folded into the layer's scale. Codes and
    /// multiplier are the whole stored tensor's; a layer that is some of its rows keeps those rows' codes.
    async fn ternary(&mut self, l: &LinearSpec, format: &Ternary) -> Result<LinearWeights> {
        let (rows, cols) = (l.out_features, l.in_features);
        let (codes, multiplier) = match format {
            Ternary::PackedRows { weight_scale } => {
                let scale = self.f32(weight_scale).await?[0];
                if !scale.is_finite() || scale == 0.0 {
                    return Err(CoreError::InvalidInput(format!("{weight_scale}: weight scale {scale}")).into());
                }
                let stored_rows = l.stored_rows();
                let codes = self.with_bytes(&l.weight, |packed| Ok(ternary::unpack_rows(packed, stored_rows, cols)));
                (codes.await?, 1.0 / scale)
            }
            Ternary::Absmean { .. } => ternary::absmean(&self.f32(&l.weight).await?),
        };
        let codes: Vec<i8> =
            l.row_indices().iter().flat_map(|&r| codes[r * cols..(r + 1) * cols].iter().map(|&c| c as i8)).collect();
        let w = Weight::upload_ternary(self.gpu, &l.weight, &codes, rows, cols, self.gpu.info.max_binding)?;
        let bias = self.opt_vector(l.bias.as_deref()).await?;
        let input_norm = match format {
            Ternary::Absmean { input_norm: Some(n) } => Some(self.norm(n).await?),
            _ => None,
        };
        Ok(LinearWeights { w, bias, scale: l.scale * multiplier, input_norm, hgf: None })
    }

    /// A linear layer with its Hybrid Gated Flow correction, when it has one.
    async fn linear(&mut self, l: &LinearSpec) -> Result<LinearWeights> {
        let mut weights = self.product(l).await?;
        if let Some(h) = &l.hgf {
            weights.hgf = Some(Box::new(self.hgf(h, l).await?));
        }
        Ok(weights)
    }

    async fn opt_linear(&mut self, l: Option<&LinearSpec>) -> Result<Option<LinearWeights>> {
        match l {
            Some(l) => Ok(Some(self.linear(l).await?)),
            None => Ok(None),
        }
    }

    async fn linears(&mut self, ls: impl IntoIterator<Item = &LinearSpec>) -> Result<Vec<LinearWeights>> {
        let mut out = Vec::new();
        for l in ls {
            out.push(self.linear(l).await?);
        }
        Ok(out)
    }

    /// `A` in f32 (exact from 16-bit, and one dtype with the other float matrices decode's quantiser reads), once per
    /// stored tensor; `B` scaled row by row by the gate (one scalar or one per output channel).
    async fn hgf(&mut self, h: &Hgf, l: &LinearSpec) -> Result<HgfWeights> {
        let (a, a_shared) = match self.lora_a.get(&h.lora_a) {
            Some(a) => (a.clone(), true),
            None => {
                let values = self.f32(&h.lora_a).await?;
                // Shared like the weights it belongs to: natively across threads (the browser has one).
                #[allow(clippy::arc_with_non_send_sync)]
                let a = Arc::new(self.f32_matrix(&h.lora_a, &values, h.rank, l.in_features)?);
                self.lora_a.insert(h.lora_a.clone(), a.clone());
                (a, false)
            }
        };
        let gate = self.f32(&h.gate).await?;
        let stored = self.f32(&h.lora_b).await?;
        let mut b = Vec::with_capacity(l.out_features * h.rank);
        for r in l.row_indices() {
            let g = gate[if h.per_channel { r } else { 0 }];
            b.extend(stored[r * h.rank..(r + 1) * h.rank].iter().map(|v| v * g));
        }
        let b = self.f32_matrix(&h.lora_b, &b, l.out_features, h.rank)?;
        Ok(HgfWeights { a, a_shared, b, reads_input_norm: false })
    }

    /// A linear layer's own product: the whole stored tensor, the rows of a fused one it selects, or ternary codes.
    async fn product(&mut self, l: &LinearSpec) -> Result<LinearWeights> {
        if let Some(format) = &l.ternary {
            return self.ternary(l, format).await;
        }
        if l.rows.is_none() {
            let w = self.matrix(&l.weight, l.out_features, l.in_features).await?;
            let bias = self.opt_vector(l.bias.as_deref()).await?;
            return Ok(LinearWeights { w, bias, scale: l.scale, input_norm: None, hgf: None });
        }
        let rows = l.row_indices();
        let w = self.matrix_rows(&l.weight, &rows, l.in_features).await?;
        let bias = match l.bias.as_deref() {
            Some(name) => {
                let all = self.f32(name).await?;
                Some(self.gpu.upload_f32(name, &rows.iter().map(|&r| all[r]).collect::<Vec<_>>()))
            }
            None => None,
        };
        Ok(LinearWeights { w, bias, scale: l.scale, input_norm: None, hgf: None })
    }

    /// Several same-shaped matrices stacked into one `[count * rows, cols]` weight whose blocks hold whole members.
    async fn stacked(&mut self, layers: &[&LinearSpec]) -> Result<Weight> {
        let first = layers[0];
        let dtype = self.info(&first.weight)?.dtype;
        let mut bytes = Vec::new();
        for l in layers {
            if self.info(&l.weight)?.dtype != dtype {
                return Err(
                    CoreError::InvalidInput(format!("{}: dtype differs from {}", l.weight, first.weight)).into()
                );
            }
            self.with_bytes(&l.weight, |b| {
                bytes.extend_from_slice(b);
                Ok(())
            })
            .await?;
        }
        let shape = (dtype, layers.len() * first.out_features, first.in_features);
        Ok(Weight::upload_grouped(
            self.gpu,
            &first.weight,
            shape,
            &bytes,
            self.gpu.info.max_binding,
            first.out_features,
        )?)
    }

    async fn gated_mlp(&mut self, g: &GatedMlpSpec) -> Result<GatedMlpWeights> {
        let (gate, up) = (self.linear(&g.gate).await?, self.linear(&g.up).await?);
        let mut down = self.linear(&g.down).await?;
        let sub_norm = fold_sub_norm(self.opt_norm(&g.sub_norm).await?, &mut down);
        Ok(GatedMlpWeights { gate, up, down, sub_norm })
    }

    async fn moe(&mut self, m: &MoeSpec) -> Result<MlpWeights> {
        let router = self.linear(&m.router).await?;
        let selection_bias = self.opt_vector(m.selection_bias.as_deref()).await?;
        let pick = |f: fn(&GatedMlpSpec) -> &LinearSpec| m.experts.iter().map(f).collect::<Vec<_>>();
        let (gate, up, down) = (
            self.stacked(&pick(|e| &e.gate)).await?,
            self.stacked(&pick(|e| &e.up)).await?,
            self.stacked(&pick(|e| &e.down)).await?,
        );
        let shared = match &m.shared {
            Some(g) => Some(self.gated_mlp(g).await?),
            None => None,
        };
        let shared_gate = self.opt_linear(m.shared_gate.as_ref()).await?;
        Ok(MlpWeights::Moe(Box::new(MoeWeights { router, selection_bias, gate, up, down, shared, shared_gate })))
    }

    async fn norm(&mut self, n: &NormSpec) -> Result<NormWeights> {
        let bias = self.opt_vector(n.bias.as_deref()).await?;
        Ok(NormWeights { w: self.vector(&n.weight).await?, bias, spec: n.clone() })
    }

    async fn opt_norm(&mut self, n: &Option<NormSpec>) -> Result<Option<NormWeights>> {
        match n {
            Some(n) => Ok(Some(self.norm(n).await?)),
            None => Ok(None),
        }
    }

    async fn attention(&mut self, a: &AttentionSpec) -> Result<MixerWeights> {
        let q = self.linear(&a.q_proj).await?;
        let gate = self.opt_linear(a.gate_proj.as_ref()).await?;
        let mut o = self.linear(&a.o_proj).await?;
        let mut lambda = None;
        if let Some(d) = &a.differential {
            if o.hgf.is_some() {
                return Err(crate::error::RuntimeError::Request(format!(
                    "{}: differential attention with a low-rank corrected output projection is not supported",
                    a.o_proj.weight
                )));
            }
            let mut vectors = Vec::with_capacity(4);
            for name in &d.lambda {
                vectors.push(self.f32(name).await?);
            }
            lambda = Some(d.lambda([&vectors[0], &vectors[1], &vectors[2], &vectors[3]]));
            // o_proj((1 - λ_init) x) = (1 - λ_init) x W^T + b.
            o.scale *= 1.0 - d.lambda_init;
        }
        let k = self.linear(&a.k_proj).await?;
        let v = self.linear(&a.v_proj).await?;
        let routers = self.linears(a.head_routing.iter().flat_map(|m| &m.routers)).await?;
        let qk_norm = match &a.qk_norm {
            Some((q, k)) => Some((self.norm(q).await?, self.norm(k).await?)),
            None => None,
        };
        let sub_norm = fold_sub_norm(self.opt_norm(&a.sub_norm).await?, &mut o);
        Ok(MixerWeights::Attention { q, k, v, o, lambda, routers, qk_norm, gate, sub_norm })
    }

    async fn gated_deltanet(&mut self, g: &GatedDeltaNetSpec) -> Result<MixerWeights> {
        let in_proj = self.linears(&g.in_proj).await?;
        let conv_names: Vec<&str> = g.conv.iter().map(String::as_str).collect();
        let conv = self.concat_vector(&conv_names).await?;
        let z = match &g.output_gate {
            Some(z) => Some((self.opt_linear(z.down.as_ref()).await?, self.linear(&z.proj).await?)),
            None => None,
        };
        let a_down = self.opt_linear(g.decay.as_ref().and_then(|d| d.a_down.as_ref())).await?;
        let (gate_params, gate_host) = match &g.decay {
            Some(d) => {
                let host = [self.f32(&d.a_log).await?, self.f32(&d.dt_bias).await?].concat();
                (self.gpu.upload_f32(&d.a_log, &host), host)
            }
            None => {
                // Plain DeltaNet: a = 0 (below) and exp(A_log) = 0 make the shared kernels' decay exactly zero.
                let params = [vec![NO_DECAY_A_LOG; g.n_v_heads], vec![0.0; g.n_v_heads]].concat();
                (self.gpu.upload_f32("no decay", &params), params)
            }
        };
        let plain = |l: &LinearSpec| l.ternary.is_none() && l.hgf.is_none() && l.bias.is_none();
        let beside_ternary = in_proj.iter().any(|l| l.w.ternary);
        let gate_inputs = match &g.decay {
            Some(d) if a_down.is_none() && beside_ternary && plain(&g.b_proj) && plain(&d.a_proj) => {
                let mut values = self.f32_rows(&g.b_proj).await?;
                values.iter_mut().for_each(|v| *v *= g.b_proj.scale);
                let mut a_values = self.f32_rows(&d.a_proj).await?;
                a_values.iter_mut().for_each(|v| *v *= d.a_proj.scale);
                values.extend(a_values);
                let rows = g.b_proj.out_features + d.a_proj.out_features;
                let w = self.f32_matrix("gate inputs [b; a]", &values, rows, g.b_proj.in_features)?;
                GateInputs::Stacked(LinearWeights { w, bias: None, scale: 1.0, input_norm: None, hgf: None })
            }
            decay => {
                let a = match decay {
                    Some(d) => self.linear(&d.a_proj).await?,
                    None => {
                        let (hv, hidden) = (g.n_v_heads, g.b_proj.in_features);
                        let w = self.f32_matrix("no decay", &vec![0.0; hv * hidden], hv, hidden)?;
                        LinearWeights { w, bias: None, scale: 1.0, input_norm: None, hgf: None }
                    }
                };
                GateInputs::Separate { b: self.linear(&g.b_proj).await?, a, a_down }
            }
        };
        Ok(MixerWeights::GatedDeltaNet {
            in_proj,
            conv,
            z,
            gate_inputs,
            gate_params,
            gate_host,
            norm: self.norm(&g.norm).await?,
            out: self.linear(&g.out_proj).await?,
        })
    }

    async fn gla(&mut self, g: &GlaSpec) -> Result<MixerWeights> {
        Ok(MixerWeights::Gla {
            qkv: self.linears(&g.qkv).await?,
            gk_down: self.linear(&g.gk_down).await?,
            gk_up: self.linear(&g.gk_up).await?,
            g: self.opt_linear(g.g_proj.as_ref()).await?,
            norm: self.norm(&g.norm).await?,
            out: self.linear(&g.out_proj).await?,
        })
    }

    /// A feature map's two layers as f32 `[w1, b1, w2, b2]`.
    async fn linear_attn(&mut self, l: &LinearAttnSpec) -> Result<MixerWeights> {
        let mut parts = Vec::new();
        for layer in l.feature.layers() {
            let bias = layer
                .bias
                .clone()
                .ok_or_else(|| CoreError::MissingTensor { name: format!("{} bias", layer.weight) })?;
            parts.extend([layer.weight.clone(), bias]);
        }
        let names: Vec<&str> = parts.iter().map(String::as_str).collect();
        Ok(MixerWeights::LinearAttn {
            qkv: self.linears(&l.qkv).await?,
            feature: if names.is_empty() { None } else { Some(self.concat_vector(&names).await?) },
            norm: self.opt_norm(&l.norm).await?,
            out: self.linear(&l.out_proj).await?,
        })
    }

    async fn lightning(&mut self, l: &LightningSpec) -> Result<MixerWeights> {
        let decay: Vec<f32> = l.slopes.iter().map(|s| -s).collect();
        Ok(MixerWeights::Lightning {
            qkv: self.linears(&l.qkv).await?,
            decay: self.gpu.upload_f32("lightning decay", &decay),
            gate: self.linear(&l.output_gate).await?,
            norm: self.norm(&l.norm).await?,
            out: self.linear(&l.out_proj).await?,
        })
    }

    /// Any mixer: each family's weights, a parallel mixer's branches in order.
    async fn mixer(&mut self, spec: &MixerSpec) -> Result<MixerWeights> {
        Ok(match spec {
            MixerSpec::Attention(a) => self.attention(a).await?,
            MixerSpec::GatedDeltaNet(g) => self.gated_deltanet(g).await?,
            MixerSpec::Gla(g) => self.gla(g).await?,
            MixerSpec::Hgrn2(g) => self.hgrn2(g).await?,
            MixerSpec::ShortConv(c) => self.short_conv(c).await?,
            MixerSpec::LinearAttn(l) => self.linear_attn(l).await?,
            MixerSpec::Lightning(l) => self.lightning(l).await?,
            MixerSpec::Rwkv7(r) => self.rwkv7(r).await?,
            MixerSpec::Mla(m) => MixerWeights::Mla {
                q: self.linear(&m.q_proj).await?,
                kv_a: self.linear(&m.kv_a_proj).await?,
                kv_norm: self.norm(&m.kv_norm).await?,
                kv_b: self.linear(&m.kv_b_proj).await?,
                o: self.linear(&m.o_proj).await?,
            },
            MixerSpec::Mamba2(m) => MixerWeights::Mamba2 {
                z: self.linear(&m.z).await?,
                xbc: self.linears(&m.xbc).await?,
                dt: self.linear(&m.dt).await?,
                conv: self.concat_vector(&[&m.conv]).await?,
                conv_bias: self.opt_vector(m.conv_bias.as_deref()).await?,
                params: self.concat_vector(&[&m.a_log, &m.dt_bias, &m.d]).await?,
                norm: self.opt_norm(&m.norm).await?,
                out: self.linear(&m.out_proj).await?,
            },
            MixerSpec::Rat(r) => MixerWeights::Rat {
                in_proj: self.linear(&r.in_proj).await?,
                gate_bias: self.vector(&r.gate_bias).await?,
                out: self.linear(&r.out_proj).await?,
            },
            MixerSpec::Gsa(g) => MixerWeights::Gsa {
                qkv: self.linears(&g.qkv).await?,
                f: self.linear(&g.f_proj).await?,
                norm: self.norm(&g.norm).await?,
                out: self.linear(&g.out_proj).await?,
            },
            MixerSpec::Parallel(branches) => {
                let mut parts = Vec::with_capacity(branches.len());
                for b in branches {
                    parts.push(Box::pin(self.mixer(b)).await?);
                }
                MixerWeights::Parallel(parts)
            }
        })
    }

    /// A token-shift mix `mu` as the kernel-2 conv `[mu, 1 - mu]` per channel.
    async fn shift(&mut self, name: &str) -> Result<wgpu::Buffer> {
        let mu = self.f32(name).await?;
        let conv: Vec<f32> = mu.iter().flat_map(|&m| [m, 1.0 - m]).collect();
        Ok(self.gpu.upload_f32(name, &conv))
    }

    async fn lora(&mut self, l: &LoraSpec) -> Result<LoraWeights> {
        Ok(LoraWeights { down: self.linear(&l.down).await?, act: l.act, up: self.linear(&l.up).await? })
    }

    async fn rwkv7(&mut self, r: &Rwkv7Spec) -> Result<MixerWeights> {
        let mut shift = Vec::with_capacity(r.shift.len());
        for mu in &r.shift {
            shift.push(self.shift(mu).await?);
        }
        let g_bias = match &r.g_norm.bias {
            Some(b) => self.vector(b).await?,
            None => self.gpu.zeros("group norm bias", r.g_norm.dim),
        };
        let v_lora = match &r.v_lora {
            Some(l) => Some(self.lora(l).await?),
            None => None,
        };
        Ok(MixerWeights::Rwkv7(Box::new(Rwkv7Weights {
            shift,
            r: self.linear(&r.r_proj).await?,
            k: self.linear(&r.k_proj).await?,
            v: self.linear(&r.v_proj).await?,
            o: self.linear(&r.o_proj).await?,
            loras: [self.lora(&r.w_lora).await?, self.lora(&r.a_lora).await?, self.lora(&r.g_lora).await?],
            v_lora,
            k_k: self.vector(&r.k_k).await?,
            k_a: self.vector(&r.k_a).await?,
            r_k: self.vector(&r.r_k).await?,
            g_norm: [self.vector(&r.g_norm.weight).await?, g_bias],
        })))
    }

    async fn short_conv(&mut self, c: &ShortConvSpec) -> Result<MixerWeights> {
        Ok(MixerWeights::ShortConv {
            b: self.linear(&c.in_proj[0]).await?,
            c: self.linear(&c.in_proj[1]).await?,
            x: self.linear(&c.in_proj[2]).await?,
            conv: self.concat_vector(&[&c.conv]).await?,
            out: self.linear(&c.out_proj).await?,
        })
    }

    async fn hgrn2(&mut self, g: &Hgrn2Spec) -> Result<MixerWeights> {
        let lower_bound = match &g.lower_bound {
            Some((name, layer, layers)) => {
                let table = self.f32(name).await?;
                (*layer > 0).then(|| self.gpu.upload_f32(name, &hgrn2::lower_bound(&table, *layers, *layer)))
            }
            None => None,
        };
        Ok(MixerWeights::Hgrn2 {
            q: self.linear(&g.q_proj).await?,
            f: self.linear(&g.f_proj).await?,
            i: self.linear(&g.i_proj).await?,
            norm: self.norm(&g.norm).await?,
            out: self.linear(&g.out_proj).await?,
            lower_bound,
        })
    }

    /// One layer's norms, mixer and MLP.
    async fn layer(&mut self, layer: &LayerSpec) -> Result<LayerWeights> {
        let pre_mixer = self.opt_norm(&layer.norms.pre_mixer).await?;
        let mixer = self.mixer(&layer.mixer).await?;
        let post_mixer = self.opt_norm(&layer.norms.post_mixer).await?;
        let pre_mlp = self.opt_norm(&layer.norms.pre_mlp).await?;
        let mlp = match &layer.mlp {
            MlpSpec::Gated(g) => MlpWeights::Gated(self.gated_mlp(g).await?),
            MlpSpec::Moe(m) => self.moe(m).await?,
            MlpSpec::ChannelMix(c) => MlpWeights::ChannelMix(ChannelMixWeights {
                shift: self.shift(&c.shift).await?,
                key: self.linear(&c.key).await?,
                value: self.linear(&c.value).await?,
            }),
        };
        let post_mlp = self.opt_norm(&layer.norms.post_mlp).await?;
        Ok(LayerWeights { mixer, mlp, pre_mixer, post_mixer, pre_mlp, post_mlp })
    }
}

/// Brings each tensor within the source's reach just before it is read, and lets it go right after, so that a
/// remote model never sits in host memory whole: at most a tensor at a time is held for the upload. Sources that
/// read on demand (local files, the native HTTP cache) use [`OnDemand`]; the browser fetches by Range requests.
pub trait Prefetch {
    /// Makes tensor `name`'s bytes readable through the source.
    fn fetch(&mut self, name: &str) -> impl Future<Output = Result<()>>;
    /// Tensor `name` is on the GPU: its bytes may be dropped.
    fn release(&mut self, name: &str);
    /// Every tensor is uploaded: check what the origin published (digests) before the model is used.
    fn finish(&mut self) -> impl Future<Output = Result<()>>;
}

/// The [`Prefetch`] of sources that read each tensor when asked: nothing to fetch ahead.
pub struct OnDemand;

impl Prefetch for OnDemand {
    async fn fetch(&mut self, _name: &str) -> Result<()> {
        Ok(())
    }

    fn release(&mut self, _name: &str) {}

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Validates `source` against `spec` and uploads every tensor, each fetched through `prefetch` as it is read,
/// calling `on_progress` after each (and after each layer); then checks the source's digests (a corrupted download
/// fails the load).
pub async fn upload(
    gpu: &Gpu,
    spec: &ModelSpec,
    source: &dyn TensorSource,
    prefetch: &mut impl Prefetch,
    on_progress: &mut dyn FnMut(&LoadProgress),
) -> Result<ModelWeights> {
    check_against_spec(spec, source)?;
    let source = &Finite(source);
    let tensors = spec.tensors();
    let tensors_total = tensors.len();
    let mut bytes_total = 0;
    for d in &tensors {
        bytes_total += source.byte_len(&d.name)? as u64;
    }
    let mut up = Uploader {
        gpu,
        source,
        prefetch,
        progress: LoadProgress { tensors_total, bytes_total, layers_total: spec.layers.len(), ..Default::default() },
        counted: Default::default(),
        lora_a: Default::default(),
        on_progress,
    };
    let embed = up.matrix(&spec.embed, spec.vocab, spec.hidden).await?;
    let embed_norm = up.opt_norm(&spec.embed_norm).await?;
    let mut layers = Vec::with_capacity(spec.layers.len());
    for layer in &spec.layers {
        layers.push(up.layer(layer).await?);
        up.progress.layers_ready = layers.len();
        (up.on_progress)(&up.progress);
    }
    let final_norm = up.norm(&spec.final_norm).await?;
    let head = match spec.tied_embeddings {
        true => None,
        false => Some(up.matrix(&spec.lm_head, spec.vocab, spec.hidden).await?),
    };
    source.verify()?;
    up.prefetch.finish().await?;
    Ok(ModelWeights { embed, embed_norm, head, final_norm, layers })
}
