//! GGUF files as a [`TensorSource`] under HF tensor names. Two kinds:
//! - Ternlight-ready files (written by `ternlight convert`): the HF `config.json` travels in the metadata
//!   (`ternlight.config`, with `ternlight.tokenizer` for `tokenizer.json`), tensors keep their HF names, and ternary
//!   weights are TQ1_0 / TQ2_0 blocks of exact codes (block scale 1; the layer's multiplier stays in its
//!   `weight_scale` tensor).
//! - llama.cpp's own files ([`super::native`]): config from the metadata, names mapped, llama's q/k rows
//!   un-permuted, and each ternary tensor's one scale (TQ blocks or I2_S) turned into a `weight_scale` tensor.
//!
//! Ternary tensors are presented in transformers' packed `bitlinear` layout, so either loads as an HF checkpoint.
//! Only the header is read at open; each tensor is read from its [`RangeSource`] (and converted) when asked for.

use super::codec::{decode_i2_s, decode_q8_0, decode_tq1_0, decode_tq2_0, TernaryBlocks};
use super::{native, GgmlType, Gguf};
use crate::dtype::DType;
use crate::ranged::{LocalFile, Memory, RangeSource};
use crate::tensors::{TensorInfo, TensorLocations, TensorSource};
use crate::tokenizer::Tokenizer;
use crate::{CoreError, Result};
use std::borrow::Cow;
use std::collections::HashMap;

/// Metadata key holding the HF `config.json` text.
pub const CONFIG_KEY: &str = "ternlight.config";
/// Metadata key holding the HF `tokenizer.json` text.
pub const TOKENIZER_KEY: &str = "ternlight.tokenizer";

/// How an HF-named tensor comes out of the file (each holds the index of its GGUF tensor).
#[derive(Clone, Copy, Debug)]
enum Entry {
    /// Float bytes as stored.
    Stored(usize),
    /// Q8_0 decoded to f32.
    Q8(usize),
    /// Float or Q8_0 rows put back from llama.cpp's q/k permutation over this many heads.
    Unpermuted(usize, usize),
    /// Ternary codes packed in the HF layout.
    Ternary(usize),
    /// `[1]` f32: 1 / the one scale of a llama.cpp ternary tensor.
    Scale(usize),
}

/// A GGUF file's header, its tensors read when asked for.
pub struct GgufCheckpoint {
    source: Box<dyn RangeSource>,
    header: Gguf,
    native: bool,
    entries: HashMap<String, Entry>,
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
    /// Parses the header from `source` and maps every tensor to its HF name.
    pub fn from_source(source: Box<dyn RangeSource>) -> Result<Self> {
        let header = Gguf::read(source.as_ref())?;
        let native = header.get(CONFIG_KEY).is_none();
        if native {
            native::config(&header)?;
        }
        let mut entries = HashMap::new();
        for (i, t) in header.tensors.iter().enumerate() {
            let name = match native {
                true => native::hf_name(&t.name).expect("checked by native::config"),
                false => t.name.clone(),
            };
            let heads = if native { native::permuted_heads(&header, &t.name)? } else { None };
            let entry = match t.ty {
                GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2S => {
                    let shape = t.shape();
                    if shape.len() != 2 || !shape[0].is_multiple_of(4) {
                        return Err(CoreError::InvalidInput(format!(
                            "GGUF tensor `{}`: ternary tensors must be [rows (a multiple of 4), cols], not {shape:?}",
                            t.name
                        )));
                    }
                    if native {
                        entries.insert(format!("{name}_scale"), Entry::Scale(i));
                    }
                    Entry::Ternary(i)
                }
                _ if heads.is_some() => Entry::Unpermuted(i, heads.expect("checked")),
                GgmlType::Q8_0 => Entry::Q8(i),
                _ => Entry::Stored(i),
            };
            entries.insert(name, entry);
        }
        Ok(GgufCheckpoint { source, header, native, entries })
    }

    /// Parses an in-memory file.
    pub fn from_bytes(file: Vec<u8>) -> Result<Self> {
        Self::from_source(Box::new(Memory::new("GGUF file", file)))
    }

    /// Opens the file at `path`, reading its header now and its tensors when asked for.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Self::from_source(Box::new(LocalFile::open(path)?))
    }

    /// A string metadata value.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(super::Value::as_str)
    }

    /// The file's tokenizer: its `tokenizer.json` carried in the metadata, or rebuilt (with its chat template) from
    /// a llama.cpp file's `tokenizer.ggml.*` keys; `None` when the file has neither.
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>> {
        if let Some(json) = self.text(TOKENIZER_KEY) {
            return Tokenizer::from_bytes(json.as_bytes(), None).map(Some);
        }
        super::vocab::tokenizer_files(&self.header)?
            .map(|(json, config)| Tokenizer::from_bytes(json.as_bytes(), Some(config.as_bytes())))
            .transpose()
    }

    /// The HF `config.json` text: carried in the metadata, or rebuilt from a llama.cpp file's.
    pub fn config_json(&self) -> Result<String> {
        match self.text(CONFIG_KEY) {
            Some(text) => Ok(text.to_string()),
            None => Ok(native::config(&self.header)?.to_string()),
        }
    }

    fn raw(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        let (offset, len) = self.header.range(&self.header.tensors[i]);
        match self.source.slice(offset, len) {
            Some(b) => Ok(Cow::Borrowed(b)),
            None => Ok(Cow::Owned(self.source.read(offset, len)?)),
        }
    }

    fn codes(&self, i: usize) -> Result<TernaryBlocks> {
        let t = &self.header.tensors[i];
        let (data, n) = (self.raw(i)?, t.elements() as usize);
        Ok(match t.ty {
            GgmlType::TQ1_0 => decode_tq1_0(&data, n),
            GgmlType::TQ2_0 => decode_tq2_0(&data, n),
            _ => decode_i2_s(&data, n),
        })
    }

    /// A llama.cpp ternary tensor's one scale; Ternlight's own files must have block scale 1.
    fn ternary_scale(&self, i: usize, blocks: &TernaryBlocks) -> Result<f32> {
        let name = &self.header.tensors[i].name;
        // Blocks of zeros carry scale 0; every other block must share the tensor's scale.
        let mut scales = blocks.scales.iter().copied().filter(|&s| s != 0.0);
        let scale = scales.next().unwrap_or(1.0);
        let uniform = scales.all(|s| s == scale);
        match self.native {
            false if blocks.scales.iter().any(|&s| s != 1.0) => Err(CoreError::InvalidInput(format!(
                "GGUF tensor `{name}`: a file written by `ternlight convert` has block scale 1 (its multiplier is \
                 in `weight_scale`)"
            ))),
            true if !uniform || !scale.is_finite() => Err(CoreError::InvalidInput(format!(
                "GGUF tensor `{name}`: ternary blocks with different scales; Ternlight runs one scale per tensor (as \
                 BitNet b1.58 checkpoints have)"
            ))),
            _ => Ok(scale),
        }
    }

    /// Float rows of tensor `i` as f32 bytes or stored bytes (Q8_0 decoded).
    fn float_rows(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        let t = &self.header.tensors[i];
        let raw = self.raw(i)?;
        Ok(match t.ty {
            GgmlType::Q8_0 => Cow::Owned(bytemuck::cast_slice(&decode_q8_0(&raw, t.elements() as usize)).to_vec()),
            _ => raw,
        })
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

impl TensorLocations for GgufCheckpoint {
    /// Every tensor, however converted on reading, comes from one stored tensor's bytes in the one file.
    fn location(&self, name: &str) -> Option<(usize, u64, usize)> {
        let i = match *self.entries.get(name)? {
            Entry::Stored(i) | Entry::Q8(i) | Entry::Unpermuted(i, _) | Entry::Ternary(i) | Entry::Scale(i) => i,
        };
        let (offset, len) = self.header.range(&self.header.tensors[i]);
        Some((0, offset, len))
    }
}

impl TensorSource for GgufCheckpoint {
    fn info(&self, name: &str) -> Result<Option<TensorInfo>> {
        let Some(&entry) = self.entries.get(name) else { return Ok(None) };
        let t = |i: usize| &self.header.tensors[i];
        Ok(Some(match entry {
            Entry::Stored(i) => TensorInfo { dtype: stored_dtype(t(i).ty), shape: t(i).shape() },
            Entry::Q8(i) => TensorInfo { dtype: DType::F32, shape: t(i).shape() },
            Entry::Unpermuted(i, _) => {
                let dtype = if t(i).ty == GgmlType::Q8_0 { DType::F32 } else { stored_dtype(t(i).ty) };
                TensorInfo { dtype, shape: t(i).shape() }
            }
            Entry::Ternary(i) => {
                let shape = t(i).shape();
                TensorInfo { dtype: DType::U8, shape: vec![shape[0] / 4, shape[1]] }
            }
            Entry::Scale(_) => TensorInfo { dtype: DType::F32, shape: vec![1] },
        }))
    }

    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let entry = *self.entries.get(name).ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        match entry {
            Entry::Stored(i) => self.raw(i),
            Entry::Q8(i) => self.float_rows(i),
            Entry::Unpermuted(i, heads) => {
                let rows = self.float_rows(i)?;
                let row_bytes = rows.len() / self.header.tensors[i].shape()[0].max(1);
                Ok(Cow::Owned(native::unpermute_rows(&rows, heads, row_bytes)?))
            }
            Entry::Ternary(i) => {
                let blocks = self.codes(i)?;
                self.ternary_scale(i, &blocks)?;
                let shape = self.header.tensors[i].shape();
                Ok(Cow::Owned(pack_rows(&blocks.codes, shape[0], shape[1])))
            }
            Entry::Scale(i) => {
                let scale = self.ternary_scale(i, &self.codes(i)?)?;
                Ok(Cow::Owned((1.0 / scale).to_le_bytes().to_vec()))
            }
        }
    }
    fn byte_len(&self, name: &str) -> Result<usize> {
        let info = self.info(name)?.ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        Ok(info.shape.iter().product::<usize>() * info.dtype.size())
    }

    fn verify(&self) -> Result<()> {
        self.source.verify()
    }
}
