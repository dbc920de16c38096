//! HF `config.json` → [`ModelSpec`]. Each supported transformers `model_type` is a row of [`FAMILIES`] (flags and
//! tensor naming); the per-layer schedule comes from `layer_types` (or the family's legacy fields). fla models,
//! whose configs have another shape, map in [`fla`]. No family has forward-pass code of its own.

use super::*;
use crate::{CoreError, Result};
use serde_json::Value;

/// Tensor names of a family's blocks, relative to `model.layers.{i}` (and the final norm's full name).
#[derive(Clone, Copy, Debug)]
pub struct Naming {
    /// Softmax-attention module.
    pub attn: &'static str,
    /// Attention output projection.
    pub attn_out: &'static str,
    /// Per-head q and k norms.
    pub qk_norms: (&'static str, &'static str),
    /// MLP module.
    pub mlp: &'static str,
    /// Gate, up and down projections of the MLP.
    pub mlp_projs: [&'static str; 3],
    /// Pre-mixer and pre-MLP norms (non-sandwich families).
    pub norms: (&'static str, &'static str),
    /// The final norm.
    pub final_norm: &'static str,
    /// Config field of the norm epsilon.
    pub eps_field: &'static str,
    /// Mixture-of-experts module.
    pub moe: &'static str,
    /// Gate, up and down projections of each expert.
    pub expert_projs: [&'static str; 3],
    /// Shared expert module inside the MoE module.
    pub shared_expert: &'static str,
}

/// The names most transformers decoders use (Llama and its descendants).
pub const HF_NAMES: Naming = Naming {
    attn: "self_attn",
    attn_out: "o_proj",
    qk_norms: ("q_norm", "k_norm"),
    mlp: "mlp",
    mlp_projs: ["gate_proj", "up_proj", "down_proj"],
    norms: ("input_layernorm", "post_attention_layernorm"),
    final_norm: "model.norm.weight",
    eps_field: "rms_norm_eps",
    moe: "mlp",
    expert_projs: ["gate_proj", "up_proj", "down_proj"],
    shared_expert: "shared_expert",
};

/// How a family lays out its Gated DeltaNet projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaLayout {
    /// Qwen3.5: `in_proj_qkv` (contiguous q, k, v), `in_proj_z`, `in_proj_b`, `in_proj_a`.
    Split,
    /// Qwen3-Next: `in_proj_qkvz` and `in_proj_ba`, interleaved per key head as `[q | k | v r | z r]` and `[b r | a r]`
    /// (r value heads per key head).
    GroupedQkvz,
    /// OLMo hybrid: fla's naming (separate projections and convs, `g_proj`, `o_norm`), negative eigenvalues optional.
    Separate,
}

/// The mixer a family's `linear_attention` layers hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearMixer {
    /// Gated DeltaNet in this projection layout.
    GatedDeltaNet(DeltaLayout),
    /// MiniMax Lightning attention.
    Lightning,
    /// Kimi Delta Attention (Kimi Linear).
    Kda,
}

/// What distinguishes one transformers model family from another, as data.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// The HF `model_type` values this row covers.
    pub model_types: &'static [&'static str],
    /// Per-head RMSNorm on q and k (Qwen3, Gemma 3, Qwen3.5).
    pub qk_norm: bool,
    /// RMSNorm weights stored as offsets from one: `x̂ * (1 + w)` (Gemma, Qwen3.5).
    pub unit_offset_norms: bool,
    /// Post-mixer and post-MLP norms besides the pre-norms (Gemma 2/3 "sandwich").
    pub sandwich_norms: bool,
    /// Embeddings multiplied by sqrt(hidden) (Gemma).
    pub scaled_embeddings: bool,
    /// Config field whose inverse square root scales q·k instead of head_dim (Gemma's query_pre_attn_scalar).
    pub attn_scale_field: Option<&'static str>,
    /// Config field holding the MLP activation.
    pub act_field: &'static str,
    /// Whether embeddings are tied when the config does not say.
    pub tied_by_default: bool,
    /// Sigmoid output gate on softmax attention (Qwen3.5).
    pub attn_output_gate: bool,
    /// q/k norms over the whole projection rather than per head (OLMo).
    pub qk_norm_whole: bool,
    /// Attention layers carry no pre-norms, only these post-mixer and post-MLP norms (OLMo hybrid, whose linear
    /// layers keep the pre-norms of `names.norms`).
    pub attention_post_norms: Option<(&'static str, &'static str)>,
    /// What `linear_attention` layers are (Qwen3-Next, Qwen3.5: Gated DeltaNet; MiniMax: Lightning).
    pub linear_mixer: Option<LinearMixer>,
    /// Normed, scaled residuals from the `*_alpha_factor` / `*_beta_factor` fields (MiniMax).
    pub scaled_residuals: bool,
    /// Full-attention layers are multi-head latent attention (Kimi Linear).
    pub mla: bool,
    /// Every layer runs Mamba2 beside its attention, with muP multipliers (Falcon-H1).
    pub parallel_mamba: bool,
    /// Ternary projections per `quantization_config` and sub-norms before `o_proj` and `down` (BitNet b1.58).
    pub bitnet: bool,
    /// Score function of MoE routers, and whether they carry a selection bias.
    pub router: (RouterScoring, bool),
    /// `conv` layers are gated short-convolution blocks (LFM2).
    pub short_conv: bool,
    /// Tensor names.
    pub names: Naming,
}

const BASE: Family = Family {
    model_types: &[],
    qk_norm: false,
    unit_offset_norms: false,
    sandwich_norms: false,
    scaled_embeddings: false,
    attn_scale_field: None,
    act_field: "hidden_act",
    tied_by_default: false,
    attn_output_gate: false,
    qk_norm_whole: false,
    attention_post_norms: None,
    linear_mixer: None,
    scaled_residuals: false,
    mla: false,
    parallel_mamba: false,
    bitnet: false,
    router: (RouterScoring::Softmax, false),
    short_conv: false,
    names: HF_NAMES,
};

/// The transformers families Ternlight runs, each checked end to end against reference logits.
pub const FAMILIES: &[Family] = &[
    Family { model_types: &["llama"], ..BASE },
    Family { model_types: &["qwen3"], qk_norm: true, ..BASE },
    Family {
        model_types: &["gemma3_text"],
        qk_norm: true,
        unit_offset_norms: true,
        sandwich_norms: true,
        scaled_embeddings: true,
        attn_scale_field: Some("query_pre_attn_scalar"),
        act_field: "hidden_activation",
        tied_by_default: true,
        ..BASE
    },
    Family {
        model_types: &["qwen3_5_text"],
        qk_norm: true,
        unit_offset_norms: true,
        attn_output_gate: true,
        linear_mixer: Some(LinearMixer::GatedDeltaNet(DeltaLayout::Split)),
        ..BASE
    },
    Family {
        model_types: &["qwen3_next"],
        qk_norm: true,
        unit_offset_norms: true,
        attn_output_gate: true,
        linear_mixer: Some(LinearMixer::GatedDeltaNet(DeltaLayout::GroupedQkvz)),
        ..BASE
    },
    Family {
        model_types: &["olmo_hybrid"],
        qk_norm: true,
        qk_norm_whole: true,
        attention_post_norms: Some(("feedforward_layer_norm", "post_feedforward_layernorm")),
        linear_mixer: Some(LinearMixer::GatedDeltaNet(DeltaLayout::Separate)),
        names: Naming { norms: ("attention_layer_norm", "feedforward_layer_norm"), ..HF_NAMES },
        ..BASE
    },
    Family {
        model_types: &["kimi_linear"],
        linear_mixer: Some(LinearMixer::Kda),
        mla: true,
        router: (RouterScoring::Sigmoid, true),
        names: Naming {
            mlp: "block_sparse_moe",
            moe: "block_sparse_moe",
            expert_projs: ["w1", "w3", "w2"],
            shared_expert: "shared_experts",
            ..HF_NAMES
        },
        ..BASE
    },
    Family {
        model_types: &["falcon_h1"],
        parallel_mamba: true,
        names: Naming {
            mlp: "feed_forward",
            norms: ("input_layernorm", "pre_ff_layernorm"),
            final_norm: "model.final_layernorm.weight",
            ..HF_NAMES
        },
        ..BASE
    },
    Family { model_types: &["bitnet"], bitnet: true, tied_by_default: true, ..BASE },
    Family {
        model_types: &["minimax"],
        linear_mixer: Some(LinearMixer::Lightning),
        scaled_residuals: true,
        names: Naming { moe: "block_sparse_moe", expert_projs: ["w1", "w3", "w2"], ..HF_NAMES },
        ..BASE
    },
    Family {
        model_types: &["lfm2"],
        qk_norm: true,
        tied_by_default: true,
        short_conv: true,
        names: Naming {
            attn_out: "out_proj",
            qk_norms: ("q_layernorm", "k_layernorm"),
            mlp: "feed_forward",
            mlp_projs: ["w1", "w3", "w2"],
            norms: ("operator_norm", "ffn_norm"),
            final_norm: "model.embedding_norm.weight",
            eps_field: "norm_eps",
            ..HF_NAMES
        },
        ..BASE
    },
];

/// Every `model_type` Ternlight accepts, for error messages and docs.
pub fn supported_model_types() -> Vec<&'static str> {
    let mut all: Vec<&str> = FAMILIES.iter().flat_map(|f| f.model_types.iter().copied()).collect();
    all.extend(fla::MODEL_TYPES);
    all
}

/// The largest count or dimension a config field may hold (positions, vocabulary, widths): larger values are
/// refused as absurd before any size is computed from them.
pub const MAX_DIMENSION: u64 = 1 << 26;
/// The most layers a config may declare.
pub const MAX_LAYERS: u64 = 1 << 12;
/// The most elements one tensor may have (a 4 Ti-element matrix: far beyond any device).
pub const MAX_ELEMENTS: u64 = 1 << 42;

/// Typed access to config.json fields with errors that name the field.
#[derive(Clone, Copy)]
pub(crate) struct Config<'a>(pub(crate) &'a Value);

impl<'a> Config<'a> {
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }
    pub(crate) fn usize(&self, field: &str) -> Result<usize> {
        self.opt_usize(field)?.ok_or_else(|| CoreError::field(field, "is required but missing"))
    }
    pub(crate) fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        let cap = if field.contains("layers") { MAX_LAYERS } else { MAX_DIMENSION };
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0 && n <= cap)
                .map(|n| Some(n as usize))
                .ok_or_else(|| CoreError::field(field, format!("must be an integer from 1 to {cap}, found {v}"))),
        }
    }
    pub(crate) fn f64(&self, field: &str) -> Result<Option<f64>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => {
                v.as_f64().map(Some).ok_or_else(|| CoreError::field(field, format!("must be a number, found {v}")))
            }
        }
    }
    pub(crate) fn bool(&self, field: &str) -> Option<bool> {
        self.get(field).and_then(Value::as_bool)
    }
    pub(crate) fn str(&self, field: &str) -> Option<&'a str> {
        self.get(field).and_then(Value::as_str)
    }
    pub(crate) fn token_ids(&self, field: &str) -> Vec<u32> {
        match self.get(field) {
            Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|n| n as u32).collect(),
            _ => Vec::new(),
        }
    }
}

/// The kind of one layer in a transformers `layer_types` schedule.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LayerType {
    Full,
    Sliding,
    Linear,
    Conv,
}

impl LayerType {
    fn key(self) -> &'static str {
        match self {
            LayerType::Full => "full_attention",
            LayerType::Sliding => "sliding_attention",
            LayerType::Linear => "linear_attention",
            LayerType::Conv => "conv",
        }
    }
}

fn layer_schedule(cfg: &Config, n_layers: usize, family: &Family) -> Result<Vec<LayerType>> {
    if let Some(types) = cfg.get("layer_types") {
        let list = types.as_array().ok_or_else(|| CoreError::field("layer_types", "must be a list of strings"))?;
        if list.len() != n_layers {
            return Err(CoreError::field("layer_types", format!("has {} entries for {n_layers} layers", list.len())));
        }
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(LayerType::Full),
                Some("sliding_attention") => Ok(LayerType::Sliding),
                Some("linear_attention") if family.linear_mixer.is_some() => Ok(LayerType::Linear),
                Some("conv") if family.short_conv => Ok(LayerType::Conv),
                _ => {
                    let mut supported = vec!["full_attention", "sliding_attention"];
                    supported.extend(family.linear_mixer.map(|_| "linear_attention"));
                    supported.extend(family.short_conv.then_some("conv"));
                    Err(CoreError::Unsupported {
                        what: "layer type",
                        name: t.to_string().trim_matches('"').to_string(),
                        supported: supported.join(", "),
                    })
                }
            })
            .collect();
    }
    // Kimi checkpoints list their full-attention layers, 1-indexed, in `linear_attn_config`.
    let kimi_full = cfg.get("linear_attn_config").and_then(|c| c.get("full_attn_layers")).and_then(Value::as_array);
    if let (Some(_), Some(full)) = (family.linear_mixer, kimi_full) {
        let full: Vec<u64> = full.iter().filter_map(Value::as_u64).collect();
        return Ok((0..n_layers)
            .map(|i| if full.contains(&(i as u64 + 1)) { LayerType::Full } else { LayerType::Linear })
            .collect());
    }
    if let (true, Some(idxs)) = (family.short_conv, cfg.get("full_attn_idxs").and_then(Value::as_array)) {
        let full: Vec<u64> = idxs.iter().filter_map(Value::as_u64).collect();
        return Ok((0..n_layers)
            .map(|i| if full.contains(&(i as u64)) { LayerType::Full } else { LayerType::Conv })
            .collect());
    }
    if let Some(pattern) = cfg.opt_usize("sliding_window_pattern")? {
        return Ok((0..n_layers)
            .map(|i| if (i + 1) % pattern == 0 { LayerType::Full } else { LayerType::Sliding })
            .collect());
    }
    if cfg.bool("use_sliding_window") == Some(true) {
        let first = cfg.opt_usize("max_window_layers")?.unwrap_or(0);
        return Ok((0..n_layers).map(|i| if i >= first { LayerType::Sliding } else { LayerType::Full }).collect());
    }
    Ok(vec![LayerType::Full; n_layers])
}

/// RoPE for one layer type: `rope_parameters` (flat, or keyed by layer type) or the legacy fields.
fn rope_for(cfg: &Config, ty: LayerType, head_dim: usize) -> Result<RopeSpec> {
    let partial = cfg.f64("partial_rotary_factor")?;
    if let Some(params) = cfg.get("rope_parameters") {
        let params = params.get(ty.key()).unwrap_or(params);
        return RopeSpec::from_params(params, head_dim, partial);
    }
    let mut params = cfg.get("rope_scaling").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    let theta = match (ty, cfg.f64("rope_local_base_freq")?) {
        (LayerType::Sliding, Some(local)) => local,
        _ => cfg.f64("rope_theta")?.unwrap_or(10000.0),
    };
    if let Value::Object(map) = &mut params {
        map.insert("rope_theta".into(), theta.into());
    }
    RopeSpec::from_params(&params, head_dim, partial)
}

/// Sizes of a softmax-attention layer.
pub(crate) struct AttentionDims {
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub bias: bool,
    pub scale: f32,
    pub output_gate: bool,
    pub qk_norm_whole: bool,
}

/// A softmax-attention layer under `prefix` (`...q_proj`, `...k_proj`, ...).
pub(crate) fn attention(
    prefix: &str,
    names: &Naming,
    d: &AttentionDims,
    qk_norm: Option<&dyn Fn(String, usize) -> NormSpec>,
    rope: Option<RopeSpec>,
    window: Option<usize>,
) -> AttentionSpec {
    let q_width = d.n_heads * d.head_dim;
    let q_name = format!("{prefix}.q_proj");
    // A gated q_proj holds [q | gate] per head.
    let (q_proj, gate_proj) = if d.output_gate {
        let part = |offset| LinearSpec::part(&q_name, d.hidden, d.bias, (d.n_heads, 2 * d.head_dim), offset, q_width);
        (part(0), Some(part(d.head_dim)))
    } else {
        (LinearSpec::new(&q_name, q_width, d.hidden, d.bias), None)
    };
    AttentionSpec {
        n_heads: d.n_heads,
        n_kv_heads: d.n_kv_heads,
        head_dim: d.head_dim,
        q_proj,
        gate_proj,
        k_proj: LinearSpec::new(&format!("{prefix}.k_proj"), d.n_kv_heads * d.head_dim, d.hidden, d.bias),
        v_proj: LinearSpec::new(&format!("{prefix}.v_proj"), d.n_kv_heads * d.head_dim, d.hidden, d.bias),
        o_proj: LinearSpec::new(&format!("{prefix}.{}", names.attn_out), d.hidden, d.n_heads * d.head_dim, d.bias),
        qk_norm: qk_norm.map(|n| {
            let (qn, kn) = names.qk_norms;
            let (q_dim, k_dim) = match d.qk_norm_whole {
                true => (q_width, d.n_kv_heads * d.head_dim),
                false => (d.head_dim, d.head_dim),
            };
            (n(format!("{prefix}.{qn}.weight"), q_dim), n(format!("{prefix}.{kn}.weight"), k_dim))
        }),
        rope,
        mask: AttentionMask::causal(window),
        scale: d.scale,
        sub_norm: None,
        differential: None,
        head_routing: None,
    }
}

/// A gated MLP under `prefix` with the family's gate/up/down names.
pub(crate) fn gated_mlp(
    prefix: &str,
    names: &Naming,
    hidden: usize,
    intermediate: usize,
    bias: bool,
    act: Activation,
) -> GatedMlpSpec {
    let [g, u, d] = names.mlp_projs;
    GatedMlpSpec {
        gate: LinearSpec::new(&format!("{prefix}.{g}"), intermediate, hidden, bias),
        up: LinearSpec::new(&format!("{prefix}.{u}"), intermediate, hidden, bias),
        down: LinearSpec::new(&format!("{prefix}.{d}"), hidden, intermediate, bias),
        act,
        sub_norm: None,
    }
}

/// LFM2's gated short-convolution block (`conv.in_proj` -> B, C, x; `conv.conv`; `conv.out_proj`).
fn lfm2_short_conv(cfg: &Config, prefix: &str, hidden: usize) -> Result<ShortConvSpec> {
    if cfg.bool("conv_bias") == Some(true) {
        return Err(CoreError::Unsupported {
            what: "lfm2 option",
            name: "conv_bias=true".into(),
            supported: "conv_bias=false".into(),
        });
    }
    Ok(ShortConvSpec {
        channels: hidden,
        kernel: cfg.opt_usize("conv_L_cache")?.unwrap_or(3),
        in_proj: [0, 1, 2].map(|i| {
            LinearSpec::part(&format!("{prefix}.in_proj"), hidden, false, (1, 3 * hidden), i * hidden, hidden)
        }),
        conv: format!("{prefix}.conv.weight"),
        out_proj: LinearSpec::new(&format!("{prefix}.out_proj"), hidden, hidden, false),
    })
}

/// The MLP width: `intermediate_size` (or LFM2's `block_ff_dim`), adjusted as LFM2 does when
/// `block_auto_adjust_ff_dim` is set (2/3, times the multiplier, rounded up to `block_multiple_of`).
fn intermediate_size(cfg: &Config) -> Result<usize> {
    let base = match cfg.opt_usize("intermediate_size")? {
        Some(i) => i,
        None => {
            cfg.usize("block_ff_dim").map_err(|_| CoreError::field("intermediate_size", "is required but missing"))?
        }
    };
    if cfg.bool("block_auto_adjust_ff_dim") != Some(true) {
        return Ok(base);
    }
    let mut ff = 2 * base / 3;
    if let Some(m) = cfg.f64("block_ffn_dim_multiplier")? {
        ff = (m * ff as f64) as usize;
    }
    let multiple = cfg.opt_usize("block_multiple_of")?.unwrap_or(256);
    Ok(multiple * ff.div_ceil(multiple))
}

/// A Qwen Gated DeltaNet layer (`linear_attn.*`) in the family's projection layout, with one conv over `[q | k | v]`.
fn qwen_gated_deltanet(
    cfg: &Config,
    layout: DeltaLayout,
    prefix: &str,
    hidden: usize,
    eps: f32,
) -> Result<GatedDeltaNetSpec> {
    let n_k_heads = cfg.usize("linear_num_key_heads")?;
    let n_v_heads = cfg.usize("linear_num_value_heads")?;
    let head_k_dim = cfg.usize("linear_key_head_dim")?;
    let head_v_dim = cfg.usize("linear_value_head_dim")?;
    let conv_kernel = cfg.opt_usize("linear_conv_kernel_dim")?.unwrap_or(4);
    if n_v_heads % n_k_heads != 0 {
        return Err(CoreError::field(
            "linear_num_value_heads",
            format!("{n_v_heads} is not a multiple of linear_num_key_heads {n_k_heads}"),
        ));
    }
    let (key, value) = (n_k_heads * head_k_dim, n_v_heads * head_v_dim);
    let lin = |name: &str, out: usize| LinearSpec::new(&format!("{prefix}.{name}"), out, hidden, false);
    let (in_proj, z, b, a) = match layout {
        DeltaLayout::Separate => {
            // fla's FusedRMSNormGated default eps, whatever rms_norm_eps says.
            let heads = (n_k_heads, n_v_heads, head_k_dim, head_v_dim);
            return Ok(fla::separate_gated_deltanet(prefix, hidden, heads, conv_kernel, 1e-5, fla::beta_scale(cfg)));
        }
        DeltaLayout::Split => (
            vec![lin("in_proj_qkv", 2 * key + value)],
            lin("in_proj_z", value),
            lin("in_proj_b", n_v_heads),
            lin("in_proj_a", n_v_heads),
        ),
        DeltaLayout::GroupedQkvz => {
            let r = n_v_heads / n_k_heads;
            let qkvz = format!("{prefix}.in_proj_qkvz");
            let group = (n_k_heads, 2 * head_k_dim + 2 * r * head_v_dim);
            let part = |offset, out| LinearSpec::part(&qkvz, hidden, false, group, offset, out);
            let ba = |offset| {
                LinearSpec::part(&format!("{prefix}.in_proj_ba"), hidden, false, (n_k_heads, 2 * r), offset, n_v_heads)
            };
            let in_proj = vec![part(0, key), part(head_k_dim, key), part(2 * head_k_dim, value)];
            (in_proj, part(2 * head_k_dim + r * head_v_dim, value), ba(0), ba(r))
        }
    };
    Ok(GatedDeltaNetSpec {
        n_k_heads,
        n_v_heads,
        head_k_dim,
        head_v_dim,
        in_proj,
        conv: vec![format!("{prefix}.conv1d.weight")],
        conv_kernel,
        output_gate: Some(fla::silu_gate(z)),
        decay: Some(DecaySpec {
            a_proj: a,
            a_down: None,
            per_channel: false,
            a_log: format!("{prefix}.A_log"),
            dt_bias: format!("{prefix}.dt_bias"),
        }),
        b_proj: b,
        beta_scale: 1.0,
        norm: NormSpec {
            weight: format!("{prefix}.norm.weight"),
            dim: head_v_dim,
            eps,
            unit_offset: false,
            centered: false,
            bias: None,
        },
        out_proj: LinearSpec::new(&format!("{prefix}.out_proj"), hidden, value, false),
    })
}

/// MiniMax's Lightning attention layer `layer` of `n_layers`: per-head slopes `2^(-8(h+1)/H) (1 - layer/(L-1) + 1e-5)`;
/// its output norm keeps the RMSNorm default eps 1e-6 whatever the config says.
fn lightning(d: &AttentionDims, prefix: &str, layer: usize, n_layers: usize) -> LightningSpec {
    let (h, hd, hidden) = (d.n_heads, d.head_dim, d.hidden);
    let width = h * hd;
    let qkv =
        [0, 1, 2].map(|i| LinearSpec::part(&format!("{prefix}.qkv_proj"), hidden, false, (h, 3 * hd), i * hd, width));
    let depth = 1.0 - layer as f64 / (n_layers as f64 - 1.0 + 1e-5) + 1e-5;
    let base = 2f64.powf(-8.0 / h as f64);
    LightningSpec {
        n_heads: h,
        head_dim: hd,
        qkv,
        slopes: (0..h).map(|i| (base.powi(i as i32 + 1) * depth) as f32).collect(),
        output_gate: LinearSpec::new(&format!("{prefix}.output_gate"), width, hidden, false),
        norm: NormSpec {
            weight: format!("{prefix}.norm.weight"),
            dim: width,
            eps: 1e-6,
            unit_offset: false,
            centered: false,
            bias: None,
        },
        out_proj: LinearSpec::new(&format!("{prefix}.out_proj"), hidden, width, false),
    }
}

/// A Kimi Linear KDA layer: heads and head dim from `linear_num_heads` / `linear_head_dim` (or the checkpoint's
/// `linear_attn_config`), values as wide as keys.
fn kimi_delta_attention(cfg: &Config, prefix: &str, hidden: usize, eps: f32) -> Result<GatedDeltaNetSpec> {
    let nested = cfg.get("linear_attn_config").map(Config);
    let field = |flat: &str, inner: &str| -> Result<usize> {
        match cfg.opt_usize(flat)? {
            Some(v) => Ok(v),
            None => nested.as_ref().map_or(Err(CoreError::field(flat, "is required but missing")), |n| n.usize(inner)),
        }
    };
    let heads = field("linear_num_heads", "num_heads")?;
    let dk = field("linear_head_dim", "head_dim")?;
    let conv = field("linear_conv_kernel_dim", "short_conv_kernel_size").unwrap_or(4);
    let names = fla::KdaNames { decay: ("f_a_proj", "f_b_proj"), gate: ("g_a_proj", "g_b_proj"), gate_bias: false };
    Ok(fla::kda_layer(prefix, hidden, (heads, dk, dk), conv, (eps, 1.0), &names))
}

/// Multi-head latent attention (Kimi Linear: NoPE; a low-rank query is refused).
fn mla(cfg: &Config, prefix: &str, d: &AttentionDims, eps: f32) -> Result<MlaSpec> {
    if cfg.opt_usize("q_lora_rank")?.is_some() {
        return Err(CoreError::Unsupported {
            what: "MLA option",
            name: "q_lora_rank".into(),
            supported: "full-rank queries (q_lora_rank null)".into(),
        });
    }
    let (nope, rope) = (cfg.usize("qk_nope_head_dim")?, cfg.opt_usize("qk_rope_head_dim")?.unwrap_or(0));
    let (v_dim, rank) = (cfg.usize("v_head_dim")?, cfg.usize("kv_lora_rank")?);
    let h = d.n_heads;
    let lin = |name: &str, out: usize, inp: usize| LinearSpec::new(&format!("{prefix}.{name}"), out, inp, false);
    Ok(MlaSpec {
        n_heads: h,
        nope_dim: nope,
        rope_dim: rope,
        v_dim,
        kv_rank: rank,
        q_proj: lin("q_proj", h * (nope + rope), d.hidden),
        kv_a_proj: lin("kv_a_proj_with_mqa", rank + rope, d.hidden),
        kv_norm: NormSpec {
            weight: format!("{prefix}.kv_a_layernorm.weight"),
            dim: rank,
            eps,
            unit_offset: false,
            centered: false,
            bias: None,
        },
        kv_b_proj: lin("kv_b_proj", h * (nope + v_dim), rank),
        o_proj: lin("o_proj", d.hidden, h * v_dim),
        scale: ((nope + rope) as f32).powf(-0.5),
    })
}

/// The ternary form a `quantization_config` with `quant_method: bitnet` gives a projection
/// (`linear_class` bitlinear: packed codes; autobitlinear online: absmean at load) and its Hybrid Gated Flow correction
/// (`hgf: {rank, gate: scalar | channel}`); `None` without such a config, unless the family is `always` ternary
/// (BitNet, whose projections default to bitlinear).
fn bitnet_projection(cfg: &Config, always: bool) -> Result<Option<impl Fn(&mut LinearSpec) -> Result<()>>> {
    let q = cfg.get("quantization_config").map(Config);
    if !always && q.as_ref().and_then(|q| q.str("quant_method")) != Some("bitnet") {
        return Ok(None);
    }
    let class = q.as_ref().and_then(|q| q.str("linear_class")).unwrap_or("bitlinear").to_string();
    let mode = q.as_ref().and_then(|q| q.str("quantization_mode")).unwrap_or("offline").to_string();
    let hgf = match q.as_ref().and_then(|q| q.get("hgf")).map(Config) {
        Some(h) => {
            let per_channel = match h.str("gate").unwrap_or("scalar") {
                "scalar" => false,
                "channel" => true,
                other => {
                    return Err(CoreError::field(
                        "quantization_config.hgf.gate",
                        format!("`{other}` is not scalar or channel"),
                    ))
                }
            };
            let rank = match h.get("rank").and_then(Value::as_u64) {
                Some(rank) if rank > 0 => rank as usize,
                _ => return Err(CoreError::field("quantization_config.hgf.rank", "must be a positive integer")),
            };
            Some((rank, per_channel))
        }
        None => None,
    };
    Ok(Some(move |l: &mut LinearSpec| -> Result<()> {
        if let Some((rank, per_channel)) = hgf {
            let prefix = l.weight.trim_end_matches(".weight");
            l.hgf = Some(Hgf {
                lora_a: format!("{prefix}.lora_A"),
                lora_b: format!("{prefix}.lora_B"),
                gate: format!("{prefix}.hgf_gate"),
                rank,
                per_channel,
            });
        }
        l.ternary = Some(match (class.as_str(), mode.as_str()) {
            ("bitlinear", _) => Ternary::PackedRows { weight_scale: format!("{}_scale", l.weight) },
            ("autobitlinear", "online") => Ternary::Absmean { input_norm: None },
            _ => {
                return Err(CoreError::Unsupported {
                    what: "BitNet linear class",
                    name: format!("{class} ({mode})"),
                    supported: "bitlinear, autobitlinear (online)".into(),
                })
            }
        });
        if matches!(l.ternary, Some(Ternary::PackedRows { .. })) && !l.stored_rows().is_multiple_of(4) {
            return Err(CoreError::field(
                "quantization_config",
                format!("{}: {} rows do not pack by 4", l.weight, l.stored_rows()),
            ));
        }
        Ok(())
    }))
}

/// BitNet b1.58 blocks: softmax attention with `attn_sub_norm` before `o_proj` and a gated MLP with `ffn_sub_norm`
/// before `down_proj` (their projections are made ternary with every other family's, by [`bitnet_projection`]).
fn bitnet_sub_norms(
    prefix: &str,
    mixer: &mut MixerSpec,
    mlp: &mut MlpSpec,
    norm: &dyn Fn(String, usize) -> NormSpec,
) -> Result<()> {
    let (MixerSpec::Attention(a), MlpSpec::Gated(g)) = (mixer, mlp) else {
        return Err(CoreError::field("model_type", "bitnet layers are attention and a gated MLP"));
    };
    a.sub_norm = Some(norm(format!("{prefix}.self_attn.attn_sub_norm.weight"), a.o_proj.in_features));
    g.sub_norm = Some(norm(format!("{prefix}.mlp.ffn_sub_norm.weight"), g.intermediate()));
    Ok(())
}

/// A config value that may be a JSON number or Python's `{"__float__": "Infinity"}` spelling.
fn float_or_infinity(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| match v.get("__float__").and_then(Value::as_str) {
        Some("Infinity" | "inf") => Some(f64::INFINITY),
        Some("-Infinity" | "-inf") => Some(f64::NEG_INFINITY),
        _ => None,
    })
}

/// Falcon-H1's layer: Mamba2 beside the attention, both on the normed input and summed, with the muP multipliers
/// folded into the projections (attention in/out and key, SSM in/out and per-part `ssm_multipliers`, MLP gate/down).
fn falcon_mup(
    cfg: &Config,
    prefix: &str,
    attention: MixerSpec,
    mlp: &mut MlpSpec,
    hidden: usize,
    eps: f32,
) -> Result<MixerSpec> {
    let factor = |field: &str| -> Result<f32> { Ok(cfg.f64(field)?.unwrap_or(1.0) as f32) };
    let list = |field: &str, n: usize| -> Result<Vec<f32>> {
        match cfg.get(field) {
            None => Ok(vec![1.0; n]),
            Some(v) => v
                .as_array()
                .filter(|a| a.len() == n)
                .and_then(|a| a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect())
                .ok_or_else(|| CoreError::field(field, format!("must be a list of {n} numbers"))),
        }
    };
    let MixerSpec::Attention(mut a) = attention else {
        return Err(CoreError::field("layer_types", "falcon_h1 layers are attention beside Mamba2"));
    };
    let (attn_in, key) = (factor("attention_in_multiplier")?, factor("key_multiplier")?);
    a.q_proj = a.q_proj.scaled(attn_in);
    a.k_proj = a.k_proj.scaled(attn_in * key);
    a.v_proj = a.v_proj.scaled(attn_in);
    a.o_proj = a.o_proj.scaled(factor("attention_out_multiplier")?);
    let mlp_mult = list("mlp_multipliers", 2)?;
    if let MlpSpec::Gated(g) = mlp {
        g.gate = g.gate.clone().scaled(mlp_mult[0]);
        g.down = g.down.clone().scaled(mlp_mult[1]);
    }
    let mamba = mamba2(
        cfg,
        &format!("{prefix}.mamba"),
        hidden,
        eps,
        factor("ssm_in_multiplier")?,
        &list("ssm_multipliers", 5)?,
    )?;
    let mamba = Mamba2Spec { out_proj: mamba.out_proj.clone().scaled(factor("ssm_out_multiplier")?), ..mamba };
    Ok(MixerSpec::Parallel(vec![MixerSpec::Mamba2(mamba), MixerSpec::Attention(a)]))
}

/// Falcon-H1's Mamba2 mixer; `in_proj` rows `[z | x | B | C | dt]`, each part scaled by `ssm_in` times its muP factor.
fn mamba2(cfg: &Config, prefix: &str, hidden: usize, eps: f32, ssm_in: f32, mup: &[f32]) -> Result<Mamba2Spec> {
    let n_heads = cfg.usize("mamba_n_heads")?;
    let inner = match cfg.opt_usize("mamba_d_ssm")? {
        Some(d) => d,
        None => (cfg.f64("mamba_expand")?.unwrap_or(2.0) * hidden as f64) as usize,
    };
    let head_dim = cfg.opt_usize("mamba_d_head")?.unwrap_or(inner / n_heads);
    if head_dim * n_heads != inner {
        return Err(CoreError::field("mamba_d_head", format!("{n_heads} heads of {head_dim} do not make {inner}")));
    }
    let n_groups = cfg.opt_usize("mamba_n_groups")?.unwrap_or(1);
    let state_dim = cfg.usize("mamba_d_state")?;
    if n_heads % n_groups != 0 {
        return Err(CoreError::field("mamba_n_groups", format!("{n_groups} does not divide {n_heads} heads")));
    }
    let gn = n_groups * state_dim;
    let total = 2 * inner + 2 * gn + n_heads;
    let bias = cfg.bool("mamba_proj_bias").unwrap_or(false);
    let in_proj = format!("{prefix}.in_proj");
    let part = |offset: usize, width: usize, i: usize| {
        LinearSpec::part(&in_proj, hidden, bias, (1, total), offset, width).scaled(ssm_in * mup[i])
    };
    let norm = match cfg.bool("mamba_rms_norm") == Some(true) {
        true if cfg.bool("mamba_norm_before_gate") == Some(false) => {
            return Err(CoreError::Unsupported {
                what: "falcon_h1 option",
                name: "mamba_norm_before_gate=false".into(),
                supported: "mamba_norm_before_gate=true".into(),
            })
        }
        true => Some(NormSpec {
            weight: format!("{prefix}.norm.weight"),
            dim: inner / n_groups,
            eps,
            unit_offset: false,
            centered: false,
            bias: None,
        }),
        false => None,
    };
    let limit = cfg.get("time_step_limit").and_then(Value::as_array);
    let bound =
        |i: usize, default: f64| limit.and_then(|l| l.get(i)).and_then(float_or_infinity).unwrap_or(default) as f32;
    Ok(Mamba2Spec {
        n_heads,
        head_dim,
        n_groups,
        state_dim,
        z: part(0, inner, 0),
        xbc: [part(inner, inner, 1), part(2 * inner, gn, 2), part(2 * inner + gn, gn, 3)],
        dt: part(2 * inner + 2 * gn, n_heads, 4),
        conv: format!("{prefix}.conv1d.weight"),
        conv_bias: (cfg.bool("mamba_conv_bias") != Some(false)).then(|| format!("{prefix}.conv1d.bias")),
        conv_kernel: cfg.opt_usize("mamba_d_conv")?.unwrap_or(4),
        a_log: format!("{prefix}.A_log"),
        dt_bias: format!("{prefix}.dt_bias"),
        d: format!("{prefix}.D"),
        norm,
        dt_limit: (bound(0, 0.0), bound(1, f64::INFINITY)),
        out_proj: LinearSpec::new(
            &format!("{prefix}.out_proj"),
            hidden,
            inner,
            cfg.bool("projectors_bias") == Some(true),
        ),
    })
}

/// MiniMax's residual factors for a layer of type `ty` (each defaults to 1).
fn scaled_residuals(cfg: &Config, ty: LayerType) -> Result<ScaledResiduals> {
    let kind = if ty == LayerType::Linear { "linear_attn" } else { "full_attn" };
    let factor = |field: String| -> Result<f32> { Ok(cfg.f64(&field)?.unwrap_or(1.0) as f32) };
    Ok(ScaledResiduals {
        mixer: (factor(format!("{kind}_alpha_factor"))?, factor(format!("{kind}_beta_factor"))?),
        mlp: (factor("mlp_alpha_factor".into())?, factor("mlp_beta_factor".into())?),
    })
}

/// Whether layer `i` has a mixture-of-experts MLP: `mlp_layer_types` (Kimi), else Qwen's `mlp_only_layers` and
/// `decoder_sparse_step`, else every layer of a model with experts.
fn is_sparse_layer(cfg: &Config, i: usize) -> Result<bool> {
    if let Some(types) = cfg.get("mlp_layer_types") {
        let ty = types.as_array().and_then(|t| t.get(i)).and_then(Value::as_str);
        return match ty {
            Some("sparse") => Ok(true),
            Some("dense") => Ok(false),
            _ => Err(CoreError::field("mlp_layer_types", format!("entry {i} is not \"dense\" or \"sparse\""))),
        };
    }
    if cfg.opt_usize("first_k_dense_replace")?.is_some_and(|k| i < k) {
        return Ok(false);
    }
    let dense_only = cfg.get("mlp_only_layers").and_then(Value::as_array);
    if dense_only.is_some_and(|l| l.iter().any(|v| v.as_u64() == Some(i as u64))) {
        return Ok(false);
    }
    let step = cfg.opt_usize("decoder_sparse_step")?.unwrap_or(1);
    Ok((i + 1).is_multiple_of(step))
}

/// The MLP of layer `i` under `prefix` of the family's names: a mixture of experts when the config has experts and
/// the layer is sparse, else a dense gated MLP.
fn layer_mlp(cfg: &Config, family: &Family, i: usize, hidden: usize, act: Activation) -> Result<MlpSpec> {
    let names = &family.names;
    let p = format!("model.layers.{i}");
    let mlp_bias = cfg.bool("mlp_bias").unwrap_or(false);
    let n_experts = match cfg.opt_usize("num_experts")? {
        Some(n) => Some(n),
        None => cfg.opt_usize("num_local_experts")?,
    };
    let n_experts = match n_experts {
        Some(n) if is_sparse_layer(cfg, i)? => n,
        _ => {
            let dense = gated_mlp(&format!("{p}.{}", names.mlp), names, hidden, intermediate_size(cfg)?, mlp_bias, act);
            return Ok(MlpSpec::Gated(dense));
        }
    };
    if cfg.opt_usize("num_expert_group")?.unwrap_or(1) > 1 {
        return Err(CoreError::Unsupported {
            what: "MoE routing",
            name: "num_expert_group > 1".into(),
            supported: "ungrouped top-k routing".into(),
        });
    }
    let top_k = match cfg.opt_usize("num_experts_per_tok")? {
        Some(k) => k,
        None => cfg
            .usize("num_experts_per_token")
            .map_err(|_| CoreError::field("num_experts_per_tok", "is required for a MoE model"))?,
    };
    if top_k > n_experts {
        return Err(CoreError::field("num_experts_per_tok", format!("{top_k} exceeds the {n_experts} experts")));
    }
    let expert_width = match cfg.opt_usize("moe_intermediate_size")? {
        Some(w) => w,
        None => intermediate_size(cfg)?,
    };
    let m = format!("{p}.{}", names.moe);
    let expert_names = Naming { mlp_projs: names.expert_projs, ..*names };
    let experts = (0..n_experts)
        .map(|e| gated_mlp(&format!("{m}.experts.{e}"), &expert_names, hidden, expert_width, false, act))
        .collect();
    let shared_width = match cfg.opt_usize("shared_expert_intermediate_size")? {
        Some(w) => Some(w),
        None => cfg.opt_usize("num_shared_experts")?.map(|n| n * expert_width),
    };
    let shared = shared_width.map(|w| gated_mlp(&format!("{m}.{}", names.shared_expert), names, hidden, w, false, act));
    let shared_gate = (shared.is_some() && cfg.get("shared_expert_intermediate_size").is_some())
        .then(|| LinearSpec::new(&format!("{m}.shared_expert_gate"), 1, hidden, false));
    let (scoring, bias) = family.router;
    Ok(MlpSpec::Moe(Box::new(MoeSpec {
        router: LinearSpec::new(&format!("{m}.gate"), n_experts, hidden, false),
        scoring,
        selection_bias: bias.then(|| format!("{m}.gate.e_score_correction_bias")),
        top_k,
        normalize: cfg.bool("norm_topk_prob").or(cfg.bool("moe_renormalize")).unwrap_or(true),
        scale: cfg.f64("routed_scaling_factor")?.unwrap_or(1.0) as f32,
        experts,
        shared,
        shared_gate,
    })))
}

/// The attention masks a checkpoint declares, applied as its own: MiniCPM4.1's `sparse_config` (InfLLM-V2 on
/// every layer that attends to the whole context: `block_size`, `init_blocks`, `window_size`, `topk`,
/// `dense_len`, with `kernel_size` = block / 2 and `kernel_stride` = block / 4) and Ternlight's own
/// `ternlight_attention`, an attention-policy string (`sliding:512+sinks:4`, `layers:0-5=full,6-23=sparse:infllmv2`,
/// see [`AttentionPolicy`]), so a checkpoint trained with these masks loads without code changes.
fn declared_attention(cfg: &Config, spec: ModelSpec) -> Result<ModelSpec> {
    let spec = match cfg.get("sparse_config").filter(|v| !v.is_null()) {
        None => spec,
        Some(v) => {
            let sparse = Config(v);
            let field = |name: &str| {
                sparse.opt_usize(name)?.ok_or_else(|| CoreError::field("sparse_config", format!("needs `{name}`")))
            };
            let (block, kernel, stride) = (field("block_size")?, field("kernel_size")?, field("kernel_stride")?);
            if kernel * 2 != block || stride * 4 != block {
                return Err(CoreError::field(
                    "sparse_config",
                    format!("kernel {kernel} / stride {stride} for blocks of {block}: only block/2 and block/4 run"),
                ));
            }
            let text = format!(
                "sparse:infllmv2@{}+block:{block}+topk:{}+local:{}+init:{}",
                field("dense_len")?,
                field("topk")?,
                field("window_size")? / block,
                field("init_blocks")?
            );
            AttentionPolicy::parse(&text)?.apply(&spec)?
        }
    };
    let spec = match cfg.get("ternlight_attention") {
        None => spec,
        Some(Value::String(text)) => AttentionPolicy::parse(text)?.apply(&spec)?,
        Some(_) => return Err(CoreError::field("ternlight_attention", "must be an attention-policy string")),
    };
    declared_mixers(cfg, spec)
}

/// Mixers a checkpoint places in its schedule beyond its family's own, in `"ternlight_mixers"`:
/// `"moh": {"layers": [...], "shared_heads": S, "top_k": K}` weights those layers' heads per token (Mixture-of-Head
/// attention, [`MohSpec`]; routers `self_attn.wg.weight` `[heads - S, hidden]`, `self_attn.wg_1.weight`
/// `[S, hidden]` when `S > 1`, `self_attn.wg_0.weight` `[2, hidden]`, no biases), and `"differential_attention": [layers]` turns those softmax-attention layers into differential attention
/// ([`DifferentialSpec`]): the projections keep their shapes, config heads `2h, 2h + 1` (query and kv alike, as
/// many kv heads as query heads) form differential head `h`, and the layer reads `self_attn.lambda_q1`, `lambda_k1`, `lambda_q2`, `lambda_k2`
/// (`head_dim` each) and `self_attn.subln.weight` (`2 * head_dim`, an RMSNorm with the model's epsilon).
/// A Based (Taylor map) or Hedgehog (learned softmax map) layer in place of softmax attention, normalised, no output
/// norm: `q_proj`, `k_proj` `[heads * feature_dim, hidden]`, `v_proj` `[hidden, hidden]` split over the heads, `o_proj`,
/// and for Hedgehog `feature_map_q.layer` and `feature_map_k.layer` `[feature_dim, feature_dim]` with bias. Settings:
/// `heads` (the attention's by default) and `feature_dim` (16 for Based, the head size for Hedgehog).
fn feature_mapped(name: &str, a: &AttentionSpec, prefix: &str, settings: &Config) -> Result<LinearAttnSpec> {
    let bad = |why: String| CoreError::field("ternlight_mixers", why);
    let hidden = a.q_proj.in_features;
    let heads = settings.opt_usize("heads")?.unwrap_or(a.n_heads);
    let taylor = name == "based";
    let dk = settings.opt_usize("feature_dim")?.unwrap_or(if taylor { 16 } else { hidden / heads.max(1) });
    let feature = if taylor {
        FeatureMap::Taylor
    } else {
        let layer = |which: &str| LinearSpec::new(&format!("{prefix}.feature_map_{which}.layer"), dk, dk, true);
        FeatureMap::Hedgehog(Box::new([layer("q"), layer("k")]))
    };
    let features = feature.features(dk);
    if heads == 0 || !hidden.is_multiple_of(heads) || dk == 0 || features > 256 {
        return Err(bad(format!(
            "`{name}`: {heads} heads over {hidden} channels with feature dim {dk} ({features} features, at most 256)"
        )));
    }
    let lin = |n: &str, out, input| LinearSpec::new(&format!("{prefix}.{n}"), out, input, false);
    Ok(LinearAttnSpec {
        n_heads: heads,
        head_k_dim: dk,
        head_v_dim: hidden / heads,
        qkv: vec![lin("q_proj", heads * dk, hidden), lin("k_proj", heads * dk, hidden), lin("v_proj", hidden, hidden)],
        feature,
        normalize: true,
        scale: 1.0,
        norm: None,
        out_proj: lin("o_proj", hidden, hidden),
    })
}

/// A RAT layer in place of softmax attention: `in_proj` `[3 hidden + 2 groups head_dim, hidden]` (z, x, g, q, k),
/// `gate_bias` `[hidden]`, `out_proj`, the attention's RoPE base at chunk positions. Settings: `chunk_size` (64),
/// `groups` (2), `heads` (the attention's).
fn rat_layer(a: &AttentionSpec, prefix: &str, settings: &Config) -> Result<RatSpec> {
    let bad = |why: String| CoreError::field("ternlight_mixers", why);
    let hidden = a.q_proj.in_features;
    let heads = settings.opt_usize("heads")?.unwrap_or(a.n_heads);
    let groups = settings.opt_usize("groups")?.unwrap_or(2);
    let chunk = settings.opt_usize("chunk_size")?.unwrap_or(64);
    let head_dim = hidden.checked_div(heads).unwrap_or(0);
    if head_dim == 0
        || heads * head_dim != hidden
        || groups == 0
        || heads % groups != 0
        || chunk == 0
        || head_dim % 2 != 0
    {
        return Err(bad(format!(
            "`rat`: {heads} heads over {hidden} channels (even head size), {groups} q/k groups dividing the heads, \
             chunk {chunk}"
        )));
    }
    let rope = a.rope.clone().ok_or_else(|| bad("`rat` takes its RoPE base from the attention it replaces".into()))?;
    let lin = |n: &str, out, input| LinearSpec::new(&format!("{prefix}.{n}"), out, input, false);
    Ok(RatSpec {
        hidden,
        n_heads: heads,
        head_dim,
        groups,
        chunk,
        in_proj: lin("in_proj", 3 * hidden + 2 * groups * head_dim, hidden),
        gate_bias: format!("{prefix}.gate_bias"),
        rope: RopeSpec { rotary_dim: head_dim, ..rope },
        out_proj: lin("out_proj", hidden, hidden),
    })
}

fn declared_mixers(cfg: &Config, mut spec: ModelSpec) -> Result<ModelSpec> {
    let Some(mixers) = cfg.get("ternlight_mixers") else { return Ok(spec) };
    let bad = |why: String| CoreError::field("ternlight_mixers", why);
    let object = mixers.as_object().ok_or_else(|| bad("must be an object of mixer name to layer list".into()))?;
    for (name, value) in object {
        // A layer list, or for MoH `{"layers": [...], "shared_heads": S, "top_k": K}`.
        let (layers, settings) = match value {
            Value::Object(o) => (o.get("layers"), Config(value)),
            other => (Some(other), Config(&Value::Null)),
        };
        let list = layers.and_then(Value::as_array).ok_or_else(|| bad(format!("`{name}` must list layer indices")))?;
        for v in list {
            let i = v.as_u64().map(|i| i as usize).ok_or_else(|| bad(format!("`{v}` is not a layer index")))?;
            let eps = spec.final_norm.eps;
            let layer = spec.layers.get_mut(i).ok_or_else(|| bad(format!("layer {i} is past the schedule")))?;
            let MixerSpec::Attention(a) = &mut layer.mixer else {
                return Err(bad(format!("layer {i} is not softmax attention")));
            };
            let prefix = a.o_proj.weight.rsplit_once('.').map_or("", |p| p.0).rsplit_once('.').map_or("", |p| p.0);
            match name.as_str() {
                "differential_attention" => {}
                "rat" => {
                    layer.mixer = MixerSpec::Rat(rat_layer(a, prefix, &settings)?);
                    continue;
                }
                "based" | "hedgehog" => {
                    layer.mixer = MixerSpec::LinearAttn(feature_mapped(name, a, prefix, &settings)?);
                    continue;
                }
                "moh" => {
                    let shared = settings.opt_usize("shared_heads")?.unwrap_or(0);
                    let top_k = settings.opt_usize("top_k")?.ok_or_else(|| bad("`moh` needs `top_k`".into()))?;
                    if shared > a.n_heads || top_k == 0 || top_k > a.n_heads - shared {
                        return Err(bad(format!(
                            "layer {i}: MoH with {shared} shared heads and top {top_k} of {} heads",
                            a.n_heads
                        )));
                    }
                    let hidden = a.q_proj.in_features;
                    let router = |n: &str, out| LinearSpec::new(&format!("{prefix}.{n}"), out, hidden, false);
                    let mut routers = vec![router("wg", a.n_heads - shared)];
                    if shared > 1 {
                        routers.push(router("wg_1", shared));
                    }
                    routers.push(router("wg_0", 2));
                    a.head_routing = Some(MohSpec { shared, top_k, routers });
                    continue;
                }
                _ => {
                    return Err(bad(format!(
                        "unknown mixer `{name}` (known: differential_attention, moh, based, hedgehog, rat)"
                    )))
                }
            }
            // The reference code's repeat_kv gives grouped kv heads a different pairing; only MHA maps exactly.
            if a.n_heads % 2 != 0 || a.n_kv_heads != a.n_heads || a.qk_norm.is_some() || a.gate_proj.is_some() {
                return Err(bad(format!(
                    "layer {i}: differential attention pairs heads (needs an even count of query heads, as many kv \
                     heads, no q/k norm or output gate; has {} and {})",
                    a.n_heads, a.n_kv_heads
                )));
            }
            let lambda = ["lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"].map(|l| format!("{prefix}.{l}"));
            let dim = 2 * a.head_dim;
            a.sub_norm = Some(NormSpec {
                weight: format!("{prefix}.subln.weight"),
                dim,
                eps,
                unit_offset: false,
                centered: false,
                bias: None,
            });
            a.differential = Some(DifferentialSpec { lambda, lambda_init: 0.8 - 0.6 * (-0.3 * i as f32).exp() });
            a.n_heads /= 2;
            a.n_kv_heads /= 2;
            a.head_dim = dim;
        }
    }
    Ok(spec)
}

impl ModelSpec {
    /// Parses the text of a `config.json`.
    pub fn from_config_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| CoreError::Json { path: "config.json".into(), message: e.to_string() })?;
        Self::from_config(&value)
    }

    /// Builds the spec from a parsed `config.json`, with the attention masks it declares (see
    /// [`declared_attention`]).
    pub fn from_config(value: &Value) -> Result<Self> {
        let cfg = Config(value);
        let schedule = Self::schedule_from_config(cfg)?;
        let spec = declared_attention(&cfg, schedule)?;
        spec.check_sizes()?;
        Ok(spec)
    }

    /// Refuses configs whose tensors could not be addressed: more than [`MAX_ELEMENTS`] elements in one tensor.
    fn check_sizes(&self) -> Result<()> {
        for d in self.tensors() {
            let elements = d.shape.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n as u64));
            if elements.is_none_or(|e| e > MAX_ELEMENTS) {
                return Err(CoreError::InvalidInput(format!(
                    "config.json: tensor `{}` would have shape {:?}, over the {MAX_ELEMENTS}-element cap",
                    d.name, d.shape
                )));
            }
        }
        Ok(())
    }

    fn schedule_from_config(cfg: Config) -> Result<Self> {
        let model_type =
            cfg.str("model_type").ok_or_else(|| CoreError::field("model_type", "is required but missing"))?;
        if fla::claims(&cfg, model_type) {
            return fla::spec(&cfg, model_type);
        }
        let family =
            FAMILIES.iter().find(|f| f.model_types.contains(&model_type)).ok_or_else(|| CoreError::Unsupported {
                what: "model_type",
                name: model_type.to_string(),
                supported: supported_model_types().join(", "),
            })?;

        let hidden = cfg.usize("hidden_size")?;
        let vocab = cfg.usize("vocab_size")?;
        let n_layers = cfg.usize("num_hidden_layers")?;
        let n_heads = cfg.usize("num_attention_heads")?;
        let n_kv_heads = cfg.opt_usize("num_key_value_heads")?.unwrap_or(n_heads);
        if n_heads % n_kv_heads != 0 {
            return Err(CoreError::field(
                "num_key_value_heads",
                format!("{n_kv_heads} does not divide num_attention_heads {n_heads}"),
            ));
        }
        let head_dim = match cfg.opt_usize("head_dim")? {
            Some(d) => d,
            None if hidden % n_heads == 0 => hidden / n_heads,
            None => {
                return Err(CoreError::field(
                    "head_dim",
                    "is missing and hidden_size is not a multiple of the head count",
                ))
            }
        };
        let names = &family.names;
        let eps = cfg.f64(names.eps_field)?.unwrap_or(1e-6) as f32;
        let act = Activation::from_hf(cfg.str(family.act_field).or(cfg.str("hidden_act")).unwrap_or("silu"))?;
        let attn_bias = cfg.bool("attention_bias").unwrap_or(false);
        let scale_base = match family.attn_scale_field {
            Some(f) => cfg.f64(f)?.unwrap_or(head_dim as f64),
            None => head_dim as f64,
        };
        let scale = (1.0 / scale_base.sqrt()) as f32;
        let window = cfg.opt_usize("sliding_window")?;

        let norm = |weight: String, dim: usize| NormSpec {
            weight,
            dim,
            eps,
            unit_offset: family.unit_offset_norms,
            centered: false,
            bias: None,
        };
        let schedule = layer_schedule(&cfg, n_layers, family)?;
        let ternary = bitnet_projection(&cfg, family.bitnet)?;
        let mut layers = Vec::with_capacity(n_layers);
        let dims = AttentionDims {
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            bias: attn_bias,
            scale,
            output_gate: family.attn_output_gate,
            qk_norm_whole: family.qk_norm_whole,
        };
        for (i, ty) in schedule.into_iter().enumerate() {
            let p = format!("model.layers.{i}");
            let mixer = match ty {
                LayerType::Linear => match family.linear_mixer {
                    Some(LinearMixer::GatedDeltaNet(layout)) => MixerSpec::GatedDeltaNet(qwen_gated_deltanet(
                        &cfg,
                        layout,
                        &format!("{p}.linear_attn"),
                        hidden,
                        eps,
                    )?),
                    Some(LinearMixer::Kda) => MixerSpec::GatedDeltaNet(kimi_delta_attention(
                        &cfg,
                        &format!("{p}.{}", names.attn),
                        hidden,
                        eps,
                    )?),
                    _ => MixerSpec::Lightning(lightning(&dims, &format!("{p}.{}", names.attn), i, n_layers)),
                },
                LayerType::Full if family.mla => MixerSpec::Mla(mla(&cfg, &format!("{p}.{}", names.attn), &dims, eps)?),
                LayerType::Conv => MixerSpec::ShortConv(lfm2_short_conv(&cfg, &format!("{p}.conv"), hidden)?),
                LayerType::Full | LayerType::Sliding => {
                    let window = match ty {
                        LayerType::Sliding => Some(window.ok_or_else(|| {
                            CoreError::field(
                                "sliding_window",
                                format!("is required because layer {i} is sliding_attention"),
                            )
                        })?),
                        _ => None,
                    };
                    let qk: Option<&dyn Fn(String, usize) -> NormSpec> =
                        if family.qk_norm { Some(&norm) } else { None };
                    MixerSpec::Attention(attention(
                        &format!("{p}.{}", names.attn),
                        names,
                        &dims,
                        qk,
                        Some(rope_for(&cfg, ty, head_dim)?),
                        window,
                    ))
                }
            };
            let mut mlp = layer_mlp(&cfg, family, i, hidden, act)?;
            let mut mixer = match family.parallel_mamba {
                true => falcon_mup(&cfg, &p, mixer, &mut mlp, hidden, eps)?,
                false => mixer,
            };
            if family.bitnet {
                bitnet_sub_norms(&p, &mut mixer, &mut mlp, &norm)?;
            }
            let named = |n: &str| Some(norm(format!("{p}.{n}.weight"), hidden));
            let norms = match family.attention_post_norms {
                Some((post_mixer, post_mlp)) if ty != LayerType::Linear => BlockNorms {
                    pre_mixer: None,
                    post_mixer: named(post_mixer),
                    pre_mlp: None,
                    post_mlp: named(post_mlp),
                },
                _ if family.sandwich_norms => BlockNorms {
                    pre_mixer: named("input_layernorm"),
                    post_mixer: named("post_attention_layernorm"),
                    pre_mlp: named("pre_feedforward_layernorm"),
                    post_mlp: named("post_feedforward_layernorm"),
                },
                _ => BlockNorms {
                    pre_mixer: named(names.norms.0),
                    post_mixer: None,
                    pre_mlp: named(names.norms.1),
                    post_mlp: None,
                },
            };
            let residuals = family.scaled_residuals.then(|| scaled_residuals(&cfg, ty)).transpose()?;
            let mut layer = LayerSpec { mixer, mlp, norms, residuals };
            if let Some(make_ternary) = &ternary {
                layer.matrices_mut().into_iter().try_for_each(make_ternary)?;
            }
            layers.push(layer);
        }

        let tied = cfg.bool("tie_word_embeddings").unwrap_or(family.tied_by_default);
        let embed = "model.embed_tokens.weight".to_string();
        Ok(ModelSpec {
            model_type: model_type.to_string(),
            hidden,
            vocab,
            embed: embed.clone(),
            embed_norm: None,
            embed_scale: match cfg.f64("embedding_multiplier")? {
                Some(m) => Some(m as f32),
                None => family.scaled_embeddings.then(|| (hidden as f32).sqrt()),
            },
            layers,
            final_norm: norm(names.final_norm.into(), hidden),
            lm_head: if tied { embed } else { "lm_head.weight".into() },
            logit_scale: cfg.f64("lm_head_multiplier")?.unwrap_or(1.0) as f32,
            tied_embeddings: tied,
            max_positions: cfg.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            bos_token_id: cfg.token_ids("bos_token_id").first().copied(),
            eos_token_ids: cfg.token_ids("eos_token_id"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "llama", "hidden_size": 64, "vocab_size": 256, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "rope_theta": 10000.0})
    }

    #[test]
    fn llama_config_gives_a_two_layer_schedule() {
        let spec = ModelSpec::from_config(&base()).unwrap();
        assert_eq!(spec.layers.len(), 2);
        let MixerSpec::Attention(a) = &spec.layers[0].mixer else { panic!("attention") };
        assert_eq!((a.n_heads, a.n_kv_heads, a.head_dim), (4, 2, 16));
        assert_eq!(a.k_proj.out_features, 32);
        assert_eq!(spec.lm_head, "lm_head.weight");
        assert_eq!(spec.parameter_count(), 256 * 64 * 2 + 64 + 2 * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 3 * 128 * 64));
    }

    #[test]
    fn tensor_groups_are_the_embedding_each_layer_and_the_head() {
        let spec = ModelSpec::from_config(&base()).unwrap();
        let groups = spec.tensor_groups();
        assert_eq!(groups.len(), spec.layers.len() + 2);
        assert_eq!(groups[0][0].name, spec.embed);
        for (i, group) in groups[1..=spec.layers.len()].iter().enumerate() {
            let prefix = format!("model.layers.{i}.");
            assert!(group.iter().all(|d| d.name.starts_with(&prefix)), "layer {i}: {group:?}");
        }
        assert!(groups.last().unwrap().iter().any(|d| d.name == spec.final_norm.weight));
        let names = |d: &[TensorDecl]| d.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&groups.concat()), names(&spec.tensors()));
    }

    #[test]
    fn hybrid_gated_flow_declares_its_tensors_beside_each_ternary_weight() {
        let mut c = base();
        c["model_type"] = json!("bitnet");
        c["quantization_config"] = json!({"quant_method": "bitnet", "hgf": {"rank": 4}});
        let spec = ModelSpec::from_config(&c).unwrap();
        let MixerSpec::Attention(a) = &spec.layers[1].mixer else { panic!("attention") };
        let h = a.k_proj.hgf.as_ref().unwrap();
        assert_eq!((h.rank, h.per_channel), (4, false));
        assert_eq!(h.lora_a, "model.layers.1.self_attn.k_proj.lora_A");
        let decls = spec.tensors();
        let shape = |n: &str| decls.iter().find(|d| d.name == n).map(|d| d.shape.clone());
        assert_eq!(shape("model.layers.1.self_attn.k_proj.lora_B"), Some(vec![32, 4]));
        assert_eq!(shape("model.layers.1.self_attn.k_proj.hgf_gate"), Some(vec![1]));
        for (hgf, expect) in [(json!({"rank": 4, "gate": "row"}), "`row`"), (json!({"rank": 0}), "positive integer")] {
            c["quantization_config"]["hgf"] = hgf;
            let e = ModelSpec::from_config(&c).unwrap_err().to_string();
            assert!(e.contains("quantization_config.hgf") && e.contains(expect), "{e}");
        }
    }

    #[test]
    fn any_family_with_a_bitnet_quantization_config_has_ternary_matrices() {
        let config = include_str!("../../../../tests/fixtures/qwen3_5/config.json");
        let mut c: Value = serde_json::from_str(config).unwrap();
        c["quantization_config"] = json!({"quant_method": "bitnet", "linear_class": "bitlinear", "hgf": {"rank": 2}});
        let spec = ModelSpec::from_config(&c).unwrap();
        let ternary = |l: &LayerSpec| l.matrices().iter().filter(|m| m.ternary.is_some()).count();
        let MixerSpec::GatedDeltaNet(g) = &spec.layers[0].mixer else { panic!("Gated DeltaNet") };
        // in_proj_qkv, in_proj_z, out_proj and the MLP's three; the per-head decay and beta stay full precision.
        assert_eq!(ternary(&spec.layers[0]), 6);
        assert!(g.b_proj.ternary.is_none() && g.decay.as_ref().unwrap().a_proj.ternary.is_none());
        // The gated q_proj's query and gate rows share one stored tensor, its codes and its correction.
        let MixerSpec::Attention(a) = &spec.layers[3].mixer else { panic!("attention") };
        assert_eq!(ternary(&spec.layers[3]), 8);
        let gate = a.gate_proj.as_ref().unwrap();
        assert_eq!(gate.hgf.as_ref().unwrap().lora_b, a.q_proj.hgf.as_ref().unwrap().lora_b);
        let decls = spec.tensors();
        let shape = |n: &str| decls.iter().find(|d| d.name == n).map(|d| (d.shape.clone(), d.packed));
        assert_eq!(shape("model.layers.3.self_attn.q_proj.weight"), Some((vec![32, 64], true)));
        assert_eq!(shape("model.layers.3.self_attn.q_proj.lora_B"), Some((vec![128, 2], false)));
        assert_eq!(shape("model.layers.0.linear_attn.in_proj_b.weight"), Some((vec![4, 64], false)));
        c["quantization_config"] = json!({"quant_method": "gptq"});
        assert!(ModelSpec::from_config(&c).unwrap().layers.iter().all(|l| ternary(l) == 0));
    }

    #[test]
    fn unknown_model_type_lists_the_supported_ones() {
        let mut c = base();
        c["model_type"] = json!("mamba9");
        let e = ModelSpec::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("mamba9") && e.contains("llama") && e.contains("gemma3_text"), "{e}");
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let mut c = base();
        c.as_object_mut().unwrap().remove("hidden_size");
        assert!(ModelSpec::from_config(&c).unwrap_err().to_string().contains("hidden_size"));
        let mut c = base();
        c["num_attention_heads"] = json!("four");
        assert!(ModelSpec::from_config(&c).unwrap_err().to_string().contains("num_attention_heads"));
        let mut c = base();
        c["num_key_value_heads"] = json!(3);
        assert!(ModelSpec::from_config(&c).unwrap_err().to_string().contains("num_key_value_heads"));
        assert!(ModelSpec::from_config_json("{not json").unwrap_err().to_string().contains("config.json"));
    }

    #[test]
    fn unknown_layer_type_is_named() {
        let mut c = base();
        c["layer_types"] = json!(["full_attention", "linear_attention"]);
        let e = ModelSpec::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("linear_attention") && e.contains("sliding_attention"), "{e}");
    }

    #[test]
    fn lfm2_schedule_names_and_auto_adjusted_ffn_width() {
        let mut c = base();
        c["model_type"] = json!("lfm2");
        c["layer_types"] = json!(["conv", "full_attention"]);
        c["norm_eps"] = json!(1e-5);
        c["block_auto_adjust_ff_dim"] = json!(true);
        c["intermediate_size"] = json!(6656);
        let spec = ModelSpec::from_config(&c).unwrap();
        assert!(
            matches!(&spec.layers[0].mixer, MixerSpec::ShortConv(s) if s.kernel == 3 && s.in_proj[2].row_indices()[0] == 128)
        );
        let MlpSpec::Gated(mlp) = &spec.layers[1].mlp else { panic!("dense MLP") };
        assert_eq!((mlp.gate.out_features, mlp.gate.weight.as_str()), (4608, "model.layers.1.feed_forward.w1.weight"));
        assert_eq!(spec.final_norm.weight, "model.embedding_norm.weight");
        assert_eq!(spec.final_norm.eps, 1e-5);
        let MixerSpec::Attention(a) = &spec.layers[1].mixer else { panic!("attention") };
        assert_eq!(a.o_proj.weight, "model.layers.1.self_attn.out_proj.weight");
    }

    #[test]
    fn gemma_rope_theta_per_layer_type_and_window() {
        let mut c = base();
        c["model_type"] = json!("gemma3_text");
        c["sliding_window"] = json!(16);
        c["query_pre_attn_scalar"] = json!(256);
        c["layer_types"] = json!(["sliding_attention", "full_attention"]);
        c["rope_parameters"] = json!({"full_attention": {"rope_theta": 1e6, "rope_type": "default"},
                                      "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}});
        let spec = ModelSpec::from_config(&c).unwrap();
        let MixerSpec::Attention(a0) = &spec.layers[0].mixer else { panic!("attention") };
        let MixerSpec::Attention(a1) = &spec.layers[1].mixer else { panic!("attention") };
        assert_eq!((a0.mask.window, a1.mask.window), (Some(16), None));
        assert_eq!((a0.rope.as_ref().unwrap().theta, a1.rope.as_ref().unwrap().theta), (1e4, 1e6));
        assert_eq!(a0.scale, 1.0 / 16.0);
        assert!(spec.tied_embeddings && spec.embed_scale == Some(8.0));
        assert!(spec.layers[0].norms.post_mlp.as_ref().unwrap().unit_offset);
    }

    #[test]
    fn configs_declare_sparse_and_streaming_attention() {
        let mut c = base();
        c["sparse_config"] = json!({"kernel_size": 32, "kernel_stride": 16, "init_blocks": 1, "block_size": 64,
                                    "window_size": 2048, "topk": 64, "use_nope": false, "dense_len": 8192});
        let spec = ModelSpec::from_config(&c).unwrap();
        assert!(spec.attention_layers().all(|a| a.mask.sparse == Some(BlockSparse::MINICPM4)));
        c["sparse_config"]["kernel_size"] = json!(16);
        let e = ModelSpec::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("sparse_config") && e.contains("block/2"), "{e}");
        let mut c = base();
        c["ternlight_attention"] = json!("layers:1=sliding:8+sinks:2");
        let spec = ModelSpec::from_config(&c).unwrap();
        let masks: Vec<_> = spec.attention_layers().map(|a| (a.mask.window, a.mask.sinks)).collect();
        assert_eq!(masks, vec![(None, 0), (Some(8), 2)]);
        c["ternlight_attention"] = json!(3);
        assert!(ModelSpec::from_config(&c).unwrap_err().to_string().contains("ternlight_attention"));
        let mut c = base();
        c["ternlight_mixers"] = json!({"differential_attention": [0]});
        let e = ModelSpec::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("as many kv heads"), "grouped kv heads are refused: {e}");
        c["num_key_value_heads"] = c["num_attention_heads"].clone();
        let spec = ModelSpec::from_config(&c).unwrap();
        let MixerSpec::Attention(a) = &spec.layers[0].mixer else { panic!("attention") };
        let d = a.differential.as_ref().unwrap();
        assert_eq!(d.lambda[0], "model.layers.0.self_attn.lambda_q1");
        assert_eq!(d.lambda_init, 0.8 - 0.6);
        assert_eq!(a.sub_norm.as_ref().unwrap().weight, "model.layers.0.self_attn.subln.weight");
        assert!(spec.tensors().iter().any(|t| t.name.ends_with("lambda_k2") && t.shape == [a.head_dim / 2]));
        c["ternlight_mixers"] = json!({"moh": {"layers": [1], "shared_heads": 2}});
        assert!(ModelSpec::from_config(&c).unwrap_err().to_string().contains("needs `top_k`"));
        c["ternlight_mixers"] = json!({"moh": {"layers": [1], "shared_heads": 2, "top_k": 1}});
        let spec = ModelSpec::from_config(&c).unwrap();
        let MixerSpec::Attention(a) = &spec.layers[1].mixer else { panic!("attention") };
        let names: Vec<&str> = a.head_routing.as_ref().unwrap().routers.iter().map(|r| r.weight.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.layers.1.self_attn.wg.weight",
                "model.layers.1.self_attn.wg_1.weight",
                "model.layers.1.self_attn.wg_0.weight"
            ]
        );
        c["ternlight_mixers"] = json!({"mamba": [0]});
        assert!(ModelSpec::from_config(&c).unwrap_err().to_string().contains("unknown mixer `mamba`"));
    }

    #[test]
    fn qwen3_next_selects_interleaved_rows_and_sparse_layers() {
        let mut c = base();
        for (k, v) in [
            ("model_type", json!("qwen3_next")),
            ("layer_types", json!(["linear_attention", "full_attention"])),
            ("linear_num_key_heads", json!(2)),
            ("linear_num_value_heads", json!(4)),
            ("linear_key_head_dim", json!(3)),
            ("linear_value_head_dim", json!(5)),
            ("num_experts", json!(4)),
            ("num_experts_per_tok", json!(2)),
            ("moe_intermediate_size", json!(8)),
            ("shared_expert_intermediate_size", json!(16)),
            ("mlp_only_layers", json!([1])),
        ] {
            c[k] = v;
        }
        let spec = ModelSpec::from_config(&c).unwrap();
        let MixerSpec::GatedDeltaNet(g) = &spec.layers[0].mixer else { panic!("gated deltanet") };
        // Per key head: q 3 | k 3 | v 2x5 | z 2x5 = 26 rows.
        assert_eq!(g.in_proj[1].row_indices(), vec![3, 4, 5, 29, 30, 31]);
        assert_eq!(g.output_gate.as_ref().unwrap().proj.row_indices()[..2], [16, 17]);
        assert_eq!(g.decay.as_ref().unwrap().a_proj.row_indices(), vec![2, 3, 6, 7]);
        let MlpSpec::Moe(m) = &spec.layers[0].mlp else { panic!("layer 0 is sparse") };
        assert_eq!((m.experts.len(), m.top_k, m.expert_intermediate()), (4, 2, 8));
        assert!(m.shared_gate.is_some() && m.normalize);
        assert!(matches!(spec.layers[1].mlp, MlpSpec::Gated(_)), "mlp_only_layers makes layer 1 dense");
        let MixerSpec::Attention(a) = &spec.layers[1].mixer else { panic!("attention") };
        assert_eq!(a.gate_proj.as_ref().unwrap().row_indices()[..2], [16, 17]);
        let names: Vec<String> = spec.tensors().into_iter().map(|t| t.name).collect();
        assert_eq!(names.iter().filter(|n| n.ends_with("in_proj_qkvz.weight")).count(), 1);
    }
}
