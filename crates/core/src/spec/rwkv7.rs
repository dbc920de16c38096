//! RWKV-7 ("Goose") as fla names it → [`ModelSpec`]. Each block: LayerNorms with bias, a time mixer (token shift,
//! low-rank gates, the generalised delta rule, a per-head group norm, the bonus term and an output gate) and a
//! channel mixer (token shift, `relu^2`). Layer 0 also normalises the embeddings and defines the `v_first` values
//! later layers interpolate towards.

use super::config::Config;
use super::*;
use crate::{CoreError, Result};

/// A low-rank projection `up(act(down(x)))` (+ `up`'s bias when it has one).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    /// `[rank, in]`.
    pub down: LinearSpec,
    /// Applied between the two projections.
    pub act: Activation,
    /// `[out, rank]`.
    pub up: LinearSpec,
}

/// The RWKV-7 time mixer. Per token, with `x'` the previous token's input and `mix(mu) = x + (x' - x) * mu`:
/// `r = r_proj(mix_r)`, log-decay `w = -e^{-1/2} sigmoid(w_lora(mix_w))`, `k = k_proj(mix_k)`, `v = v_proj(mix_v)`
/// (lerped towards layer 0's values by `sigmoid(v_lora(mix_v))` after layer 0), `a = sigmoid(a_lora(mix_a))`,
/// `g = g_lora(mix_g)`, `kk = l2norm(k * k_k)` per head, `k <- k * (1 + (a - 1) * k_a)`; the state
/// `S = S diag(e^w) + (S (-kk)) (kk * a)^T + v k^T`, `o = S r`; then the group norm per head, plus
/// `sum(r * k * r_k) v` per head, times `g`, through `o_proj`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rwkv7Spec {
    /// Heads.
    pub n_heads: usize,
    /// Key channels per head.
    pub head_dim: usize,
    /// Value channels per head.
    pub head_v_dim: usize,
    /// Token-shift mixing vectors `x_r, x_w, x_k, x_v, x_a, x_g`, each `[1, 1, hidden]`.
    pub shift: [String; 6],
    /// Receptance projection.
    pub r_proj: LinearSpec,
    /// Key projection.
    pub k_proj: LinearSpec,
    /// Value projection.
    pub v_proj: LinearSpec,
    /// Output projection.
    pub o_proj: LinearSpec,
    /// Decay LoRA (tanh, biased).
    pub w_lora: LoraSpec,
    /// In-context learning-rate LoRA (no activation, biased).
    pub a_lora: LoraSpec,
    /// Output-gate LoRA (sigmoid, unbiased).
    pub g_lora: LoraSpec,
    /// Value-residual LoRA; `None` in the layer whose values become `v_first`.
    pub v_lora: Option<LoraSpec>,
    /// `k_k` `[heads * head_dim]`: the removal key's scale.
    pub k_k: String,
    /// `k_a` `[heads * head_dim]`: how much `a` shrinks the written key.
    pub k_a: String,
    /// `r_k` `[heads, head_dim]`: the bonus term's weights.
    pub r_k: String,
    /// Group norm over each head's `head_v_dim` values (weight and bias over all heads).
    pub g_norm: NormSpec,
}

impl Rwkv7Spec {
    /// Width of keys (and receptances) over all heads.
    pub fn key_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of values over all heads.
    pub fn value_dim(&self) -> usize {
        self.n_heads * self.head_v_dim
    }

    /// Recurrent state floats: one `head_dim x head_v_dim` matrix per head.
    pub fn state_len(&self) -> usize {
        self.n_heads * self.head_dim * self.head_v_dim
    }

    pub(crate) fn decls(&self, out: &mut Vec<TensorDecl>) {
        for name in &self.shift {
            out.push(TensorDecl::float(name.clone(), vec![1, 1, self.r_proj.in_features]));
        }
        for l in [&self.r_proj, &self.k_proj, &self.v_proj, &self.o_proj] {
            l.decls(out);
        }
        for lora in [&self.w_lora, &self.a_lora, &self.g_lora].into_iter().chain(&self.v_lora) {
            lora.down.decls(out);
            lora.up.decls(out);
        }
        for name in [&self.k_k, &self.k_a] {
            out.push(TensorDecl::float(name.clone(), vec![self.key_dim()]));
        }
        out.push(TensorDecl::float(self.r_k.clone(), vec![self.n_heads, self.head_dim]));
        self.g_norm.decls(out);
    }
}

/// RWKV's channel mixer: `value(relu(key(x + (x' - x) * x_k))^2)`, `x'` the previous token's input.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelMixSpec {
    /// Token-shift mixing vector `[hidden]`.
    pub shift: String,
    /// `[intermediate, hidden]`.
    pub key: LinearSpec,
    /// `[hidden, intermediate]`.
    pub value: LinearSpec,
}

impl ChannelMixSpec {
    pub(crate) fn decls(&self, out: &mut Vec<TensorDecl>) {
        out.push(TensorDecl::float(self.shift.clone(), vec![self.key.in_features]));
        self.key.decls(out);
        self.value.decls(out);
    }
}

/// Fails unless the config leaves `field` at what Ternlight implements.
fn require(cfg: &Config, field: &str, want: bool) -> Result<()> {
    match cfg.bool(field) {
        Some(v) if v != want => Err(CoreError::Unsupported {
            what: "rwkv7 option",
            name: format!("{field}={v}"),
            supported: format!("{field}={want}"),
        }),
        _ => Ok(()),
    }
}

fn lora(prefix: &str, hidden: usize, out: usize, rank: usize, act: Activation, bias: bool) -> LoraSpec {
    LoraSpec {
        down: LinearSpec::new(&format!("{prefix}.lora.0"), rank, hidden, false),
        act,
        up: LinearSpec::new(&format!("{prefix}.lora.2"), out, rank, bias),
    }
}

/// Builds the spec of an fla `rwkv7` model.
pub(crate) fn spec(cfg: &Config) -> Result<ModelSpec> {
    require(cfg, "norm_first", true)?;
    if cfg.get("attn").is_some_and(|a| !a.is_null()) {
        return Err(CoreError::Unsupported {
            what: "rwkv7 option",
            name: "attn (hybrid softmax layers)".into(),
            supported: "attn=null".into(),
        });
    }
    let hidden = cfg.usize("hidden_size")?;
    let vocab = cfg.usize("vocab_size")?;
    let n_layers = cfg.usize("num_hidden_layers")?;
    let eps = cfg.f64("norm_eps")?.unwrap_or(1e-5) as f32;
    let head_dim = cfg.usize("head_dim")?;
    if !hidden.is_multiple_of(head_dim) {
        return Err(CoreError::field("head_dim", format!("{head_dim} does not divide hidden_size {hidden}")));
    }
    let heads = hidden / head_dim;
    let rank = |field: &str| cfg.usize(field);
    let (w_rank, a_rank, g_rank, v_rank) =
        (rank("decay_low_rank_dim")?, rank("a_low_rank_dim")?, rank("gate_low_rank_dim")?, rank("v_low_rank_dim")?);
    let intermediate = match cfg.opt_usize("intermediate_size")? {
        Some(i) => i,
        None => 32 * (hidden * cfg.opt_usize("hidden_ratio")?.unwrap_or(4)).div_ceil(32),
    };
    let act = Activation::from_hf(cfg.str("hidden_act").unwrap_or("sqrelu"))?;
    if act != Activation::Relu2 {
        return Err(CoreError::field("hidden_act", "RWKV-7's channel mixer is sqrelu"));
    }
    let value_dims: Vec<usize> = match cfg.get("value_dim") {
        Some(serde_json::Value::Array(list)) => {
            list.iter().map(|v| v.as_u64().map(|n| n as usize)).collect::<Option<_>>()
        }
        Some(v) => v.as_u64().map(|n| vec![n as usize; n_layers]),
        None => Some(vec![hidden; n_layers]),
    }
    .filter(|d: &Vec<usize>| d.len() == n_layers && d.iter().all(|&v| v > 0 && v.is_multiple_of(heads) && v == d[0]))
    .ok_or_else(|| CoreError::field("value_dim", format!("must be {n_layers} equal multiples of {heads} heads")))?;
    let norm = |prefix: String, dim: usize, eps: f32| NormSpec {
        weight: format!("{prefix}.weight"),
        dim,
        eps,
        unit_offset: false,
        centered: true,
        bias: cfg.bool("norm_bias").unwrap_or(true).then(|| format!("{prefix}.bias")),
    };
    let mut layers = Vec::with_capacity(n_layers);
    for (i, &value) in value_dims.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = format!("{p}.attn");
        let lin = |name: &str, out, inp| LinearSpec::new(&format!("{a}.{name}"), out, inp, false);
        let mixer = Rwkv7Spec {
            n_heads: heads,
            head_dim,
            head_v_dim: value / heads,
            shift: ["r", "w", "k", "v", "a", "g"].map(|c| format!("{a}.x_{c}")),
            r_proj: lin("r_proj", hidden, hidden),
            k_proj: lin("k_proj", hidden, hidden),
            v_proj: lin("v_proj", value, hidden),
            o_proj: lin("o_proj", hidden, value),
            w_lora: lora(&format!("{a}.w_lora"), hidden, hidden, w_rank, Activation::Tanh, true),
            a_lora: lora(&format!("{a}.a_lora"), hidden, hidden, a_rank, Activation::Identity, true),
            g_lora: lora(&format!("{a}.g_lora"), hidden, value, g_rank, Activation::Sigmoid, false),
            v_lora: (i > 0).then(|| lora(&format!("{a}.v_lora"), hidden, value, v_rank, Activation::Identity, true)),
            k_k: format!("{a}.k_k"),
            k_a: format!("{a}.k_a"),
            r_k: format!("{a}.r_k"),
            g_norm: norm(format!("{a}.g_norm"), value, head_dim as f32 * eps),
        };
        layers.push(LayerSpec {
            mixer: MixerSpec::Rwkv7(Box::new(mixer)),
            mlp: MlpSpec::ChannelMix(ChannelMixSpec {
                shift: format!("{p}.ffn.x_k"),
                key: LinearSpec::new(&format!("{p}.ffn.key"), intermediate, hidden, false),
                value: LinearSpec::new(&format!("{p}.ffn.value"), hidden, intermediate, false),
            }),
            norms: BlockNorms {
                pre_mixer: Some(norm(format!("{p}.attn_norm"), hidden, eps)),
                post_mixer: None,
                pre_mlp: Some(norm(format!("{p}.ffn_norm"), hidden, eps)),
                post_mlp: None,
            },
            residuals: None,
        });
    }
    let tied = cfg.bool("tie_word_embeddings").unwrap_or(false);
    let embed = "model.embeddings.weight".to_string();
    Ok(ModelSpec {
        model_type: "rwkv7".into(),
        hidden,
        vocab,
        embed: embed.clone(),
        embed_scale: None,
        embed_norm: Some(norm("model.layers.0.pre_norm".into(), hidden, eps)),
        layers,
        final_norm: norm("model.norm".into(), hidden, eps),
        lm_head: if tied { embed } else { "lm_head.weight".into() },
        logit_scale: 1.0,
        tied_embeddings: tied,
        max_positions: cfg.opt_usize("max_position_embeddings")?.unwrap_or(2048),
        bos_token_id: cfg.token_ids("bos_token_id").first().copied(),
        eos_token_ids: cfg.token_ids("eos_token_id"),
    })
}
