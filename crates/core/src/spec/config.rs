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
};

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
    /// `linear_attention` layers are Gated DeltaNet with fused `in_proj_qkv` (Qwen3.5).
    pub gated_deltanet: bool,
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
    gated_deltanet: false,
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
        gated_deltanet: true,
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

/// Typed access to config.json fields with errors that name the field.
pub(crate) struct Config<'a>(pub(crate) &'a Value);

impl<'a> Config<'a> {
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }
    pub(crate) fn usize(&self, field: &str) -> Result<usize> {
        self.opt_usize(field)?.ok_or_else(|| CoreError::field(field, "is required but missing"))
    }
    pub(crate) fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| Some(n as usize))
                .ok_or_else(|| CoreError::field(field, format!("must be a positive integer, found {v}"))),
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
                Some("linear_attention") if family.gated_deltanet => Ok(LayerType::Linear),
                Some("conv") if family.short_conv => Ok(LayerType::Conv),
                _ => {
                    let mut supported = vec!["full_attention", "sliding_attention"];
                    supported.extend(family.gated_deltanet.then_some("linear_attention"));
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
    let q_width = d.n_heads * d.head_dim * if d.output_gate { 2 } else { 1 };
    AttentionSpec {
        n_heads: d.n_heads,
        n_kv_heads: d.n_kv_heads,
        head_dim: d.head_dim,
        q_proj: LinearSpec::new(&format!("{prefix}.q_proj"), q_width, d.hidden, d.bias),
        k_proj: LinearSpec::new(&format!("{prefix}.k_proj"), d.n_kv_heads * d.head_dim, d.hidden, d.bias),
        v_proj: LinearSpec::new(&format!("{prefix}.v_proj"), d.n_kv_heads * d.head_dim, d.hidden, d.bias),
        o_proj: LinearSpec::new(&format!("{prefix}.{}", names.attn_out), d.hidden, d.n_heads * d.head_dim, d.bias),
        qk_norm: qk_norm.map(|n| {
            let (qn, kn) = names.qk_norms;
            (n(format!("{prefix}.{qn}.weight"), d.head_dim), n(format!("{prefix}.{kn}.weight"), d.head_dim))
        }),
        rope,
        window,
        scale: d.scale,
        output_gate: d.output_gate,
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
) -> MlpSpec {
    let [g, u, d] = names.mlp_projs;
    MlpSpec::Gated {
        gate: LinearSpec::new(&format!("{prefix}.{g}"), intermediate, hidden, bias),
        up: LinearSpec::new(&format!("{prefix}.{u}"), intermediate, hidden, bias),
        down: LinearSpec::new(&format!("{prefix}.{d}"), hidden, intermediate, bias),
        act,
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
        in_proj: LinearSpec::new(&format!("{prefix}.in_proj"), 3 * hidden, hidden, false),
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

/// Qwen3.5's Gated DeltaNet layer (`linear_attn.*`, fused `in_proj_qkv` and one conv over it).
fn qwen_gated_deltanet(cfg: &Config, prefix: &str, hidden: usize, eps: f32) -> Result<GatedDeltaNetSpec> {
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
    let value = n_v_heads * head_v_dim;
    let qkv = 2 * n_k_heads * head_k_dim + value;
    Ok(GatedDeltaNetSpec {
        n_k_heads,
        n_v_heads,
        head_k_dim,
        head_v_dim,
        in_proj: vec![LinearSpec::new(&format!("{prefix}.in_proj_qkv"), qkv, hidden, false)],
        conv: vec![format!("{prefix}.conv1d.weight")],
        conv_kernel,
        z_proj: Some(LinearSpec::new(&format!("{prefix}.in_proj_z"), value, hidden, false)),
        decay: Some(DecaySpec {
            a_proj: LinearSpec::new(&format!("{prefix}.in_proj_a"), n_v_heads, hidden, false),
            a_log: format!("{prefix}.A_log"),
            dt_bias: format!("{prefix}.dt_bias"),
        }),
        b_proj: LinearSpec::new(&format!("{prefix}.in_proj_b"), n_v_heads, hidden, false),
        norm: NormSpec { weight: format!("{prefix}.norm.weight"), dim: head_v_dim, eps, unit_offset: false },
        out_proj: LinearSpec::new(&format!("{prefix}.out_proj"), hidden, value, false),
    })
}

impl ModelSpec {
    /// Parses the text of a `config.json`.
    pub fn from_config_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| CoreError::Json { path: "config.json".into(), message: e.to_string() })?;
        Self::from_config(&value)
    }

    /// Builds the spec from a parsed `config.json`.
    pub fn from_config(value: &Value) -> Result<Self> {
        let cfg = Config(value);
        let model_type =
            cfg.str("model_type").ok_or_else(|| CoreError::field("model_type", "is required but missing"))?;
        if fla::MODEL_TYPES.contains(&model_type) {
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
        let intermediate = intermediate_size(&cfg)?;
        let names = &family.names;
        let eps = cfg.f64(names.eps_field)?.unwrap_or(1e-6) as f32;
        let act = Activation::from_hf(cfg.str(family.act_field).or(cfg.str("hidden_act")).unwrap_or("silu"))?;
        let attn_bias = cfg.bool("attention_bias").unwrap_or(false);
        let mlp_bias = cfg.bool("mlp_bias").unwrap_or(false);
        let scale_base = match family.attn_scale_field {
            Some(f) => cfg.f64(f)?.unwrap_or(head_dim as f64),
            None => head_dim as f64,
        };
        let scale = (1.0 / scale_base.sqrt()) as f32;
        let window = cfg.opt_usize("sliding_window")?;

        let norm = |weight: String, dim: usize| NormSpec { weight, dim, eps, unit_offset: family.unit_offset_norms };
        let schedule = layer_schedule(&cfg, n_layers, family)?;
        let mut layers = Vec::with_capacity(n_layers);
        let dims = AttentionDims {
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            bias: attn_bias,
            scale,
            output_gate: family.attn_output_gate,
        };
        for (i, ty) in schedule.into_iter().enumerate() {
            let p = format!("model.layers.{i}");
            let mixer = match ty {
                LayerType::Linear => {
                    MixerSpec::GatedDeltaNet(qwen_gated_deltanet(&cfg, &format!("{p}.linear_attn"), hidden, eps)?)
                }
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
            let mlp = gated_mlp(&format!("{p}.{}", names.mlp), names, hidden, intermediate, mlp_bias, act);
            let norms = if family.sandwich_norms {
                BlockNorms {
                    pre_mixer: norm(format!("{p}.input_layernorm.weight"), hidden),
                    post_mixer: Some(norm(format!("{p}.post_attention_layernorm.weight"), hidden)),
                    pre_mlp: norm(format!("{p}.pre_feedforward_layernorm.weight"), hidden),
                    post_mlp: Some(norm(format!("{p}.post_feedforward_layernorm.weight"), hidden)),
                }
            } else {
                BlockNorms {
                    pre_mixer: norm(format!("{p}.{}.weight", names.norms.0), hidden),
                    post_mixer: None,
                    pre_mlp: norm(format!("{p}.{}.weight", names.norms.1), hidden),
                    post_mlp: None,
                }
            };
            layers.push(LayerSpec { mixer, mlp, norms });
        }

        let tied = cfg.bool("tie_word_embeddings").unwrap_or(family.tied_by_default);
        let embed = "model.embed_tokens.weight".to_string();
        Ok(ModelSpec {
            model_type: model_type.to_string(),
            hidden,
            vocab,
            embed: embed.clone(),
            embed_scale: family.scaled_embeddings.then(|| (hidden as f32).sqrt()),
            layers,
            final_norm: norm(names.final_norm.into(), hidden),
            lm_head: if tied { embed } else { "lm_head.weight".into() },
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
            matches!(&spec.layers[0].mixer, MixerSpec::ShortConv(s) if s.kernel == 3 && s.in_proj.out_features == 192)
        );
        let MlpSpec::Gated { gate, .. } = &spec.layers[1].mlp;
        assert_eq!((gate.out_features, gate.weight.as_str()), (4608, "model.layers.1.feed_forward.w1.weight"));
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
        assert_eq!((a0.window, a1.window), (Some(16), None));
        assert_eq!((a0.rope.as_ref().unwrap().theta, a1.rope.as_ref().unwrap().theta), (1e4, 1e6));
        assert_eq!(a0.scale, 1.0 / 16.0);
        assert!(spec.tied_embeddings && spec.embed_scale == Some(8.0));
        assert!(spec.layers[0].norms.post_mlp.as_ref().unwrap().unit_offset);
    }
}
