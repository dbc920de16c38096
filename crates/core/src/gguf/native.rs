//! llama.cpp's own GGUF files, as its converters write them: the HF `config.json` rebuilt from the
//! `{architecture}.*` metadata and tensor names mapped back to HF's. Architectures: `llama` (whose q/k rows
//! llama.cpp permutes so that its RoPE rotates adjacent pairs; they are put back in HF's rotate-half order),
//! `bitnet` (llama.cpp's BitNet b1.58: SiLU MLP with sub-norms) and `bitnet-b1.58` (bitnet.cpp's BitNet
//! b1.58 2B4T: relu² MLP with sub-norms). Ternary weights carry one scale per tensor (TQ blocks or I2_S).

use super::{Gguf, Value};
use crate::{CoreError, Result};
use serde_json::{json, Value as Json};

/// The architectures this module maps.
pub const ARCHITECTURES: &[&str] = &["llama", "bitnet", "bitnet-b1.58"];

/// HF name of a llama.cpp tensor name, `None` for names outside the llama/bitnet layout.
pub fn hf_name(gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = top {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_sub_norm.weight" => "self_attn.attn_sub_norm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "ffn_sub_norm.weight" => "mlp.ffn_sub_norm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// For a llama-architecture q or k projection (by GGUF name), the heads its rows were permuted over.
pub fn permuted_heads(header: &Gguf, gguf: &str) -> Result<Option<usize>> {
    if header.get("general.architecture").and_then(Value::as_str) != Some("llama") {
        return Ok(None);
    }
    let heads = uint(header, "llama.attention.head_count")?;
    Ok(match gguf.rsplit('.').nth(1) {
        Some("attn_q") => Some(heads),
        Some("attn_k") => Some(opt_uint(header, "llama.attention.head_count_kv")?.unwrap_or(heads)),
        _ => None,
    })
}

/// Undoes llama.cpp's q/k row permutation: within each head, row `2 i + j` of the file is HF row `j * half + i`.
pub fn unpermute_rows(rows_bytes: &[u8], heads: usize, row_bytes: usize) -> Result<Vec<u8>> {
    let rows = rows_bytes.len() / row_bytes.max(1);
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(CoreError::TensorFile {
            path: "GGUF file".into(),
            message: format!("{rows} q/k rows do not split into {heads} heads of pairs"),
        });
    }
    let (per_head, half) = (rows / heads, rows / heads / 2);
    let mut out = vec![0u8; rows_bytes.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (file_row, hf_row) = (h * per_head + 2 * i + j, h * per_head + j * half + i);
                out[hf_row * row_bytes..(hf_row + 1) * row_bytes]
                    .copy_from_slice(&rows_bytes[file_row * row_bytes..(file_row + 1) * row_bytes]);
            }
        }
    }
    Ok(out)
}

fn opt_uint(header: &Gguf, key: &str) -> Result<Option<usize>> {
    match header.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| CoreError::InvalidInput(format!("GGUF metadata `{key}` must be an unsigned integer"))),
    }
}

fn uint(header: &Gguf, key: &str) -> Result<usize> {
    opt_uint(header, key)?.ok_or_else(|| CoreError::InvalidInput(format!("GGUF metadata `{key}` is missing")))
}

fn float(header: &Gguf, key: &str) -> Result<Option<f64>> {
    match header.get(key) {
        None => Ok(None),
        Some(Value::Float(f)) => Ok(Some(*f)),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as f64))
            .ok_or_else(|| CoreError::InvalidInput(format!("GGUF metadata `{key}` must be a number"))),
    }
}

/// The HF `config.json` of a llama.cpp GGUF file, from its metadata and tensor list.
pub fn config(header: &Gguf) -> Result<Json> {
    let arch = header.get("general.architecture").and_then(Value::as_str).unwrap_or("(none)");
    if !ARCHITECTURES.contains(&arch) {
        return Err(CoreError::Unsupported {
            what: "GGUF architecture",
            name: arch.to_string(),
            supported: format!("{} (or a file written by `ternlight convert`)", ARCHITECTURES.join(", ")),
        });
    }
    if header.tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        return Err(CoreError::Unsupported {
            what: "GGUF tensor",
            name: "rope_freqs.weight (llama3-style RoPE frequency factors)".into(),
            supported: "plain RoPE (rope.freq_base)".into(),
        });
    }
    if let Some(t) = header.tensors.iter().find(|t| hf_name(&t.name).is_none()) {
        return Err(CoreError::InvalidInput(format!(
            "GGUF tensor `{}` is not part of the {arch} layout Ternlight maps",
            t.name
        )));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let heads = uint(header, &key("attention.head_count"))?;
    let hidden = uint(header, &key("embedding_length"))?;
    let head_dim = opt_uint(header, &key("attention.key_length"))?.unwrap_or(hidden / heads.max(1));
    if let Some(rot) = opt_uint(header, &key("rope.dimension_count"))? {
        if rot != head_dim {
            return Err(CoreError::Unsupported {
                what: "GGUF RoPE",
                name: format!("rope.dimension_count {rot} of head_dim {head_dim}"),
                supported: "RoPE over whole heads".into(),
            });
        }
    }
    let embed = header.tensors.iter().find(|t| t.name == "token_embd.weight");
    let vocab = match opt_uint(header, &key("vocab_size"))? {
        Some(v) => v,
        None => {
            embed.map(|t| t.shape()[0]).ok_or_else(|| CoreError::MissingTensor { name: "token_embd.weight".into() })?
        }
    };
    let mut cfg = json!({
        "model_type": if arch == "llama" { "llama" } else { "bitnet" },
        "hidden_size": hidden,
        "intermediate_size": uint(header, &key("feed_forward_length"))?,
        "num_hidden_layers": uint(header, &key("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": opt_uint(header, &key("attention.head_count_kv"))?.unwrap_or(heads),
        "head_dim": head_dim,
        "rms_norm_eps": float(header, &key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
        "rope_theta": float(header, &key("rope.freq_base"))?.unwrap_or(10000.0),
        "max_position_embeddings": opt_uint(header, &key("context_length"))?.unwrap_or(2048),
        "vocab_size": vocab,
        "tie_word_embeddings": !header.tensors.iter().any(|t| t.name == "output.weight"),
    });
    for (gguf_key, hf_key) in
        [("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id")]
    {
        if let Some(id) = opt_uint(header, gguf_key)? {
            cfg[hf_key] = json!(id);
        }
    }
    if arch != "llama" {
        cfg["hidden_act"] = json!(if arch == "bitnet" { "silu" } else { "relu2" });
        cfg["quantization_config"] =
            json!({"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"});
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf_and_unknown_ones_do_not() {
        assert_eq!(hf_name("blk.3.attn_k.weight").as_deref(), Some("model.layers.3.self_attn.k_proj.weight"));
        assert_eq!(hf_name("blk.0.ffn_sub_norm.weight").as_deref(), Some("model.layers.0.mlp.ffn_sub_norm.weight"));
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("blk.x.attn_k.weight"), None);
        assert_eq!(hf_name("blk.0.attn_q.scale"), None);
    }

    #[test]
    fn unpermuting_inverts_llama_cpp_permutation() {
        // Two heads of 4 rows, one byte per row: llama.cpp's file order is [0, 2, 1, 3] within each head.
        let file = [0u8, 2, 1, 3, 4, 6, 5, 7];
        assert_eq!(unpermute_rows(&file, 2, 1).unwrap(), vec![0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(unpermute_rows(&file, 3, 1).is_err());
    }
}
