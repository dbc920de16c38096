//! The architecture-neutral model description.
//!
//! A [`ModelSpec`] is what every other part of Ternlight reads: the per-layer schedule of mixers and MLPs, the
//! norms, RoPE, and the names and shapes of every weight tensor. It is built from a Hugging Face `config.json`
//! by [`ModelSpec::from_config_json`]; model families differ only in the data [`config`] fills in.

pub mod config;
pub mod fla;
mod mask;
mod policy;
mod rope;
mod rwkv7;

pub use mask::{AttentionMask, BlockSparse, Future};
pub use policy::{AttentionPolicy, LayerPolicy};
pub use rope::{RopeScaling, RopeSpec};
pub use rwkv7::{ChannelMixSpec, LoraSpec, Rwkv7Spec};

use crate::dtype::DType;

/// A weight tensor the model needs: its checkpoint name, the shape the config implies, and whether it holds packed
/// integer codes (BitNet's ternary weights) rather than floats.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    /// Name in the checkpoint.
    pub name: String,
    /// Expected shape.
    pub shape: Vec<usize>,
    /// Packed `u8` codes instead of a float dtype.
    pub packed: bool,
}

impl TensorDecl {
    fn float(name: String, shape: Vec<usize>) -> Self {
        TensorDecl { name, shape, packed: false }
    }
}

/// How a ternary (BitNet b1.58) linear layer stores its weight; the layer computes
/// `y = act_quant(x) T^T * multiplier` with `T` in {-1, 0, 1} and activations fake-quantised per token to int8
/// (`round(x * s) / s`, `s = 127 / max|x|`). A layer that is some rows of a fused stored tensor (a gated `q_proj`)
/// takes its rows of the stored tensor's codes, under the stored tensor's one multiplier.
#[derive(Clone, Debug, PartialEq)]
pub enum Ternary {
    /// transformers `bitlinear`: `u8 [out / 4, in]`, byte row r holding output rows r, r + R, r + 2R, r + 3R
    /// (`R = out / 4`) in bit pairs 0-1 .. 6-7 as `code = t + 1`; the multiplier is `1 / weight_scale`.
    PackedRows {
        /// The `weight_scale` tensor (`[1]`).
        weight_scale: String,
    },
    /// transformers `autobitlinear` online and fla's `BitLinear`: float master weights ternarised at load by absmean,
    /// `T = clamp(round(W / mean|W|), -1, 1)`, multiplier `mean|W|`; fla's layers RMSNorm their input first.
    Absmean {
        /// The layer's own input norm (fla `BitLinear.norm`).
        input_norm: Option<NormSpec>,
    },
}

/// Which rows of a stored matrix form a linear layer, when a checkpoint fuses several projections into one tensor:
/// `groups` runs of `out_features / groups` rows, run `g` starting at stored row `g * group_rows + offset`.
/// Covers projections fused side by side (`groups` 1) and interleaved per head (Qwen3-Next's `in_proj_qkvz`,
/// a gated `q_proj`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowSelect {
    /// Runs of rows.
    pub groups: usize,
    /// Stored rows per group.
    pub group_rows: usize,
    /// First selected row within each group.
    pub offset: usize,
}

/// A dense linear layer `y = x W^T (+ b)` with `W` stored `[out, in]` as in PyTorch.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearSpec {
    /// Weight tensor name.
    pub weight: String,
    /// Bias tensor name, when the layer has one.
    pub bias: Option<String>,
    /// Output features.
    pub out_features: usize,
    /// Input features.
    pub in_features: usize,
    /// The rows of a fused stored tensor this layer uses; `None` when the layer is the whole tensor.
    pub rows: Option<RowSelect>,
    /// Multiplier of `x W^T` (before the bias): muP input and output multipliers (Falcon-H1), 1 elsewhere.
    pub scale: f32,
    /// Ternary weights with int8 activations (BitNet), when the layer is ternary.
    pub ternary: Option<Ternary>,
    /// A Hybrid Gated Flow correction beside the ternary product, when the checkpoint has one.
    pub hgf: Option<Hgf>,
}

/// Hybrid Gated Flow: a ternary layer plus a low-rank full-precision correction of the same (unquantised) input,
/// `y = ternary(x) + g ⊙ B (A x)`. Ternlight's checkpoint convention puts `lora_A` `[rank, in]`, `lora_B`
/// `[out, rank]` and `hgf_gate` (`[1]` for a scalar gate, `[out]` per channel) next to the layer's `weight`; for a
/// layer that is some rows of a fused stored tensor, `out` is the stored tensor's rows and the layer uses its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Hgf {
    /// `A` `[rank, in]`.
    pub lora_a: String,
    /// `B` `[out, rank]`.
    pub lora_b: String,
    /// The gate `g`.
    pub gate: String,
    /// Rank of the correction.
    pub rank: usize,
    /// A gate per output channel rather than one scalar.
    pub per_channel: bool,
}

impl LinearSpec {
    /// A dense layer `{prefix}.weight` `[out, in]`, with `{prefix}.bias` when `bias`.
    pub fn new(prefix: &str, out_features: usize, in_features: usize, bias: bool) -> Self {
        LinearSpec {
            weight: format!("{prefix}.weight"),
            bias: bias.then(|| format!("{prefix}.bias")),
            out_features,
            in_features,
            rows: None,
            scale: 1.0,
            ternary: None,
            hgf: None,
        }
    }

    /// This layer with its product multiplied by `factor`.
    pub(crate) fn scaled(self, factor: f32) -> Self {
        LinearSpec { scale: self.scale * factor, ..self }
    }

    /// The rows `offset..offset + out / groups` of each of `groups` groups of `group_rows` stored rows.
    pub(crate) fn part(
        prefix: &str,
        in_features: usize,
        bias: bool,
        (groups, group_rows): (usize, usize),
        offset: usize,
        out_features: usize,
    ) -> Self {
        LinearSpec {
            rows: Some(RowSelect { groups, group_rows, offset }),
            ..LinearSpec::new(prefix, out_features, in_features, bias)
        }
    }

    /// Rows of the stored tensor.
    pub fn stored_rows(&self) -> usize {
        self.rows.as_ref().map_or(self.out_features, |r| r.groups * r.group_rows)
    }

    /// Indices of the stored rows this layer uses, in output order (`0..out` when it is the whole tensor).
    pub fn row_indices(&self) -> Vec<usize> {
        match &self.rows {
            None => (0..self.out_features).collect(),
            Some(r) => {
                let take = self.out_features / r.groups;
                (0..r.groups).flat_map(|g| (0..take).map(move |i| g * r.group_rows + r.offset + i)).collect()
            }
        }
    }

    pub(crate) fn decls(&self, out: &mut Vec<TensorDecl>) {
        let rows = self.stored_rows();
        if let Some(h) = &self.hgf {
            out.push(TensorDecl::float(h.lora_a.clone(), vec![h.rank, self.in_features]));
            out.push(TensorDecl::float(h.lora_b.clone(), vec![rows, h.rank]));
            out.push(TensorDecl::float(h.gate.clone(), vec![if h.per_channel { rows } else { 1 }]));
        }
        match &self.ternary {
            Some(Ternary::PackedRows { weight_scale }) => {
                out.push(TensorDecl {
                    name: self.weight.clone(),
                    shape: vec![rows / 4, self.in_features],
                    packed: true,
                });
                out.push(TensorDecl::float(weight_scale.clone(), vec![1]));
            }
            Some(Ternary::Absmean { input_norm: Some(n) }) => {
                out.push(TensorDecl::float(self.weight.clone(), vec![rows, self.in_features]));
                out.push(TensorDecl::float(n.weight.clone(), vec![n.dim]));
            }
            _ => out.push(TensorDecl::float(self.weight.clone(), vec![rows, self.in_features])),
        }
        if let Some(b) = &self.bias {
            out.push(TensorDecl::float(b.clone(), vec![rows]));
        }
    }
}

/// An RMSNorm: `x / sqrt(mean(x^2) + eps) * w`, or `* (1 + w)` when `unit_offset` (Gemma, Qwen3-Next); a
/// LayerNorm `(x - mean) / sqrt(var + eps) * w + b` when `centered` (RWKV).
#[derive(Clone, Debug, PartialEq)]
pub struct NormSpec {
    /// Weight tensor name.
    pub weight: String,
    /// Number of features normalised together.
    pub dim: usize,
    /// Epsilon inside the square root.
    pub eps: f32,
    /// Whether the stored weight is an offset from one.
    pub unit_offset: bool,
    /// Whether the mean is subtracted first (LayerNorm).
    pub centered: bool,
    /// Bias tensor `[dim]` added after the weight, when the norm has one.
    pub bias: Option<String>,
}

impl NormSpec {
    fn decls(&self, out: &mut Vec<TensorDecl>) {
        out.push(TensorDecl::float(self.weight.clone(), vec![self.dim]));
        if let Some(b) = &self.bias {
            out.push(TensorDecl::float(b.clone(), vec![self.dim]));
        }
    }
}

/// Softmax attention with grouped-query heads.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Per-head dimension of q, k and v.
    pub head_dim: usize,
    /// Query projection.
    pub q_proj: LinearSpec,
    /// Sigmoid output-gate projection (Qwen3-Next/3.5, whose `q_proj` holds `[q | gate]` per head): the attention
    /// output is multiplied by `sigmoid(gate)` before `o_proj`.
    pub gate_proj: Option<LinearSpec>,
    /// Key projection.
    pub k_proj: LinearSpec,
    /// Value projection.
    pub v_proj: LinearSpec,
    /// Output projection.
    pub o_proj: LinearSpec,
    /// RMSNorm of q and k before RoPE: per head (Qwen3, Gemma 3), or over all heads when its dim is the whole
    /// projection width (OLMo).
    pub qk_norm: Option<(NormSpec, NormSpec)>,
    /// Rotary embedding; `None` means no positional rotation.
    pub rope: Option<RopeSpec>,
    /// The keys each query sees (causal by default; a sliding window, sinks, or what a runtime policy sets).
    pub mask: AttentionMask,
    /// Multiplier of q·k before the softmax.
    pub scale: f32,
    /// RMSNorm of the attention output before `o_proj`: over the whole width (BitNet's `attn_sub_norm`) or per
    /// head (differential attention's `subln`).
    pub sub_norm: Option<NormSpec>,
    /// Differential attention: two softmax maps per head, subtracted.
    pub differential: Option<DifferentialSpec>,
    /// Mixture-of-Head attention: per-token weights on the heads' outputs.
    pub head_routing: Option<MohSpec>,
}

impl AttentionSpec {
    /// Floats of the absorbing memory a hybrid window keeps (see [`AttentionMask::absorb`]): per kv head, Taylor
    /// features of the keys times `[v, 1]`; 0 without one.
    pub fn memory_len(&self) -> usize {
        match self.mask.absorbs() {
            true => self.n_kv_heads * FeatureMap::Taylor.features(self.head_dim) * (self.head_dim + 1),
            false => 0,
        }
    }
}

/// Mixture-of-Head attention (Jin et al., MoH; see `reference::moh`): the first `shared` heads are always on,
/// the top `top_k` of the others are picked per token from a router, and each head's output is weighted before
/// `o_proj`.
#[derive(Clone, Debug, PartialEq)]
pub struct MohSpec {
    /// Heads always on.
    pub shared: usize,
    /// Routed heads kept per token.
    pub top_k: usize,
    /// Router projections, outputs side by side: routed heads (`wg`), shared heads when more than one (`wg_1`),
    /// the two head types (`wg_0`).
    pub routers: Vec<LinearSpec>,
}

impl MohSpec {
    /// Router logits per token: the routers' outputs side by side.
    pub fn logit_width(&self) -> usize {
        self.routers.iter().map(|r| r.out_features).sum()
    }
}

/// Differential attention (Ye et al., "Differential Transformer", 2024): each head's q and k rows hold two halves
/// `[q1 | q2]`, `[k1 | k2]` of `head_dim / 2` channels (RoPE on each half) and its value row `head_dim` channels;
/// `o = (softmax(q1 k1^T s) - λ softmax(q2 k2^T s)) v` with `s = (head_dim / 2)^-1/2`, then `sub_norm` per head and
/// a factor `1 - λ_init`, where `λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init`.
#[derive(Clone, Debug, PartialEq)]
pub struct DifferentialSpec {
    /// The re-parameterisation vectors `[λq1, λk1, λq2, λk2]`, `head_dim / 2` each.
    pub lambda: [String; 4],
    /// λ_init (`0.8 - 0.6 exp(-0.3 layer)` in the paper).
    pub lambda_init: f32,
}

impl DifferentialSpec {
    /// λ from the layer's `[λq1, λk1, λq2, λk2]` values.
    pub fn lambda(&self, [q1, k1, q2, k2]: [&[f32]; 4]) -> f32 {
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        dot(q1, k1).exp() - dot(q2, k2).exp() + self.lambda_init
    }
}

/// The delta-rule family: Gated DeltaNet (Qwen3.5, fla `GatedDeltaNet`) and plain DeltaNet (fla `DeltaNet`,
/// no decay). Short causal conv + SiLU on q/k/v, L2-normed q and k, `beta = sigmoid(b)`, with decay
/// `g = -exp(A_log) * softplus(a + dt_bias)` (or none), the delta rule over a `[n_v_heads, head_k_dim, head_v_dim]`
/// state, then a per-head RMSNorm, gated by `silu(z)` when there is an output gate.
#[derive(Clone, Debug, PartialEq)]
pub struct GatedDeltaNetSpec {
    /// Query/key heads.
    pub n_k_heads: usize,
    /// Value heads (a multiple of `n_k_heads`; value head h reads key head `h / (n_v_heads / n_k_heads)`).
    pub n_v_heads: usize,
    /// Channels per query/key head.
    pub head_k_dim: usize,
    /// Channels per value head.
    pub head_v_dim: usize,
    /// Projections whose outputs, concatenated, are `[q | k | v]` (one fused matrix or three).
    pub in_proj: Vec<LinearSpec>,
    /// Depthwise conv weights `[channels, 1, kernel]`: one over all of `[q | k | v]`, or one per projection.
    pub conv: Vec<String>,
    /// Conv kernel width.
    pub conv_kernel: usize,
    /// The output norm's gate, when it is gated.
    pub output_gate: Option<OutputGate>,
    /// The decay parametrisation (Gated DeltaNet); `None` for plain DeltaNet.
    pub decay: Option<DecaySpec>,
    /// Update-strength projection (`b`, width `n_v_heads`).
    pub b_proj: LinearSpec,
    /// Multiplier of `beta = sigmoid(b)`: 2 where negative eigenvalues are allowed (`allow_neg_eigval`), else 1.
    pub beta_scale: f32,
    /// The per-head output norm (dim `head_v_dim`).
    pub norm: NormSpec,
    /// Output projection.
    pub out_proj: LinearSpec,
}

/// Gated Linear Attention (fla `GatedLinearAttention`): `S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T`,
/// `o_t = S_t^T q_t dk^-0.5`, with the per-channel log decay `gk = logsigmoid(up(down(x))) / normalizer`, then a
/// per-head RMSNorm gated by `silu(g)`.
#[derive(Clone, Debug, PartialEq)]
pub struct GlaSpec {
    /// Heads.
    pub n_heads: usize,
    /// Channels per key head.
    pub head_k_dim: usize,
    /// Channels per value head.
    pub head_v_dim: usize,
    /// Query, key and value projections, in that order (`[q | k | v]` side by side).
    pub qkv: Vec<LinearSpec>,
    /// Low-rank decay projection: down (no bias) then up (with bias) to `n_heads * head_k_dim`.
    pub gk_down: LinearSpec,
    /// The up half of the decay projection.
    pub gk_up: LinearSpec,
    /// Divisor of the log-sigmoid decay.
    pub gate_normalizer: f32,
    /// Output-gate projection, when the output norm is gated.
    pub g_proj: Option<LinearSpec>,
    /// The per-head output norm.
    pub norm: NormSpec,
    /// Output projection.
    pub out_proj: LinearSpec,
}

impl GlaSpec {
    /// Width of the concatenated `[q | k | v]` projection.
    pub fn qkv_width(&self) -> usize {
        self.n_heads * (2 * self.head_k_dim + self.head_v_dim)
    }
}

/// HGRN2 (fla `HGRN2Attention`): GLA with `q = silu(q)`, log forget gate `g = logsigmoid(f)` raised to the layer's
/// lower bound `lb` as `log(lb + (1 - lb) exp(g))`, key `1 - exp(g)`, value `i`, then an RMSNorm over the whole
/// output before `o_proj`.
#[derive(Clone, Debug, PartialEq)]
pub struct Hgrn2Spec {
    /// Heads (`hidden / expand_ratio`).
    pub n_heads: usize,
    /// Forget/key channels per head (`expand_ratio`).
    pub head_f_dim: usize,
    /// Value channels per head.
    pub head_i_dim: usize,
    /// Query projection.
    pub q_proj: LinearSpec,
    /// Forget-gate projection.
    pub f_proj: LinearSpec,
    /// Input (value) projection.
    pub i_proj: LinearSpec,
    /// RMSNorm over the whole output.
    pub norm: NormSpec,
    /// Output projection.
    pub out_proj: LinearSpec,
    /// The model's `lower_bounds` `[layers, forget width]` and this layer's index, when lower bounds are used.
    pub lower_bound: Option<(String, usize, usize)>,
}

/// Linear attention with a feature map φ on each head's q and k: `S += φ(k) v^T`, `o = S^T φ(q) scale`, optionally
/// normalised by `φ(q)·Σφ(k)` (Based, Hedgehog), then an optional per-head RMSNorm and `o_proj`. fla's
/// `LinearAttention` (Hadamard map, RMSNorm, no normaliser) and Based's Taylor layer are both this mixer.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearAttnSpec {
    /// Heads.
    pub n_heads: usize,
    /// Channels per q/k head, the feature map's input.
    pub head_k_dim: usize,
    /// Channels per value head.
    pub head_v_dim: usize,
    /// Query, key and value projections.
    pub qkv: Vec<LinearSpec>,
    /// The feature map of q and k.
    pub feature: FeatureMap,
    /// Divide by `φ(q)·Σφ(k) + 1e-12` (the normalised form of Based and Hedgehog).
    pub normalize: bool,
    /// Multiplier of `φ(q)` (`dk^-0.5` in fla's layer; irrelevant when normalised).
    pub scale: f32,
    /// Per-head output norm.
    pub norm: Option<NormSpec>,
    /// Output projection.
    pub out_proj: LinearSpec,
}

impl LinearAttnSpec {
    /// Features per head after the map (the recurrence's key width).
    pub fn features(&self) -> usize {
        self.feature.features(self.head_k_dim)
    }

    /// Value channels the recurrence carries per head: the values, plus the normaliser's column of ones.
    pub fn carried_values(&self) -> usize {
        self.head_v_dim + usize::from(self.normalize)
    }
}

/// A feature map of linear attention, applied per head to q and k.
#[derive(Clone, Debug, PartialEq)]
pub enum FeatureMap {
    /// fla's `elementwise_product`: `(W1 x + b1) ⊙ (W2 x + b2)`, `[d, d]` layers with bias: q's W1, W2, k's W1, W2.
    Hadamard(Box<[LinearSpec; 4]>),
    /// Based's second-order Taylor map, `φ(q)·φ(k) = 1 + s + s²/2` with `s = q·k/√d`: features
    /// `[1, x/d^¼, x_i²/(√2 √d), x_i x_j/√d (i<j)]`, `1 + d + d(d+1)/2` of them.
    Taylor,
    /// Hedgehog: `softmax([2(W x + b), -2(W x + b)])` over `2d` features, a `[d, d]` layer with bias for q, then k.
    Hedgehog(Box<[LinearSpec; 2]>),
}

impl FeatureMap {
    /// Features out of a head of `d` channels.
    pub fn features(&self, d: usize) -> usize {
        match self {
            FeatureMap::Hadamard(_) => d,
            FeatureMap::Taylor => 1 + d + d * (d + 1) / 2,
            FeatureMap::Hedgehog(_) => 2 * d,
        }
    }

    /// The map's learned layers, q's before k's (none for Taylor).
    pub fn layers(&self) -> Vec<&LinearSpec> {
        match self {
            FeatureMap::Hadamard(layers) => layers.iter().collect(),
            FeatureMap::Taylor => vec![],
            FeatureMap::Hedgehog(layers) => layers.iter().collect(),
        }
    }
}

/// RAT (Wei et al. 2025, CLAIRE-Labo/RAT): `[z, x, g, q, k] = in_proj(h)`; within each chunk of `chunk` tokens a gated
/// recurrence `x̃_l = σ(g_l + b) x̃_{l-1} + (1 - σ(g_l + b)) x_l` (the same for `k̃`, reset at chunk starts); each token
/// attends, by softmax, to the last `k̃, x̃` of every earlier chunk and to its own, with RoPE at chunk positions
/// (InterRoPE); `o_proj(σ(z) ⊙ o)`. q and k have `groups` heads, repeated over the `hidden / head_dim` heads.
#[derive(Clone, Debug, PartialEq)]
pub struct RatSpec {
    /// Model width, also the value width.
    pub hidden: usize,
    /// Heads.
    pub n_heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Distinct q/k heads (head `h` uses group `h % groups`).
    pub groups: usize,
    /// Tokens per chunk.
    pub chunk: usize,
    /// The fused input projection `[3 hidden + 2 groups head_dim, hidden]`: z, x, g, q, k.
    pub in_proj: LinearSpec,
    /// Gate bias `[hidden]`.
    pub gate_bias: String,
    /// Rotary embedding, applied at chunk positions.
    pub rope: RopeSpec,
    /// Output projection.
    pub out_proj: LinearSpec,
}

impl RatSpec {
    /// Width of the input projection's output.
    pub fn in_width(&self) -> usize {
        3 * self.hidden + 2 * self.groups * self.head_dim
    }

    /// Floats of state at `positions`: the running `k̃, x̃` plus one pair per completed chunk.
    pub fn state_len(&self, positions: usize) -> usize {
        2 * self.hidden * (1 + positions / self.chunk)
    }
}

/// LFM2's gated short convolution: `B, C, x = in_proj(h)`, `y = C ⊙ conv(B ⊙ x)` (depthwise causal, no
/// activation), `out_proj(y)`. Its state is the conv history `[channels, kernel - 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShortConvSpec {
    /// Channels (the hidden size).
    pub channels: usize,
    /// Conv kernel width.
    pub kernel: usize,
    /// The B, C and x parts of the fused `in_proj`.
    pub in_proj: [LinearSpec; 3],
    /// Depthwise conv weight `[channels, 1, kernel]`.
    pub conv: String,
    /// Output projection.
    pub out_proj: LinearSpec,
}

/// Gated Slot Attention (fla `GatedSlotAttention`): `q, k` through SiLU (swish feature map), `v = silu(v)`, slot gates
/// `g = logsigmoid(f_proj(x)) / normalizer` over `slots` memory slots per head; two gated linear-attention passes (see
/// `reference::gsa`), then an RMSNorm of `silu(o)` over all heads and `o_proj`.
#[derive(Clone, Debug, PartialEq)]
pub struct GsaSpec {
    /// Heads.
    pub n_heads: usize,
    /// Key channels per head.
    pub head_k_dim: usize,
    /// Value channels per head.
    pub head_v_dim: usize,
    /// Memory slots per head.
    pub slots: usize,
    /// Query, key and value projections.
    pub qkv: [LinearSpec; 3],
    /// Slot-gate projection `[heads * slots, hidden]`.
    pub f_proj: LinearSpec,
    /// Divisor of the log-sigmoid gate.
    pub gate_normalizer: f32,
    /// Multiplier of q in the first pass.
    pub scale: f32,
    /// Norm over all heads of `silu(o)`.
    pub norm: NormSpec,
    /// Output projection.
    pub out_proj: LinearSpec,
}

/// Lightning attention (MiniMax): `q, k, v = silu(qkv_proj(x))` split per head, the recurrence
/// `S_t = exp(-slope_h) S_{t-1} + k_t v_t^T`, `o_t = S_t^T q_t` (no scaling, no RoPE), an RMSNorm over all heads,
/// times `sigmoid(output_gate(x))`, then `out_proj`.
#[derive(Clone, Debug, PartialEq)]
pub struct LightningSpec {
    /// Heads.
    pub n_heads: usize,
    /// Channels per head (keys and values alike).
    pub head_dim: usize,
    /// The q, k and v parts of the fused `qkv_proj` (interleaved per head).
    pub qkv: [LinearSpec; 3],
    /// Per-head decay rate `slope_h` (from the head and layer index, as MiniMax defines it).
    pub slopes: Vec<f32>,
    /// Output-gate projection.
    pub output_gate: LinearSpec,
    /// RMSNorm over the concatenated heads.
    pub norm: NormSpec,
    /// Output projection.
    pub out_proj: LinearSpec,
}

/// Multi-head latent attention (DeepSeek-V2/V3, Kimi Linear's full-attention layers), without RoPE (Kimi's NoPE):
/// `q = q_proj(x)` per head `[nope | rope]`, a shared latent `c = norm(kv_a(x)[..rank])` and key tail
/// `k_rope = kv_a(x)[rank..]`, per-head `[k_nope | v] = kv_b(c)`, softmax attention over `[k_nope | k_rope]` with
/// values `v`, then `o_proj`. Only the latent and the key tail are cached.
#[derive(Clone, Debug, PartialEq)]
pub struct MlaSpec {
    /// Heads.
    pub n_heads: usize,
    /// Query/key channels per head without position information.
    pub nope_dim: usize,
    /// Query/key channels per head that would carry RoPE (shared across heads for keys).
    pub rope_dim: usize,
    /// Value channels per head.
    pub v_dim: usize,
    /// Latent (compressed KV) width.
    pub kv_rank: usize,
    /// Query projection `[n_heads * (nope + rope), hidden]`.
    pub q_proj: LinearSpec,
    /// `[latent | key tail]` projection `[rank + rope, hidden]`.
    pub kv_a_proj: LinearSpec,
    /// Norm of the latent.
    pub kv_norm: NormSpec,
    /// Per-head `[k_nope | v]` from the latent, `[n_heads * (nope + v), rank]`.
    pub kv_b_proj: LinearSpec,
    /// Output projection.
    pub o_proj: LinearSpec,
    /// Multiplier of q·k (`(nope + rope)^-0.5`).
    pub scale: f32,
}

/// Mamba2 (Falcon-H1): `in_proj` gives `z`, `x`, `B`, `C` (per group) and `dt` (per head); `x|B|C` pass a causal
/// conv (with bias) and SiLU; per head `S = exp(dt A) S + dt x B^T`, `y = S C + D x` with `dt = softplus(dt + dt_bias)`
/// clamped to `dt_limit` and `A = -exp(A_log)`; then `y * silu(z)` (or a gated group RMSNorm), and `out_proj`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mamba2Spec {
    /// SSM heads.
    pub n_heads: usize,
    /// Channels per head (`P`).
    pub head_dim: usize,
    /// Groups sharing `B` and `C`.
    pub n_groups: usize,
    /// State size per group (`N`).
    pub state_dim: usize,
    /// The `z` gate part of `in_proj`.
    pub z: LinearSpec,
    /// The `x`, `B` and `C` parts of `in_proj`, side by side in the conv's channel order.
    pub xbc: [LinearSpec; 3],
    /// The `dt` part of `in_proj`.
    pub dt: LinearSpec,
    /// Conv weight `[conv channels, 1, kernel]`.
    pub conv: String,
    /// Conv bias `[conv channels]`, when the conv has one.
    pub conv_bias: Option<String>,
    /// Conv kernel width.
    pub conv_kernel: usize,
    /// `A_log` `[n_heads]`.
    pub a_log: String,
    /// `dt_bias` `[n_heads]`.
    pub dt_bias: String,
    /// `D` `[n_heads]`.
    pub d: String,
    /// The gated RMSNorm over groups of the output (`mamba_rms_norm`), when used.
    pub norm: Option<NormSpec>,
    /// Bounds of `dt`.
    pub dt_limit: (f32, f32),
    /// Output projection.
    pub out_proj: LinearSpec,
}

impl Mamba2Spec {
    /// Channels of `x` (the inner width).
    pub fn inner(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Channels through the conv: `x`, `B` and `C`.
    pub fn conv_channels(&self) -> usize {
        self.inner() + 2 * self.n_groups * self.state_dim
    }

    /// f32 values of fixed per-sequence state: `[heads, N, P]` plus the conv history.
    pub fn state_len(&self) -> usize {
        self.n_heads * self.state_dim * self.head_dim + self.conv_channels() * (self.conv_kernel - 1)
    }
}

/// The gate of a linear-attention output norm: `norm(o) * act(proj(down(x)))`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputGate {
    /// The down half of a low-rank gate projection, when there is one (Kimi Delta Attention).
    pub down: Option<LinearSpec>,
    /// The projection to the value width.
    pub proj: LinearSpec,
    /// SiLU (Gated DeltaNet) or sigmoid (Kimi Delta Attention).
    pub act: Activation,
}

/// Tensors of the Mamba2-style decay `g = -exp(A_log) * softplus(a + dt_bias)`: one per value head (Gated
/// DeltaNet), or one per key channel (Kimi Delta Attention, whose `a` comes from a low-rank projection and whose
/// `dt_bias` has a value per channel).
#[derive(Clone, Debug, PartialEq)]
pub struct DecaySpec {
    /// Decay input projection (`a`, width `n_v_heads`, or `n_v_heads * head_k_dim` per channel).
    pub a_proj: LinearSpec,
    /// The down half of a low-rank decay projection, applied before `a_proj`.
    pub a_down: Option<LinearSpec>,
    /// Decay per key channel.
    pub per_channel: bool,
    /// `A_log` `[n_v_heads]`.
    pub a_log: String,
    /// `dt_bias` `[n_v_heads]`.
    pub dt_bias: String,
}

impl GatedDeltaNetSpec {
    /// Width of the concatenated `[q | k | v]` projection.
    pub fn qkv_width(&self) -> usize {
        2 * self.n_k_heads * self.head_k_dim + self.n_v_heads * self.head_v_dim
    }

    /// Floats per token of the gate inputs `[b | a]`: `a` per value head, or per key channel of each.
    pub fn gate_width(&self) -> usize {
        let per_channel = self.decay.as_ref().is_some_and(|d| d.per_channel);
        self.n_v_heads * if per_channel { 1 + self.head_k_dim } else { 2 }
    }

    /// Channels of each conv tensor: the whole `[q | k | v]` width for one conv, else each projection's width.
    pub fn conv_channels(&self) -> Vec<usize> {
        if self.conv.len() == 1 {
            vec![self.qkv_width()]
        } else {
            self.in_proj.iter().map(|l| l.out_features).collect()
        }
    }

    /// f32 values of fixed per-sequence state: the recurrent state plus the conv history.
    pub fn state_len(&self) -> usize {
        self.n_v_heads * self.head_k_dim * self.head_v_dim + self.qkv_width() * (self.conv_kernel - 1)
    }
}

/// The token mixer of one layer. One variant per mixer family; later families add variants here.
#[derive(Clone, Debug, PartialEq)]
pub enum MixerSpec {
    /// Softmax attention (full or sliding window).
    Attention(AttentionSpec),
    /// Gated DeltaNet linear attention.
    GatedDeltaNet(GatedDeltaNetSpec),
    /// Gated Linear Attention.
    Gla(GlaSpec),
    /// HGRN2 (GLA with input-forget coupling and layer lower bounds).
    Hgrn2(Hgrn2Spec),
    /// Gated short convolution (LFM2).
    ShortConv(ShortConvSpec),
    /// Linear attention with a learned feature map.
    LinearAttn(LinearAttnSpec),
    /// MiniMax Lightning attention.
    Lightning(LightningSpec),
    /// Multi-head latent attention.
    Mla(MlaSpec),
    /// Mamba2's state-space mixer.
    Mamba2(Mamba2Spec),
    /// Gated Slot Attention.
    Gsa(GsaSpec),
    /// RWKV-7's time mixer (boxed: it holds many projections).
    Rwkv7(Box<Rwkv7Spec>),
    /// RAT: chunked gated recurrence with softmax attention over chunk summaries.
    Rat(RatSpec),
    /// Mixers run side by side on the same normed input, their outputs summed into the residual (Falcon-H1's
    /// attention beside Mamba2).
    Parallel(Vec<MixerSpec>),
}

impl ModelSpec {
    /// Whether the context may grow past the trained positions with bounded memory: every softmax-attention layer
    /// keeps a StreamingLLM ring (see [`AttentionPolicy`]) and none is MLA.
    pub fn streams(&self) -> bool {
        let parts: Vec<&MixerSpec> = self.layers.iter().flat_map(|l| l.mixer.parts()).collect();
        parts.iter().any(|m| matches!(m, MixerSpec::Attention(_)))
            && parts.iter().all(|m| match m {
                MixerSpec::Attention(a) => a.mask.repositions(),
                MixerSpec::Mla(_) | MixerSpec::Rat(_) => false,
                _ => true,
            })
    }

    /// Every softmax-attention mixer, in schedule order (branches of parallel mixers included).
    pub fn attention_layers(&self) -> impl Iterator<Item = &AttentionSpec> {
        self.layers.iter().flat_map(|l| l.mixer.parts()).filter_map(|m| match m {
            MixerSpec::Attention(a) => Some(a),
            _ => None,
        })
    }
}

impl MixerSpec {
    /// The mixers that hold state and run kernels: the branches of a parallel mixer, else this one.
    pub fn parts(&self) -> Vec<&MixerSpec> {
        match self {
            MixerSpec::Parallel(branches) => branches.iter().flat_map(MixerSpec::parts).collect(),
            other => vec![other],
        }
    }

    /// [`MixerSpec::parts`], mutable.
    pub fn parts_mut(&mut self) -> Vec<&mut MixerSpec> {
        match self {
            MixerSpec::Parallel(branches) => branches.iter_mut().flat_map(MixerSpec::parts_mut).collect(),
            other => vec![other],
        }
    }

    fn kv_bytes_per_token(&self, dtype: DType) -> usize {
        match self {
            MixerSpec::Attention(a) => 2 * a.n_kv_heads * a.head_dim * dtype.size(),
            MixerSpec::Mla(m) => (m.kv_rank + m.rope_dim) * dtype.size(),
            _ => 0,
        }
    }

    fn kv_bytes_at(&self, positions: usize, dtype: DType) -> usize {
        if let MixerSpec::Rat(r) = self {
            return 4 * (r.state_len(positions) - r.state_len(0));
        }
        let kept = match self {
            MixerSpec::Attention(a) => a.mask.kept(positions),
            MixerSpec::Mla(_) => positions,
            _ => 0,
        };
        self.kv_bytes_per_token(dtype) * kept
    }

    fn state_bytes(&self) -> usize {
        match self {
            MixerSpec::Attention(a) => 4 * a.memory_len(),
            MixerSpec::Mla(_) | MixerSpec::Parallel(_) => 0,
            MixerSpec::GatedDeltaNet(g) => 4 * g.state_len(),
            MixerSpec::Gla(g) => 4 * g.n_heads * g.head_k_dim * g.head_v_dim,
            MixerSpec::Hgrn2(g) => 4 * g.n_heads * g.head_f_dim * g.head_i_dim,
            MixerSpec::ShortConv(c) => 4 * c.channels * (c.kernel - 1),
            MixerSpec::LinearAttn(l) => 4 * l.n_heads * l.features() * l.carried_values(),
            MixerSpec::Lightning(l) => 4 * l.n_heads * l.head_dim * l.head_dim,
            MixerSpec::Mamba2(m) => 4 * m.state_len(),
            MixerSpec::Gsa(g) => 4 * g.n_heads * g.slots * (g.head_k_dim + g.head_v_dim),
            MixerSpec::Rwkv7(r) => 4 * (r.state_len() + r.r_proj.in_features),
            MixerSpec::Rat(r) => 4 * r.state_len(0),
        }
    }

    /// Short name for schedules and `inspect`.
    pub fn kind(&self) -> String {
        match self {
            MixerSpec::Attention(a) => match (&a.mask, a.mask.window) {
                _ if a.differential.is_some() => format!("differential_attention[{}]", a.mask.describe()),
                _ if a.head_routing.is_some() => format!("moh_attention[{}]", a.mask.describe()),
                (m, None) if *m == AttentionMask::default() => "full_attention".to_string(),
                (m, Some(w)) if *m == AttentionMask::causal(Some(w)) => format!("sliding_attention({w})"),
                (m, _) => format!("attention[{}]", m.describe()),
            },
            MixerSpec::GatedDeltaNet(g) if g.decay.as_ref().is_some_and(|d| d.per_channel) => "kda".to_string(),
            MixerSpec::GatedDeltaNet(g) if g.decay.is_some() => "gated_deltanet".to_string(),
            MixerSpec::GatedDeltaNet(_) => "deltanet".to_string(),
            MixerSpec::Gla(_) => "gla".to_string(),
            MixerSpec::Hgrn2(_) => "hgrn2".to_string(),
            MixerSpec::ShortConv(c) => format!("short_conv({})", c.kernel),
            MixerSpec::LinearAttn(l) => match l.feature {
                FeatureMap::Hadamard(_) => "linear_attention".to_string(),
                FeatureMap::Taylor => "based".to_string(),
                FeatureMap::Hedgehog(_) => "hedgehog".to_string(),
            },
            MixerSpec::Lightning(_) => "lightning".to_string(),
            MixerSpec::Mla(_) => "mla".to_string(),
            MixerSpec::Mamba2(_) => "mamba2".to_string(),
            MixerSpec::Gsa(_) => "gsa".to_string(),
            MixerSpec::Rwkv7(_) => "rwkv7".to_string(),
            MixerSpec::Rat(r) => format!("rat({})", r.chunk),
            MixerSpec::Parallel(branches) => {
                format!("parallel({})", branches.iter().map(MixerSpec::kind).collect::<Vec<_>>().join(" + "))
            }
        }
    }
}

/// Element-wise activation of a gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)`.
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
    /// The logistic function (output gates).
    Sigmoid,
    /// No activation: `gate * up` (gated convolutions).
    Identity,
    /// `relu(x)^2` (BitNet, RWKV's channel mixer).
    Relu2,
    /// `tanh(x)` (RWKV-7's decay LoRA).
    Tanh,
}

impl Activation {
    /// Parses an HF `hidden_act` / `hidden_activation` value.
    pub fn from_hf(name: &str) -> crate::Result<Self> {
        match name {
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new" => Ok(Activation::GeluTanh),
            "relu2" | "sqrelu" => Ok(Activation::Relu2),
            other => Err(crate::CoreError::Unsupported {
                what: "activation",
                name: other.to_string(),
                supported: "silu, gelu_pytorch_tanh, relu2".to_string(),
            }),
        }
    }
}

/// A gated MLP: `down(act(gate(x)) * up(x))`.
#[derive(Clone, Debug, PartialEq)]
pub struct GatedMlpSpec {
    /// Gate projection.
    pub gate: LinearSpec,
    /// Up projection.
    pub up: LinearSpec,
    /// Down projection.
    pub down: LinearSpec,
    /// Activation on the gate.
    pub act: Activation,
    /// RMSNorm of the activation before `down` (BitNet's `ffn_sub_norm`).
    pub sub_norm: Option<NormSpec>,
}

impl GatedMlpSpec {
    /// Width of the hidden activation.
    pub fn intermediate(&self) -> usize {
        self.gate.out_features
    }
}

/// How a router turns its logits into expert scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterScoring {
    /// Softmax over all experts (Qwen3-Next, Mixtral, MiniMax).
    Softmax,
    /// Independent sigmoids (DeepSeek-V3, Kimi).
    Sigmoid,
}

/// A mixture-of-experts MLP: a router scores the experts per token, the `top_k` best (by score plus the optional
/// selection bias) run, weighted by their scores (renormalised to sum to one when `normalize`, times `scale`);
/// shared experts always run, their output scaled by `sigmoid(shared_gate(x))` when there is a shared gate.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeSpec {
    /// Router projection to one logit per expert.
    pub router: LinearSpec,
    /// Score function.
    pub scoring: RouterScoring,
    /// Per-expert bias added to scores for selection only (DeepSeek-V3's `e_score_correction_bias`).
    pub selection_bias: Option<String>,
    /// Experts each token runs.
    pub top_k: usize,
    /// Whether the selected scores are divided by their sum.
    pub normalize: bool,
    /// Multiplier of the routed output.
    pub scale: f32,
    /// The routed experts, all the same shape.
    pub experts: Vec<GatedMlpSpec>,
    /// The shared expert, when the model has one.
    pub shared: Option<GatedMlpSpec>,
    /// Scalar sigmoid gate of the shared expert's output.
    pub shared_gate: Option<LinearSpec>,
}

impl MoeSpec {
    /// Width of one routed expert's hidden activation.
    pub fn expert_intermediate(&self) -> usize {
        self.experts[0].intermediate()
    }
}

/// The channel mixer of one layer (built once per load, so variant sizes do not matter).
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum MlpSpec {
    /// One gated MLP.
    Gated(GatedMlpSpec),
    /// A mixture of gated experts (boxed: it lists every expert).
    Moe(Box<MoeSpec>),
    /// RWKV's token-shifted `relu^2` channel mixer.
    ChannelMix(ChannelMixSpec),
}

impl MlpSpec {
    /// Widest activation a forward holds per token (all selected experts side by side for a MoE).
    pub fn activation_width(&self) -> usize {
        match self {
            MlpSpec::Gated(g) => g.intermediate(),
            MlpSpec::Moe(m) => {
                (m.top_k * m.expert_intermediate()).max(m.shared.as_ref().map_or(0, GatedMlpSpec::intermediate))
            }
            MlpSpec::ChannelMix(c) => c.key.out_features,
        }
    }
}

/// The norms around one block: pre-norms in most models, post-norms in sandwich-norm models (Gemma), post-norms
/// alone in OLMo's attention blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockNorms {
    /// Before the mixer.
    pub pre_mixer: Option<NormSpec>,
    /// On the mixer output, before the residual add.
    pub post_mixer: Option<NormSpec>,
    /// Before the MLP.
    pub pre_mlp: Option<NormSpec>,
    /// On the MLP output, before the residual add.
    pub post_mlp: Option<NormSpec>,
}

/// MiniMax's residual convention: each sub-block's output replaces the stream with
/// `alpha * pre_norm(x) + beta * block(pre_norm(x))`; `(alpha, beta)` for the mixer and for the MLP.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaledResiduals {
    /// Factors around the token mixer.
    pub mixer: (f32, f32),
    /// Factors around the MLP.
    pub mlp: (f32, f32),
}

/// One decoder layer: `x += post(mixer(pre(x)))`, then `x += post(mlp(pre(x)))` (or scaled residuals).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// The token mixer.
    pub mixer: MixerSpec,
    /// The channel mixer.
    pub mlp: MlpSpec,
    /// The norms.
    pub norms: BlockNorms,
    /// MiniMax's normed, scaled residuals instead of plain residual adds.
    pub residuals: Option<ScaledResiduals>,
}

impl LayerSpec {
    /// The widest Hybrid Gated Flow correction among this layer's projections (0 without one).
    pub fn hgf_rank(&self) -> usize {
        self.matrices().iter().filter_map(|l| l.hgf.as_ref()).map(|h| h.rank).max().unwrap_or(0)
    }

    /// The layer's weight-matrix projections, the ones BitNet quantisation makes ternary: softmax attention's q (and
    /// its output gate), k, v and o; Gated DeltaNet's input, output-gate and output projections; a gated MLP's gate,
    /// up and down. Per-head scalar projections (Gated DeltaNet's decay and beta) are not among them.
    pub fn matrices(&self) -> Vec<&LinearSpec> {
        let mut out: Vec<&LinearSpec> = Vec::new();
        match &self.mixer {
            MixerSpec::Attention(a) => {
                out.extend([&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj]);
                out.extend(&a.gate_proj);
            }
            MixerSpec::GatedDeltaNet(g) => {
                out.extend(&g.in_proj);
                out.extend(g.output_gate.as_ref().map(|z| &z.proj));
                out.push(&g.out_proj);
            }
            _ => {}
        }
        if let MlpSpec::Gated(g) = &self.mlp {
            out.extend([&g.gate, &g.up, &g.down]);
        }
        out
    }

    /// [`Self::matrices`], mutable.
    pub(crate) fn matrices_mut(&mut self) -> Vec<&mut LinearSpec> {
        let mut out: Vec<&mut LinearSpec> = Vec::new();
        match &mut self.mixer {
            MixerSpec::Attention(a) => {
                out.extend([&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj]);
                out.extend(&mut a.gate_proj);
            }
            MixerSpec::GatedDeltaNet(g) => {
                out.extend(&mut g.in_proj);
                out.extend(g.output_gate.as_mut().map(|z| &mut z.proj));
                out.push(&mut g.out_proj);
            }
            _ => {}
        }
        if let MlpSpec::Gated(g) = &mut self.mlp {
            out.extend([&mut g.gate, &mut g.up, &mut g.down]);
        }
        out
    }

    /// KV-cache bytes per token of this layer (0 for recurrent mixers; MLA caches its latent and key tail).
    pub fn kv_bytes_per_token(&self, dtype: DType) -> usize {
        self.mixer.parts().iter().map(|m| m.kv_bytes_per_token(dtype)).sum()
    }

    /// KV bytes this layer needs at a context of `positions`: sliding-window layers keep only their window.
    pub fn kv_bytes_at(&self, positions: usize, dtype: DType) -> usize {
        self.mixer.parts().iter().map(|m| m.kv_bytes_at(positions, dtype)).sum()
    }

    /// Fixed state bytes of this layer, independent of context (f32): the mixers' and a channel mixer's token shift.
    pub fn state_bytes(&self) -> usize {
        let shift = match &self.mlp {
            MlpSpec::ChannelMix(c) => 4 * c.key.in_features,
            _ => 0,
        };
        self.mixer.parts().iter().map(|m| m.state_bytes()).sum::<usize>() + shift
    }
}

impl MixerSpec {
    /// Declares every tensor this mixer reads.
    fn decls(&self, out: &mut Vec<TensorDecl>) {
        let norm = NormSpec::decls;
        match self {
            MixerSpec::Attention(a) => {
                for l in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj].into_iter().chain(&a.gate_proj) {
                    l.decls(out);
                }
                if let Some((q, k)) = &a.qk_norm {
                    norm(q, out);
                    norm(k, out);
                }
                if let Some(n) = &a.sub_norm {
                    norm(n, out);
                }
                for name in a.differential.iter().flat_map(|d| &d.lambda) {
                    out.push(TensorDecl::float(name.clone(), vec![a.head_dim / 2]));
                }
                for l in a.head_routing.iter().flat_map(|m| &m.routers) {
                    l.decls(out);
                }
            }
            MixerSpec::GatedDeltaNet(g) => {
                for l in &g.in_proj {
                    l.decls(out);
                }
                for (name, channels) in g.conv.iter().zip(g.conv_channels()) {
                    out.push(TensorDecl::float(name.clone(), vec![channels, 1, g.conv_kernel]));
                }
                if let Some(z) = &g.output_gate {
                    for l in z.down.iter().chain([&z.proj]) {
                        l.decls(out);
                    }
                }
                for l in [&g.b_proj, &g.out_proj] {
                    l.decls(out);
                }
                if let Some(d) = &g.decay {
                    for l in d.a_down.iter().chain([&d.a_proj]) {
                        l.decls(out);
                    }
                    let channels = if d.per_channel { g.head_k_dim } else { 1 };
                    out.push(TensorDecl::float(d.a_log.clone(), vec![g.n_v_heads]));
                    out.push(TensorDecl::float(d.dt_bias.clone(), vec![g.n_v_heads * channels]));
                }
                norm(&g.norm, out);
            }
            MixerSpec::Gla(g) => {
                for l in g.qkv.iter().chain([&g.gk_down, &g.gk_up]).chain(&g.g_proj).chain([&g.out_proj]) {
                    l.decls(out);
                }
                norm(&g.norm, out);
            }
            MixerSpec::LinearAttn(l) => {
                for p in l.qkv.iter().chain(l.feature.layers()).chain([&l.out_proj]) {
                    p.decls(out);
                }
                if let Some(n) = &l.norm {
                    norm(n, out);
                }
            }
            MixerSpec::Rat(r) => {
                r.in_proj.decls(out);
                out.push(TensorDecl::float(r.gate_bias.clone(), vec![r.hidden]));
                r.out_proj.decls(out);
            }
            MixerSpec::Mla(m) => {
                for l in [&m.q_proj, &m.kv_a_proj, &m.kv_b_proj, &m.o_proj] {
                    l.decls(out);
                }
                norm(&m.kv_norm, out);
            }
            MixerSpec::Lightning(l) => {
                for p in [&l.qkv[0], &l.output_gate, &l.out_proj] {
                    p.decls(out);
                }
                norm(&l.norm, out);
            }
            MixerSpec::ShortConv(c) => {
                c.in_proj[0].decls(out);
                out.push(TensorDecl::float(c.conv.clone(), vec![c.channels, 1, c.kernel]));
                c.out_proj.decls(out);
            }
            MixerSpec::Hgrn2(g) => {
                for l in [&g.q_proj, &g.f_proj, &g.i_proj, &g.out_proj] {
                    l.decls(out);
                }
                norm(&g.norm, out);
                if let Some((name, _, layers)) = &g.lower_bound {
                    out.push(TensorDecl::float(name.clone(), vec![*layers, g.f_proj.out_features]));
                }
            }
            MixerSpec::Mamba2(m) => {
                for l in [&m.z, &m.dt, &m.out_proj] {
                    l.decls(out);
                }
                let channels = m.conv_channels();
                out.push(TensorDecl::float(m.conv.clone(), vec![channels, 1, m.conv_kernel]));
                if let Some(b) = &m.conv_bias {
                    out.push(TensorDecl::float(b.clone(), vec![channels]));
                }
                for name in [&m.a_log, &m.dt_bias, &m.d] {
                    out.push(TensorDecl::float(name.clone(), vec![m.n_heads]));
                }
                if let Some(n) = &m.norm {
                    out.push(TensorDecl::float(n.weight.clone(), vec![m.inner()]));
                }
            }
            MixerSpec::Gsa(g) => {
                for l in g.qkv.iter().chain([&g.f_proj, &g.out_proj]) {
                    l.decls(out);
                }
                norm(&g.norm, out);
            }
            MixerSpec::Rwkv7(r) => r.decls(out),
            MixerSpec::Parallel(branches) => branches.iter().for_each(|b| b.decls(out)),
        }
    }
}

/// An architecture-neutral description of a decoder-only language model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// HF `model_type` the spec came from.
    pub model_type: String,
    /// Residual stream width.
    pub hidden: usize,
    /// Vocabulary size (rows of the embedding and of the head).
    pub vocab: usize,
    /// Token embedding tensor name, `[vocab, hidden]`.
    pub embed: String,
    /// Multiplier applied to embeddings (Gemma: sqrt(hidden)).
    pub embed_scale: Option<f32>,
    /// Norm of the embeddings before layer 0 (RWKV's `pre_norm`).
    pub embed_norm: Option<NormSpec>,
    /// The layers, in order: the hybrid schedule.
    pub layers: Vec<LayerSpec>,
    /// Final norm before the head.
    pub final_norm: NormSpec,
    /// Output head tensor name, `[vocab, hidden]` (the embedding when tied).
    pub lm_head: String,
    /// Whether the head shares the embedding tensor.
    pub tied_embeddings: bool,
    /// Multiplier of the logits (Falcon-H1's `lm_head_multiplier`; 1 elsewhere).
    pub logit_scale: f32,
    /// Trained context length.
    pub max_positions: usize,
    /// Beginning-of-sequence token, when the config names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens.
    pub eos_token_ids: Vec<u32>,
}

impl ModelSpec {
    /// Every tensor the model reads, with the shape the config implies, in layer order.
    /// Model-level tensors several layers read (HGRN2 lower bounds) are listed once.
    pub fn tensors(&self) -> Vec<TensorDecl> {
        let mut seen = std::collections::HashSet::new();
        let mut out = self.tensor_groups().concat();
        out.retain(|d| seen.insert(d.name.clone()));
        out
    }

    /// The tensors in the order a loader uploads them, grouped: the embedding (and its norm), then one group per
    /// layer, then the final norm and head.
    /// A tensor several layers read (HGRN2 lower bounds) is listed in each group that reads it.
    pub fn tensor_groups(&self) -> Vec<Vec<TensorDecl>> {
        let mut groups = Vec::with_capacity(self.layers.len() + 2);
        let mut out = vec![TensorDecl::float(self.embed.clone(), vec![self.vocab, self.hidden])];
        let norm = NormSpec::decls;
        if let Some(n) = &self.embed_norm {
            norm(n, &mut out);
        }
        groups.push(std::mem::take(&mut out));
        for layer in &self.layers {
            if let Some(n) = &layer.norms.pre_mixer {
                norm(n, &mut out);
            }
            layer.mixer.decls(&mut out);
            if let Some(n) = &layer.norms.post_mixer {
                norm(n, &mut out);
            }
            if let Some(n) = &layer.norms.pre_mlp {
                norm(n, &mut out);
            }
            let gated = |g: &GatedMlpSpec, out: &mut Vec<TensorDecl>| {
                for l in [&g.gate, &g.up, &g.down] {
                    l.decls(out);
                }
                if let Some(n) = &g.sub_norm {
                    n.decls(out);
                }
            };
            match &layer.mlp {
                MlpSpec::Gated(g) => gated(g, &mut out),
                MlpSpec::Moe(m) => {
                    m.router.decls(&mut out);
                    if let Some(b) = &m.selection_bias {
                        out.push(TensorDecl::float(b.clone(), vec![m.experts.len()]));
                    }
                    for e in m.experts.iter().chain(&m.shared) {
                        gated(e, &mut out);
                    }
                    if let Some(g) = &m.shared_gate {
                        g.decls(&mut out);
                    }
                }
                MlpSpec::ChannelMix(c) => c.decls(&mut out),
            }
            if let Some(n) = &layer.norms.post_mlp {
                norm(n, &mut out);
            }
            groups.push(std::mem::take(&mut out));
        }
        norm(&self.final_norm, &mut out);
        if !self.tied_embeddings {
            out.push(TensorDecl::float(self.lm_head.clone(), vec![self.vocab, self.hidden]));
        }
        groups.push(out);
        for group in &mut groups {
            let mut seen = std::collections::HashSet::new();
            group.retain(|d| seen.insert(d.name.clone()));
        }
        groups
    }

    /// Number of parameters the model reads (tied weights counted once).
    pub fn parameter_count(&self) -> usize {
        // A packed ternary tensor holds four weights per byte.
        self.tensors().iter().map(|t| t.shape.iter().product::<usize>() * if t.packed { 4 } else { 1 }).sum()
    }

    /// Bytes of context memory at `positions` tokens: every layer's KV cache (sliding windows capped) at `dtype`
    /// plus the fixed recurrent and conv states (f32).
    pub fn context_bytes(&self, positions: usize, dtype: DType) -> u64 {
        self.layers.iter().map(|l| (l.kv_bytes_at(positions, dtype) + l.state_bytes()) as u64).sum()
    }

    /// Bytes of KV cache one token occupies across all attention layers, at `dtype` storage.
    pub fn kv_bytes_per_token(&self, dtype: DType) -> usize {
        self.layers.iter().map(|l| l.kv_bytes_per_token(dtype)).sum()
    }

    /// Bytes of fixed-size state (recurrent + conv) across all linear-attention layers, in f32.
    pub fn state_bytes(&self) -> usize {
        self.layers.iter().map(LayerSpec::state_bytes).sum()
    }

    /// Checks a token id against the vocabulary.
    pub fn check_token(&self, id: u32) -> crate::Result<()> {
        if (id as usize) < self.vocab {
            Ok(())
        } else {
            Err(crate::CoreError::InvalidInput(format!(
                "token id {id} is outside the vocabulary (size {})",
                self.vocab
            )))
        }
    }
}
