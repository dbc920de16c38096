//! GGUF files as a [`TensorSource`] under HF tensor names. Two kinds:
//! - Ternlight-ready files (written by `ternlight convert`): the HF `config.json` travels in the metadata
//!   (`ternlight.config`, with `ternlight.tokenizer` for `tokenizer.json`), tensors keep their HF names, and ternary
//!   weights are TQ1_0 / TQ2_0 blocks of exact codes (block scale 1; the layer's multiplier stays in its
//!   `weight_scale` tensor).
//! - llama.cpp's own files ([`super::native`]): config from the metadata, names mapped, llama's q/k rows
//!   un-permuted, and each ternary tensor's one scale (TQ blocks or I2_S) turned into a `weight_scale` tensor.
//!
//! Ternary tensors are presented in transformers' packed `bitlinear` layout, so either loads as an HF checkpoint.

use super::codec::{decode_i2_s, decode_q8_0, decode_tq1_0, decode_tq2_0, TernaryBlocks};
use super::{native, GgmlType, Gguf};
use crate::dtype::DType;
use crate::tensors::{TensorInfo, TensorSource};
use crate::{CoreError, Result};
use std::borrow::Cow;
use std::collections::HashMap;

/// Metadata key holding the HF `config.json` text.
pub const CONFIG_KEY: &str = "ternlight.config";
/// Metadata key holding the HF `tokenizer.json` text.
pub const TOKENIZER_KEY: &str = "ternlight.tokenizer";

/// A GGUF file read into memory, its tensors ready to load.
pub struct GgufCheckpoint {
    file: Vec<u8>,
    header: Gguf,
    /// Tensors re-encoded at open (ternary codes in the packed HF layout, Q8_0 as f32, un-permuted rows), by HF name.
    converted: HashMap<String, (TensorInfo, Vec<u8>)>,
    /// Tensors read as stored, by HF name: their index in the header.
    stored: HashMap<String, usize>,
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
        let native = header.get(CONFIG_KEY).is_none();
        if native {
            native::config(&header)?;
        }
        let (mut converted, mut stored) = (HashMap::new(), HashMap::new());
        for (index, t) in header.tensors.iter().enumerate() {
            let name = match native {
                true => native::hf_name(&t.name).expect("checked by native::config"),
                false => t.name.clone(),
            };
            let data = header.data(&file, t);
            let (n, shape) = (t.elements() as usize, t.shape());
            let heads = if native { native::permuted_heads(&header, &t.name)? } else { None };
            let blocks = match t.ty {
                GgmlType::TQ1_0 => Some(decode_tq1_0(data, n)),
                GgmlType::TQ2_0 => Some(decode_tq2_0(data, n)),
                GgmlType::I2S => Some(decode_i2_s(data, n)),
                _ => None,
            };
            if let Some(blocks) = blocks {
                let (packed, scale) = ternary(&t.name, blocks, &shape, native)?;
                converted.insert(name.clone(), packed);
                if let Some(scale) = scale {
                    converted.insert(format!("{name}_scale"), scale);
                }
                continue;
            }
            let (info, bytes) = match t.ty {
                GgmlType::Q8_0 => {
                    let values = decode_q8_0(data, n);
                    (TensorInfo { dtype: DType::F32, shape }, bytemuck::cast_slice(&values).to_vec())
                }
                _ if heads.is_none() => {
                    stored.insert(name, index);
                    continue;
                }
                ty => (TensorInfo { dtype: stored_dtype(ty), shape }, data.to_vec()),
            };
            let bytes = match heads {
                Some(h) => native::unpermute_rows(&bytes, h, bytes.len() / info.shape[0].max(1))?,
                None => bytes,
            };
            converted.insert(name, (info, bytes));
        }
        Ok(GgufCheckpoint { file, header, converted, stored })
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

    /// The HF `config.json` text: carried in the metadata, or rebuilt from a llama.cpp file's.
    pub fn config_json(&self) -> Result<String> {
        match self.text(CONFIG_KEY) {
            Some(text) => Ok(text.to_string()),
            None => Ok(native::config(&self.header)?.to_string()),
        }
    }
}

/// The dtype a float GGUF tensor is presented as.
fn stored_dtype(ty: GgmlType) -> DType {
    match ty {
        GgmlType::F16 => DType::F16,
        GgmlType::BF16 => DType::BF16,
        _ => DType::F32,
    }
}

/// A ternary tensor in the packed HF layout, and (for llama.cpp files) its `weight_scale` tensor `[1]` = 1 / the
/// tensor's one scale. Ternlight's own files must have block scale 1.
#[allow(clippy::type_complexity)]
fn ternary(
    name: &str,
    blocks: TernaryBlocks,
    shape: &[usize],
    native: bool,
) -> Result<((TensorInfo, Vec<u8>), Option<(TensorInfo, Vec<u8>)>)> {
    if shape.len() != 2 || !shape[0].is_multiple_of(4) {
        return Err(CoreError::InvalidInput(format!(
            "GGUF tensor `{name}`: ternary tensors must be [rows (a multiple of 4), cols], not {shape:?}"
        )));
    }
    let packed = (
        TensorInfo { dtype: DType::U8, shape: vec![shape[0] / 4, shape[1]] },
        pack_rows(&blocks.codes, shape[0], shape[1]),
    );
    // Blocks of zeros carry scale 0; every other block must share the tensor's scale.
    let mut scales = blocks.scales.iter().copied().filter(|&s| s != 0.0);
    let scale = scales.next().unwrap_or(1.0);
    let uniform = scales.all(|s| s == scale);
    match native {
        false if blocks.scales.iter().any(|&s| s != 1.0) => Err(CoreError::InvalidInput(format!(
            "GGUF tensor `{name}`: a file written by `ternlight convert` has block scale 1 (its multiplier is in \
             `weight_scale`)"
        ))),
        false => Ok((packed, None)),
        true if !uniform || !scale.is_finite() => Err(CoreError::InvalidInput(format!(
            "GGUF tensor `{name}`: ternary blocks with different scales; Ternlight runs one scale per tensor \
             (as BitNet b1.58 checkpoints have)"
        ))),
        true => {
            let info = TensorInfo { dtype: DType::F32, shape: vec![1] };
            Ok((packed, Some((info, (1.0 / scale).to_le_bytes().to_vec()))))
        }
    }
}

impl TensorSource for GgufCheckpoint {
    fn info(&self, name: &str) -> Result<Option<TensorInfo>> {
        if let Some((info, _)) = self.converted.get(name) {
            return Ok(Some(info.clone()));
        }
        Ok(self.stored.get(name).map(|&i| {
            let t = &self.header.tensors[i];
            TensorInfo { dtype: stored_dtype(t.ty), shape: t.shape() }
        }))
    }

    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        if let Some((_, bytes)) = self.converted.get(name) {
            return Ok(Cow::Borrowed(bytes));
        }
        let i = self.stored.get(name).ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        Ok(Cow::Borrowed(self.header.data(&self.file, &self.header.tensors[*i])))
    }
}
