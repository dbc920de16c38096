//! fla (flash-linear-attention) model configs → [`ModelSpec`]. fla models name their layers `attn` /
//! `attn_norm` / `mlp_norm`, and hybrids list their softmax-attention layers in `attn.layers`.

use super::config::{attention, gated_mlp, AttentionDims, Config, HF_NAMES};
use super::*;
use crate::{CoreError, Result};
use serde_json::Value;

/// The fla `model_type` values Ternlight runs.
pub const MODEL_TYPES: &[&str] =
    &["gated_deltanet", "delta_net", "gla", "hgrn2", "linear_attn", "kda", "gsa", "bitnet", "rwkv7"];

/// Whether a config with this `model_type` is an fla model: fla and transformers both name a model `bitnet`; fla's
/// configs have `num_heads`, transformers' `num_attention_heads`.
pub(crate) fn claims(cfg: &Config, model_type: &str) -> bool {
    MODEL_TYPES.contains(&model_type) && (model_type != "bitnet" || cfg.get("num_attention_heads").is_none())
}

/// Fails unless `field` is absent or equals `want` (options Ternlight does not implement).
fn require(cfg: &Config, field: &str, want: impl Into<Value>) -> Result<()> {
    let want = want.into();
    match cfg.get(field) {
        Some(v) if *v != want => Err(CoreError::Unsupported {
            what: "fla option",
            name: format!("{field}={v}"),
            supported: format!("{field}={want}"),
        }),
        _ => Ok(()),
    }
}

/// `num_heads` heads over `hidden * expand_k` key and `hidden * expand_v` value channels (fla's DeltaNet, GLA and
/// linear attention); grouped key/value heads are refused.
fn head_layout(cfg: &Config, hidden: usize, default_expand_k: f64) -> Result<(usize, usize, usize)> {
    let heads = cfg.usize("num_heads")?;
    if cfg.opt_usize("num_kv_heads")?.is_some_and(|kv| kv != heads) {
        return Err(CoreError::Unsupported {
            what: "fla option",
            name: "num_kv_heads != num_heads".into(),
            supported: "num_kv_heads=null".into(),
        });
    }
    let key = (hidden as f64 * cfg.f64("expand_k")?.unwrap_or(default_expand_k)) as usize;
    let value = (hidden as f64 * cfg.f64("expand_v")?.unwrap_or(1.0)) as usize;
    if !key.is_multiple_of(heads) || !value.is_multiple_of(heads) {
        return Err(CoreError::field(
            "num_heads",
            format!("{heads} does not divide key dim {key} and value dim {value}"),
        ));
    }
    Ok((heads, key, value))
}

/// fla's DeltaNet layer: the delta rule without decay; `head_k_dim = hidden * expand_k / num_heads`.
fn delta_net(cfg: &Config, prefix: &str, hidden: usize, eps: f32) -> Result<GatedDeltaNetSpec> {
    for (field, want) in [("use_beta", true), ("use_short_conv", true), ("use_output_norm", true)] {
        require(cfg, field, want)?;
    }
    require(cfg, "qk_activation", "silu")?;
    require(cfg, "qk_norm", "l2")?;
    let (heads, key, value) = head_layout(cfg, hidden, 1.0)?;
    let lin = |name: &str, out: usize| LinearSpec::new(&format!("{prefix}.{name}"), out, hidden, false);
    Ok(GatedDeltaNetSpec {
        n_k_heads: heads,
        n_v_heads: heads,
        head_k_dim: key / heads,
        head_v_dim: value / heads,
        in_proj: vec![lin("q_proj", key), lin("k_proj", key), lin("v_proj", value)],
        conv: ["q_conv1d", "k_conv1d", "v_conv1d"].iter().map(|c| format!("{prefix}.{c}.weight")).collect(),
        conv_kernel: cfg.opt_usize("conv_size")?.unwrap_or(4),
        output_gate: (cfg.bool("use_gate") == Some(true)).then(|| silu_gate(lin("g_proj", value))),
        decay: None,
        b_proj: lin("b_proj", heads),
        beta_scale: beta_scale(cfg),
        norm: NormSpec {
            weight: format!("{prefix}.o_norm.weight"),
            dim: value / heads,
            eps,
            unit_offset: false,
            centered: false,
            bias: None,
        },
        out_proj: LinearSpec::new(&format!("{prefix}.o_proj"), hidden, value, false),
    })
}

/// A full-rank SiLU output gate.
pub(crate) fn silu_gate(proj: LinearSpec) -> OutputGate {
    OutputGate { down: None, proj, act: Activation::Silu }
}

/// `beta`'s multiplier: 2 when `allow_neg_eigval` lets the delta rule's eigenvalues go negative.
pub(crate) fn beta_scale(cfg: &Config) -> f32 {
    if cfg.bool("allow_neg_eigval").or(cfg.bool("linear_allow_neg_eigval")) == Some(true) {
        2.0
    } else {
        1.0
    }
}

/// A Gated DeltaNet layer in fla's naming under `prefix` (also OLMo hybrid's): separate q/k/v projections, each with
/// its own short conv, `a_proj`/`b_proj`, the `g_proj` output gate, `o_norm` and `o_proj`.
pub(crate) fn separate_gated_deltanet(
    prefix: &str,
    hidden: usize,
    (n_k_heads, n_v_heads, head_k_dim, head_v_dim): (usize, usize, usize, usize),
    conv_kernel: usize,
    norm_eps: f32,
    beta_scale: f32,
) -> GatedDeltaNetSpec {
    let key = n_k_heads * head_k_dim;
    let value = n_v_heads * head_v_dim;
    let lin = |name: &str, out: usize| LinearSpec::new(&format!("{prefix}.{name}"), out, hidden, false);
    GatedDeltaNetSpec {
        n_k_heads,
        n_v_heads,
        head_k_dim,
        head_v_dim,
        in_proj: vec![lin("q_proj", key), lin("k_proj", key), lin("v_proj", value)],
        conv: ["q_conv1d", "k_conv1d", "v_conv1d"].iter().map(|c| format!("{prefix}.{c}.weight")).collect(),
        conv_kernel,
        output_gate: Some(silu_gate(lin("g_proj", value))),
        decay: Some(DecaySpec {
            a_proj: lin("a_proj", n_v_heads),
            a_down: None,
            per_channel: false,
            a_log: format!("{prefix}.A_log"),
            dt_bias: format!("{prefix}.dt_bias"),
        }),
        b_proj: lin("b_proj", n_v_heads),
        beta_scale,
        norm: NormSpec {
            weight: format!("{prefix}.o_norm.weight"),
            dim: head_v_dim,
            eps: norm_eps,
            unit_offset: false,
            centered: false,
            bias: None,
        },
        out_proj: LinearSpec::new(&format!("{prefix}.o_proj"), hidden, value, false),
    }
}

/// fla's GatedDeltaNet layer under `prefix`.
fn gated_deltanet(cfg: &Config, prefix: &str, hidden: usize, eps: f32) -> Result<GatedDeltaNetSpec> {
    for (field, want) in [("use_gate", true), ("use_short_conv", true)] {
        require(cfg, field, want)?;
    }
    let n_k_heads = cfg.usize("num_heads")?;
    let n_v_heads = cfg.opt_usize("num_v_heads")?.unwrap_or(n_k_heads);
    let head_k_dim = cfg.usize("head_dim")?;
    let expand_v = cfg.f64("expand_v")?.unwrap_or(2.0);
    let head_v_dim = (head_k_dim as f64 * expand_v).round() as usize;
    if n_v_heads % n_k_heads != 0 {
        return Err(CoreError::field("num_v_heads", format!("{n_v_heads} is not a multiple of num_heads {n_k_heads}")));
    }
    let heads = (n_k_heads, n_v_heads, head_k_dim, head_v_dim);
    let conv = cfg.opt_usize("conv_size")?.unwrap_or(4);
    Ok(separate_gated_deltanet(prefix, hidden, heads, conv, eps, beta_scale(cfg)))
}

/// Tensor names of a Kimi Delta Attention layer's low-rank projections, which fla and Kimi spell differently.
pub(crate) struct KdaNames {
    /// Down and up halves of the decay projection.
    pub decay: (&'static str, &'static str),
    /// Down and up halves of the output-gate projection.
    pub gate: (&'static str, &'static str),
    /// Whether the gate's up half has a bias.
    pub gate_bias: bool,
}

/// A Kimi Delta Attention layer under `prefix`: fla-named q/k/v projections and convs, `b_proj`, the per-channel
/// decay from a low-rank projection (rank `head_v_dim`) with `A_log` per head and `dt_bias` per channel, and the
/// output norm gated by `sigmoid` of a low-rank projection.
pub(crate) fn kda_layer(
    prefix: &str,
    hidden: usize,
    (heads, dk, dv): (usize, usize, usize),
    conv_kernel: usize,
    (norm_eps, beta_scale): (f32, f32),
    names: &KdaNames,
) -> GatedDeltaNetSpec {
    let (key, value) = (heads * dk, heads * dv);
    let lin =
        |name: &str, out: usize, inp: usize, bias: bool| LinearSpec::new(&format!("{prefix}.{name}"), out, inp, bias);
    GatedDeltaNetSpec {
        n_k_heads: heads,
        n_v_heads: heads,
        head_k_dim: dk,
        head_v_dim: dv,
        in_proj: vec![
            lin("q_proj", key, hidden, false),
            lin("k_proj", key, hidden, false),
            lin("v_proj", value, hidden, false),
        ],
        conv: ["q_conv1d", "k_conv1d", "v_conv1d"].iter().map(|c| format!("{prefix}.{c}.weight")).collect(),
        conv_kernel,
        output_gate: Some(OutputGate {
            down: Some(lin(names.gate.0, dv, hidden, false)),
            proj: lin(names.gate.1, value, dv, names.gate_bias),
            act: Activation::Sigmoid,
        }),
        decay: Some(DecaySpec {
            a_proj: lin(names.decay.1, key, dv, false),
            a_down: Some(lin(names.decay.0, dv, hidden, false)),
            per_channel: true,
            a_log: format!("{prefix}.A_log"),
            dt_bias: format!("{prefix}.dt_bias"),
        }),
        b_proj: lin("b_proj", heads, hidden, false),
        beta_scale,
        norm: NormSpec {
            weight: format!("{prefix}.o_norm.weight"),
            dim: dv,
            eps: norm_eps,
            unit_offset: false,
            centered: false,
            bias: None,
        },
        out_proj: lin("o_proj", hidden, value, false),
    }
}

/// fla's KDA layer (`head_dim` per head, `expand_v` for values).
fn kda(cfg: &Config, prefix: &str, hidden: usize, eps: f32) -> Result<GatedDeltaNetSpec> {
    require(cfg, "use_short_conv", true)?;
    require(cfg, "safe_gate", false)?;
    require(cfg, "lower_bound", Value::Null)?;
    let heads = cfg.usize("num_heads")?;
    if cfg.opt_usize("num_v_heads")?.is_some_and(|v| v != heads) {
        return Err(CoreError::Unsupported {
            what: "fla option",
            name: "num_v_heads != num_heads".into(),
            supported: "as many value heads as key heads".into(),
        });
    }
    let dk = cfg.usize("head_dim")?;
    let dv = (dk as f64 * cfg.f64("expand_v")?.unwrap_or(1.0)).round() as usize;
    let names = KdaNames { decay: ("f_proj.0", "f_proj.1"), gate: ("g_proj.0", "g_proj.1"), gate_bias: true };
    let conv = cfg.opt_usize("conv_size")?.unwrap_or(4);
    Ok(kda_layer(prefix, hidden, (heads, dk, dv), conv, (eps, beta_scale(cfg)), &names))
}

/// fla's GatedSlotAttention layer (swish feature map, no short conv, no output gate, shared key/value heads).
fn gsa(cfg: &Config, prefix: &str, hidden: usize) -> Result<GsaSpec> {
    for (field, want) in [("use_short_conv", false), ("use_output_gate", false), ("use_norm", true)] {
        require(cfg, field, want)?;
    }
    require(cfg, "feature_map", "swish")?;
    let (heads, key, value) = head_layout(cfg, hidden, 1.0)?;
    let (dk, dv) = (key / heads, value / heads);
    let slots = cfg.opt_usize("num_slots")?.unwrap_or(dk);
    let lin = |name: &str, out: usize| LinearSpec::new(&format!("{prefix}.{name}"), out, hidden, false);
    Ok(GsaSpec {
        n_heads: heads,
        head_k_dim: dk,
        head_v_dim: dv,
        slots,
        qkv: [lin("q_proj", key), lin("k_proj", key), lin("v_proj", value)],
        f_proj: lin("f_proj", heads * slots),
        gate_normalizer: cfg.f64("gate_logit_normalizer")?.unwrap_or(8.0) as f32,
        scale: cfg.f64("scale")?.unwrap_or(1.0) as f32,
        // fla fuses this norm into the output projection with its default eps, whatever norm_eps says.
        norm: NormSpec {
            weight: format!("{prefix}.g_norm.weight"),
            dim: value,
            eps: 1e-5,
            unit_offset: false,
            centered: false,
            bias: None,
        },
        out_proj: LinearSpec::new(&format!("{prefix}.o_proj"), hidden, value, false),
    })
}

/// fla's GatedLinearAttention layer: `head_k_dim = hidden * expand_k / num_heads`, low-rank decay projection.
fn gla(cfg: &Config, prefix: &str, hidden: usize, eps: f32) -> Result<GlaSpec> {
    require(cfg, "use_short_conv", false)?;
    require(cfg, "gate_fn", "swish")?;
    for field in ["feature_map", "clamp_min"] {
        if let Some(v) = cfg.get(field) {
            return Err(CoreError::Unsupported {
                what: "fla option",
                name: format!("{field}={v}"),
                supported: format!("{field}=null"),
            });
        }
    }
    let (heads, key, value) = head_layout(cfg, hidden, 0.5)?;
    let rank = cfg.opt_usize("gate_low_rank_dim")?.unwrap_or(16);
    let lin = |name: &str, out: usize, input: usize, bias: bool| {
        LinearSpec::new(&format!("{prefix}.{name}"), out, input, bias)
    };
    Ok(GlaSpec {
        n_heads: heads,
        head_k_dim: key / heads,
        head_v_dim: value / heads,
        qkv: vec![
            lin("q_proj", key, hidden, false),
            lin("k_proj", key, hidden, false),
            lin("v_proj", value, hidden, false),
        ],
        gk_down: lin("gk_proj.0", rank, hidden, false),
        gk_up: lin("gk_proj.1", key, rank, true),
        gate_normalizer: cfg.f64("gate_logit_normalizer")?.unwrap_or(16.0) as f32,
        g_proj: (cfg.bool("use_output_gate") != Some(false)).then(|| lin("g_proj", value, hidden, false)),
        norm: NormSpec {
            weight: format!(
                "{prefix}.{}.weight",
                if cfg.bool("use_output_gate") != Some(false) { "g_norm_swish_gate" } else { "g_norm" }
            ),
            dim: value / heads,
            eps,
            unit_offset: false,
            centered: false,
            bias: None,
        },
        out_proj: LinearSpec::new(&format!("{prefix}.o_proj"), hidden, value, false),
    })
}

/// fla's HGRN2 layer (`expand_ratio` channels per head; lower bounds from `model.lower_bounds`).
fn hgrn2(cfg: &Config, prefix: &str, hidden: usize, layer: usize, layers: usize) -> Result<Hgrn2Spec> {
    require(cfg, "use_short_conv", false)?;
    let ratio = match cfg.opt_usize("expand_ratio")? {
        Some(r) => r,
        None => hidden / cfg.usize("num_heads")?,
    };
    if ratio == 0 || !hidden.is_multiple_of(ratio) {
        return Err(CoreError::field("expand_ratio", format!("{ratio} does not divide hidden_size {hidden}")));
    }
    let heads = hidden / ratio;
    let lin = |name: &str, out: usize, input: usize| LinearSpec::new(&format!("{prefix}.{name}"), out, input, false);
    Ok(Hgrn2Spec {
        n_heads: heads,
        head_f_dim: ratio,
        head_i_dim: hidden / heads,
        q_proj: lin("q_proj", hidden, hidden),
        f_proj: lin("f_proj", hidden, hidden),
        i_proj: lin("i_proj", hidden, hidden),
        // fla applies this norm through `rms_norm_linear` without passing `norm_eps`: its default 1e-5 holds.
        norm: NormSpec {
            weight: format!("{prefix}.g_norm.weight"),
            dim: hidden,
            eps: 1e-5,
            unit_offset: false,
            centered: false,
            bias: None,
        },
        out_proj: lin("o_proj", hidden, hidden),
        lower_bound: (cfg.bool("use_lower_bound") != Some(false))
            .then(|| ("model.lower_bounds".to_string(), layer, layers)),
    })
}

/// fla's LinearAttention layer with the `elementwise_product` (Hadamard) feature map.
fn linear_attn(cfg: &Config, prefix: &str, hidden: usize, eps: f32) -> Result<LinearAttnSpec> {
    require(cfg, "feature_map", "elementwise_product")?;
    require(cfg, "output_norm", "rmsnorm")?;
    for field in ["tie_feature_map_qk", "norm_q", "norm_k", "norm_feature_map", "do_feature_map_norm"] {
        require(cfg, field, false)?;
    }
    let (heads, key, value) = head_layout(cfg, hidden, 1.0)?;
    let (dk, dv) = (key / heads, value / heads);
    let lin = |name: &str, out: usize, input: usize, bias: bool| {
        LinearSpec::new(&format!("{prefix}.{name}"), out, input, bias)
    };
    let layer = |which: &str, n: usize| lin(&format!("feature_map_{which}.layer{n}"), dk, dk, true);
    Ok(LinearAttnSpec {
        n_heads: heads,
        head_k_dim: dk,
        head_v_dim: dv,
        qkv: vec![
            lin("q_proj", key, hidden, false),
            lin("k_proj", key, hidden, false),
            lin("v_proj", value, hidden, false),
        ],
        feature: FeatureMap::Hadamard(Box::new([layer("q", 1), layer("q", 2), layer("k", 1), layer("k", 2)])),
        normalize: false,
        scale: (dk as f32).powf(-0.5),
        norm: Some(NormSpec {
            weight: format!("{prefix}.norm.weight"),
            dim: dv,
            eps,
            unit_offset: false,
            centered: false,
            bias: None,
        }),
        out_proj: lin("o_proj", hidden, value, false),
    })
}

/// fla's `BitAttention`: softmax attention (configured by the model's own head fields) whose projections are fla
/// `BitLinear`s: an RMSNorm of their own (eps 1e-8, `BitLinear`'s default), int8 activations, absmean ternary weights.
fn bit_attention(cfg: &Config, prefix: &str, hidden: usize, max_positions: usize) -> Result<AttentionSpec> {
    let mut a = fla_attention(cfg.0, prefix, hidden, max_positions)?;
    for l in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj] {
        let norm = l.weight.trim_end_matches(".weight").to_string() + ".norm.weight";
        let input_norm =
            NormSpec { weight: norm, dim: l.in_features, eps: 1e-8, unit_offset: false, centered: false, bias: None };
        l.ternary = Some(Ternary::Absmean { input_norm: Some(input_norm) });
    }
    Ok(a)
}

/// fla's softmax-attention layer as configured by the `attn` object of a hybrid.
fn fla_attention(attn: &Value, prefix: &str, hidden: usize, max_positions: usize) -> Result<AttentionSpec> {
    let a = Config(attn);
    let n_heads = a.usize("num_heads").map_err(|_| CoreError::field("attn.num_heads", "is required"))?;
    let n_kv_heads = a.opt_usize("num_kv_heads")?.unwrap_or(n_heads);
    if !hidden.is_multiple_of(n_heads) || n_heads % n_kv_heads != 0 {
        return Err(CoreError::field(
            "attn.num_heads",
            format!("{n_heads} heads / {n_kv_heads} kv heads for hidden {hidden}"),
        ));
    }
    let head_dim = hidden / n_heads;
    let theta = a.f64("rope_theta")?.unwrap_or(10000.0);
    let rope = RopeSpec::from_params(&serde_json::json!({ "rope_theta": theta }), head_dim, None)?;
    let window = a.opt_usize("window_size")?.filter(|&w| w < max_positions);
    let dims = AttentionDims {
        hidden,
        n_heads,
        n_kv_heads,
        head_dim,
        bias: a.bool("qkv_bias").unwrap_or(false),
        scale: 1.0 / (head_dim as f32).sqrt(),
        output_gate: false,
        qk_norm_whole: false,
    };
    if a.bool("qk_norm") == Some(true) {
        return Err(CoreError::Unsupported {
            what: "fla option",
            name: "attn.qk_norm=true".into(),
            supported: "attn.qk_norm=false".into(),
        });
    }
    Ok(attention(prefix, &HF_NAMES, &dims, None, Some(rope), window))
}

/// Builds the spec of an fla model.
pub(crate) fn spec(cfg: &Config, model_type: &str) -> Result<ModelSpec> {
    if model_type == "rwkv7" {
        return super::rwkv7::spec(cfg);
    }
    let hidden = cfg.usize("hidden_size")?;
    let vocab = cfg.usize("vocab_size")?;
    let n_layers = cfg.usize("num_hidden_layers")?;
    let eps = cfg.f64("norm_eps")?.unwrap_or(1e-6) as f32;
    let max_positions = cfg.opt_usize("max_position_embeddings")?.unwrap_or(2048);
    let act = Activation::from_hf(cfg.str("hidden_act").unwrap_or("swish"))?;
    let intermediate = match cfg.opt_usize("intermediate_size")? {
        Some(i) => i,
        None => {
            let ratio = cfg.f64("hidden_ratio")?.unwrap_or(4.0);
            let i = (hidden as f64 * ratio * 2.0 / 3.0) as usize;
            256 * i.div_ceil(256)
        }
    };
    let attn_layers: Vec<usize> = match cfg.get("attn") {
        Some(a) => a
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| CoreError::field("attn.layers", "must be a list of layer indices"))?
            .iter()
            .map(|v| v.as_u64().map(|n| n as usize).filter(|&n| n < n_layers))
            .collect::<Option<_>>()
            .ok_or_else(|| CoreError::field("attn.layers", format!("must hold indices below {n_layers}")))?,
        None => Vec::new(),
    };
    let norm = |weight: String| NormSpec { weight, dim: hidden, eps, unit_offset: false, centered: false, bias: None };
    let mut layers = Vec::with_capacity(n_layers);
    for i in 0..n_layers {
        let p = format!("model.layers.{i}");
        let mixer = if attn_layers.contains(&i) {
            MixerSpec::Attention(fla_attention(
                cfg.get("attn").expect("checked above"),
                &format!("{p}.attn"),
                hidden,
                max_positions,
            )?)
        } else {
            match model_type {
                "gated_deltanet" => MixerSpec::GatedDeltaNet(gated_deltanet(cfg, &format!("{p}.attn"), hidden, eps)?),
                "delta_net" => MixerSpec::GatedDeltaNet(delta_net(cfg, &format!("{p}.attn"), hidden, eps)?),
                "gla" => MixerSpec::Gla(gla(cfg, &format!("{p}.attn"), hidden, eps)?),
                "linear_attn" => MixerSpec::LinearAttn(linear_attn(cfg, &format!("{p}.attn"), hidden, eps)?),
                "hgrn2" => MixerSpec::Hgrn2(hgrn2(cfg, &format!("{p}.attn"), hidden, i, n_layers)?),
                "kda" => MixerSpec::GatedDeltaNet(kda(cfg, &format!("{p}.attn"), hidden, eps)?),
                "gsa" => MixerSpec::Gsa(gsa(cfg, &format!("{p}.attn"), hidden)?),
                "bitnet" => MixerSpec::Attention(bit_attention(cfg, &format!("{p}.attn"), hidden, max_positions)?),
                other => unreachable!("fla model type {other} listed without a mapping"),
            }
        };
        layers.push(LayerSpec {
            mixer,
            mlp: MlpSpec::Gated(gated_mlp(&format!("{p}.mlp"), &HF_NAMES, hidden, intermediate, false, act)),
            norms: BlockNorms {
                pre_mixer: Some(norm(format!("{p}.attn_norm.weight"))),
                post_mixer: None,
                pre_mlp: Some(norm(format!("{p}.mlp_norm.weight"))),
                post_mlp: None,
            },
            residuals: None,
        });
    }
    let tied = cfg.bool("tie_word_embeddings").unwrap_or(false);
    let embed = "model.embeddings.weight".to_string();
    Ok(ModelSpec {
        model_type: model_type.to_string(),
        hidden,
        vocab,
        embed: embed.clone(),
        embed_scale: None,
        embed_norm: None,
        layers,
        final_norm: norm("model.norm.weight".into()),
        lm_head: if tied { embed } else { "lm_head.weight".into() },
        logit_scale: 1.0,
        tied_embeddings: tied,
        max_positions,
        bos_token_id: cfg.token_ids("bos_token_id").first().copied(),
        eos_token_ids: cfg.token_ids("eos_token_id"),
    })
}
