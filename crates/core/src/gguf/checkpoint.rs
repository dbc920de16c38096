//! Ternlight-ready GGUF files (written by `ternlight convert`) as a [`TensorSource`]: the HF `config.json` travels
//! in the metadata (`ternlight.config`, with `ternlight.tokenizer` for `tokenizer.json`), tensors keep their HF names,
//! and ternary weights are TQ1_0 / TQ2_0 blocks of exact codes (block scale 1; the layer's multiplier stays in its
//! `weight_scale` tensor). Ternary tensors are presented in transformers' packed `bitlinear` layout, so the model
//! loads exactly as the HF checkpoint it came from.

use super::codec::{decode_q8_0, decode_tq1_0, decode_tq2_0};
use super::{GgmlType, Gguf};
use crate::dtype::DType;
use crate::tensors::{TensorInfo, TensorSource};
use crate::{CoreError, Result};
use std::collections::HashMap;

/// Metadata key holding the HF `config.json` text.
pub const CONFIG_KEY: &str = "ternlight.config";
/// Metadata key holding the HF `tokenizer.json` text.
pub const TOKENIZER_KEY: &str = "ternlight.tokenizer";

/// A GGUF file read into memory, its tensors ready to load.
pub struct GgufCheckpoint {
    file: Vec<u8>,
    header: Gguf,
    /// Tensors re-encoded at open (ternary codes in the packed HF layout, Q8_0 as f32).
    converted: HashMap<String, (TensorInfo, Vec<u8>)>,
}

/// Packs ternary codes `[out, in]` into transformers' `bitlinear` layout `u8 [out / 4, in]`.
pub fn pack_rows(codes: &[i8], out: usize, inp: usize) -> Vec<u8> {
    let r = out / 4;
    let mut packed = vec![0u8; r * inp];
    for (i, byte) in packed.iter_mut().enumerate() {
        let (row, col) = (i / inp, i % inp);
        for part in 0..4 {
            *byte |= ((codes[(part * r + row) * inp + col] + 1) as u8) << (2 * part);
        }
    }
    packed
}

impl GgufCheckpoint {
    /// Parses `file` and prepares every tensor.
    pub fn from_bytes(file: Vec<u8>) -> Result<Self> {
        let header = Gguf::parse(&file)?;
        let mut converted = HashMap::new();
        for t in &header.tensors {
            let data = header.data(&file, t);
            let (n, shape) = (t.elements() as usize, t.shape());
            let entry = match t.ty {
                GgmlType::TQ1_0 | GgmlType::TQ2_0 => {
                    let blocks = if t.ty == GgmlType::TQ1_0 { decode_tq1_0(data, n) } else { decode_tq2_0(data, n) };
                    if blocks.scales.iter().any(|&s| s != 1.0) || shape.len() != 2 || shape[0] % 4 != 0 {
                        return Err(CoreError::InvalidInput(format!(
                            "GGUF tensor `{}`: ternary tensors must be [rows (a multiple of 4), cols] with block scale 1 \
                             (as `ternlight convert` writes them); per-block scales are not supported",
                            t.name
                        )));
                    }
                    let packed = pack_rows(&blocks.codes, shape[0], shape[1]);
                    (TensorInfo { dtype: DType::U8, shape: vec![shape[0] / 4, shape[1]] }, packed)
                }
                GgmlType::Q8_0 => {
                    let values = decode_q8_0(data, n);
                    (TensorInfo { dtype: DType::F32, shape }, bytemuck::cast_slice(&values).to_vec())
                }
                GgmlType::I2S => {
                    return Err(CoreError::Unsupported {
                        what: "GGUF tensor type",
                        name: format!("I2_S ({})", t.name),
                        supported: "F32, F16, BF16, Q8_0, TQ1_0, TQ2_0".into(),
                    })
                }
                GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => continue,
            };
            converted.insert(t.name.clone(), entry);
        }
        Ok(GgufCheckpoint { file, header, converted })
    }

    /// Reads and parses the file at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::read(path).map_err(|source| CoreError::Io { path: path.display().to_string(), source })?;
        Self::from_bytes(file)
    }

    /// A string metadata value.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(super::Value::as_str)
    }

    /// The HF `config.json` text carried in the metadata.
    pub fn config_json(&self) -> Result<&str> {
        self.text(CONFIG_KEY).ok_or_else(|| {
            CoreError::InvalidInput(format!(
                "GGUF: no `{CONFIG_KEY}` metadata; Ternlight reads GGUF files written by `ternlight convert` \
                 (llama.cpp's own metadata is not mapped yet)"
            ))
        })
    }
}

impl TensorSource for GgufCheckpoint {
    fn info(&self, name: &str) -> Result<Option<TensorInfo>> {
        if let Some((info, _)) = self.converted.get(name) {
            return Ok(Some(info.clone()));
        }
        Ok(self.header.tensors.iter().find(|t| t.name == name).map(|t| TensorInfo {
            dtype: match t.ty {
                GgmlType::F16 => DType::F16,
                GgmlType::BF16 => DType::BF16,
                _ => DType::F32,
            },
            shape: t.shape(),
        }))
    }

    fn bytes(&self, name: &str) -> Result<&[u8]> {
        if let Some((_, bytes)) = self.converted.get(name) {
            return Ok(bytes);
        }
        let t = self.header.tensors.iter().find(|t| t.name == name);
        let t = t.ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        Ok(self.header.data(&self.file, t))
    }
}
