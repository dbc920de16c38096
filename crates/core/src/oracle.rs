//! Reference logits of a fixture model (`oracle.safetensors`), as computed by transformers / fla.

use crate::dtype::DType;
use crate::tensors::{SafetensorsCheckpoint, TensorSource};
use crate::{CoreError, Result};
use std::path::Path;

/// The reference outputs stored beside a fixture model.
pub struct Oracle {
    /// The prompt, `input_ids` [1, T].
    pub input_ids: Vec<u32>,
    /// Logits of one full forward over the prompt, [T, vocab].
    pub logits: Vec<f32>,
    /// Prompt plus greedily generated tokens, [T + N].
    pub gen_ids: Vec<u32>,
    /// Logits of cached decoding: row i is the logits at position T - 1 + i, [N, vocab].
    pub gen_logits: Vec<f32>,
}

fn ids(source: &SafetensorsCheckpoint, name: &str) -> Result<Vec<u32>> {
    let info = source.info(name)?.ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
    if info.dtype != DType::I64 {
        return Err(CoreError::TensorMismatch {
            name: name.into(),
            expected: "I64".into(),
            found: info.dtype.to_string(),
        });
    }
    Ok(source.bytes(name)?.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as u32).collect())
}

impl Oracle {
    /// Reads `oracle.safetensors` from a fixture directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("oracle.safetensors");
        let bytes =
            std::fs::read(&path).map_err(|source| CoreError::Io { path: path.display().to_string(), source })?;
        Self::from_bytes(&path.display().to_string(), bytes)
    }

    /// Reads an `oracle.safetensors` file's bytes (`name` for messages).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let file = SafetensorsCheckpoint::from_files(vec![(name.to_string(), bytes)])?;
        Ok(Oracle {
            input_ids: ids(&file, "input_ids")?,
            logits: file.f32("logits")?,
            gen_ids: ids(&file, "gen_ids")?,
            gen_logits: file.f32("gen_logits")?,
        })
    }
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
