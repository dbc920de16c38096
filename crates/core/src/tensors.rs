//! Tensor containers: where weight bytes come from, behind one trait.
//!
//! [`TensorSource`] hides the container; [`SafetensorsCheckpoint`] reads single-file and sharded
//! (`model.safetensors.index.json`) checkpoints from any [`RangeSource`]: the header first, then each tensor when
//! it is asked for (a model on disk or behind a URL is never held in memory whole). [`check_against_spec`] validates
//! every tensor the spec needs (presence, shape, dtype) before anything is uploaded.

use crate::dtype::{decode_f32, first_non_finite, DType};
use crate::ranged::{LocalFile, Memory, RangeSource};
use crate::spec::ModelSpec;
use crate::{CoreError, Result};
use safetensors::{tensor::Metadata, Dtype as StDtype};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// Element type and shape of one stored tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
}

/// A set of named tensors whose raw little-endian bytes can be read.
pub trait TensorSource {
    /// Dtype and shape of `name`, or `None` if absent. Errors when present with an unsupported dtype.
    fn info(&self, name: &str) -> Result<Option<TensorInfo>>;
    /// The raw bytes of `name` (borrowed from memory, or read from the file when asked).
    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>>;

    /// The byte length of `name`, without reading it.
    fn byte_len(&self, name: &str) -> Result<usize> {
        Ok(self.bytes(name)?.len())
    }

    /// Checks the files behind the tensors against their published digests (after loading: a download may still
    /// be finishing when the last tensor is read).
    fn verify(&self) -> Result<()> {
        Ok(())
    }

    /// The tensor decoded to f32 (float dtypes only).
    fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.info(name)?.ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        decode_f32(info.dtype, &self.bytes(name)?).ok_or_else(|| CoreError::TensorMismatch {
            name: name.into(),
            expected: "a float dtype (F32, F16, BF16)".into(),
            found: info.dtype.to_string(),
        })
    }
}

/// A [`TensorSource`] whose float tensors are refused when they hold a NaN or an infinity: a loader reads
/// through it so that a damaged or hostile checkpoint fails with the tensor's name instead of producing garbage.
pub struct Finite<'a>(pub &'a dyn TensorSource);

impl TensorSource for Finite<'_> {
    fn info(&self, name: &str) -> Result<Option<TensorInfo>> {
        self.0.info(name)
    }

    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let bytes = self.0.bytes(name)?;
        let dtype = self.0.info(name)?.map(|i| i.dtype);
        if let Some(at) = dtype.and_then(|d| first_non_finite(d, &bytes)) {
            return Err(CoreError::TensorMismatch {
                name: name.into(),
                expected: "finite values".into(),
                found: format!("NaN or infinity at element {at} (a damaged checkpoint?)"),
            });
        }
        Ok(bytes)
    }

    fn byte_len(&self, name: &str) -> Result<usize> {
        self.0.byte_len(name)
    }

    fn verify(&self) -> Result<()> {
        self.0.verify()
    }
}

fn map_dtype(name: &str, d: StDtype) -> Result<DType> {
    Ok(match d {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::I64 => DType::I64,
        StDtype::U8 => DType::U8,
        other => {
            return Err(CoreError::TensorMismatch {
                name: name.into(),
                expected: "dtype F32, F16, BF16, I64 or U8".into(),
                found: format!("{other:?}"),
            })
        }
    })
}

/// The most header bytes a safetensors file may declare.
const MAX_HEADER: u64 = 100 << 20;

/// One safetensors file: its parsed header, its tensors read from the source on demand.
struct SafetensorsFile {
    source: Box<dyn RangeSource>,
    data_start: u64,
    metadata: Metadata,
}

impl SafetensorsFile {
    fn parse(source: Box<dyn RangeSource>) -> Result<Self> {
        let path = source.name().to_string();
        let bad = |message: String| CoreError::TensorFile { path: path.clone(), message };
        let total = source.len();
        if total < 8 {
            return Err(bad(format!("{total} bytes is shorter than the 8-byte header length")));
        }
        let header_len = u64::from_le_bytes(source.read(0, 8)?.try_into().expect("8 bytes"));
        if header_len > total - 8 {
            return Err(bad(format!("header length {header_len} runs past the end of the {total}-byte file")));
        }
        if header_len > MAX_HEADER {
            return Err(bad(format!("header length {header_len} exceeds the {MAX_HEADER}-byte cap")));
        }
        let header = source.read(8, header_len as usize)?;
        // Deserialising validates the offsets: contiguous, in order, each the size its dtype and shape imply.
        let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
        if 8 + header_len + metadata.data_len() as u64 != total {
            return Err(bad(format!(
                "the data section ({} bytes in the header) does not match the {total}-byte file (truncated file?)",
                metadata.data_len()
            )));
        }
        Ok(SafetensorsFile { source, data_start: 8 + header_len, metadata })
    }

    fn info(&self, name: &str) -> Result<Option<TensorInfo>> {
        self.metadata
            .info(name)
            .map(|i| Ok(TensorInfo { dtype: map_dtype(name, i.dtype)?, shape: i.shape.clone() }))
            .transpose()
    }

    /// Offset and length of `name`'s bytes in the file.
    fn range(&self, name: &str) -> Option<(u64, usize)> {
        let (s, e) = self.metadata.info(name)?.data_offsets;
        Some((self.data_start + s as u64, e - s))
    }

    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let (offset, len) = self.range(name).ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        match self.source.slice(offset, len) {
            Some(b) => Ok(Cow::Borrowed(b)),
            None => Ok(Cow::Owned(self.source.read(offset, len)?)),
        }
    }
}

/// A safetensors checkpoint: one file or several shards, all tensors addressable by name.
pub struct SafetensorsCheckpoint {
    files: Vec<SafetensorsFile>,
    index: HashMap<String, usize>,
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| CoreError::Io { path: path.display().to_string(), source })
}

impl SafetensorsCheckpoint {
    /// Parses in-memory files given as `(name, bytes)`; tensors are looked up across all of them.
    pub fn from_files(files: Vec<(String, Vec<u8>)>) -> Result<Self> {
        Self::from_sources(files.into_iter().map(|(name, bytes)| Box::new(Memory::new(name, bytes)) as _).collect())
    }

    /// Parses the headers of files read by range (local, remote); tensors are read when asked for.
    pub fn from_sources(sources: Vec<Box<dyn RangeSource>>) -> Result<Self> {
        let mut parsed = Vec::with_capacity(sources.len());
        let mut index = HashMap::new();
        for (i, source) in sources.into_iter().enumerate() {
            let file = SafetensorsFile::parse(source)?;
            for name in file.metadata.tensors().keys() {
                index.insert(name.clone(), i);
            }
            parsed.push(file);
        }
        Ok(SafetensorsCheckpoint { files: parsed, index })
    }

    /// Opens the checkpoint in a HF model directory: `model.safetensors.index.json` (sharded) or `model.safetensors`,
    /// reading headers now and tensors when asked for.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let names = match index_path.exists() {
            true => shard_names(&read_file(&index_path)?, &index_path.display().to_string())?,
            false => vec!["model.safetensors".to_string()],
        };
        let mut files: Vec<Box<dyn RangeSource>> = Vec::with_capacity(names.len());
        for name in names {
            files.push(Box::new(LocalFile::open(&dir.join(&name))?));
        }
        Self::from_sources(files)
    }

    /// Names of all tensors in the checkpoint.
    pub fn names(&self) -> Vec<&str> {
        self.index.keys().map(String::as_str).collect()
    }
}

/// The shard files a `model.safetensors.index.json` names (sorted, each once), refusing names that leave the
/// model's directory.
pub fn shard_names(index_json: &[u8], path: &str) -> Result<Vec<String>> {
    let bad = |message: String| CoreError::Json { path: path.to_string(), message };
    let json: serde_json::Value = serde_json::from_slice(index_json).map_err(|e| bad(e.to_string()))?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
    shards.sort();
    shards.dedup();
    if let Some(name) = shards.iter().find(|n| n.contains("..") || n.contains('/') || n.contains('\\')) {
        return Err(bad(format!("shard name `{name}` leaves the model directory")));
    }
    Ok(shards)
}

impl TensorSource for SafetensorsCheckpoint {
    fn info(&self, name: &str) -> Result<Option<TensorInfo>> {
        match self.index.get(name) {
            Some(&i) => self.files[i].info(name),
            None => Ok(None),
        }
    }

    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let &i = self.index.get(name).ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        self.files[i].bytes(name)
    }

    fn byte_len(&self, name: &str) -> Result<usize> {
        let &i = self.index.get(name).ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        Ok(self.files[i].range(name).map_or(0, |(_, len)| len))
    }

    fn verify(&self) -> Result<()> {
        self.files.iter().try_for_each(|f| f.source.verify())
    }
}

/// Where a container keeps each tensor's stored bytes, so a streaming reader can fetch exactly them before the
/// tensor is read.
pub trait TensorLocations {
    /// The index of the file holding `name`'s bytes (in the order the container was opened with), their offset
    /// and length; `None` for tensors made from the header alone (or absent).
    fn location(&self, name: &str) -> Option<(usize, u64, usize)>;
}

impl TensorLocations for SafetensorsCheckpoint {
    fn location(&self, name: &str) -> Option<(usize, u64, usize)> {
        let &i = self.index.get(name)?;
        self.files[i].range(name).map(|(offset, len)| (i, offset, len))
    }
}

/// Checks that every tensor the spec needs exists with the implied shape and a float dtype.
pub fn check_against_spec(spec: &ModelSpec, source: &dyn TensorSource) -> Result<()> {
    for decl in spec.tensors() {
        let info = source.info(&decl.name)?.ok_or_else(|| CoreError::MissingTensor { name: decl.name.clone() })?;
        if squeezed(&info.shape) != squeezed(&decl.shape) {
            return Err(CoreError::TensorMismatch {
                name: decl.name,
                expected: format!("shape {:?} (from config.json)", decl.shape),
                found: format!("shape {:?}", info.shape),
            });
        }
        let dtype_ok = if decl.packed { info.dtype == crate::dtype::DType::U8 } else { info.dtype.is_float() };
        if !dtype_ok {
            let expected = if decl.packed { "packed U8 ternary codes" } else { "a float dtype (F32, F16, BF16)" };
            return Err(CoreError::TensorMismatch {
                name: decl.name,
                expected: expected.into(),
                found: info.dtype.to_string(),
            });
        }
    }
    Ok(())
}

/// A shape without its size-1 dimensions: checkpoints store the same values as `[4]` or `[1, 1, 4, 1]` (Kimi's
/// `A_log`), and the layout is the same.
fn squeezed(shape: &[usize]) -> Vec<usize> {
    shape.iter().copied().filter(|&d| d != 1).collect()
}

/// Serialises f32 tensors to safetensors bytes (used for `logits` output and tests).
pub fn write_f32_safetensors(tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<Vec<u8>> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(StDtype::F32, shape.clone(), bytemuck::cast_slice(data))
                .map(|v| (name.to_string(), v))
                .map_err(|e| CoreError::InvalidInput(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, None).map_err(|e| CoreError::InvalidInput(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Vec<u8> {
        write_f32_safetensors(&[("a", vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), ("b", vec![1], &[7.0])]).unwrap()
    }

    #[test]
    fn reads_back_what_was_written() {
        let ck = SafetensorsCheckpoint::from_files(vec![("m.safetensors".into(), file())]).unwrap();
        assert_eq!(ck.info("a").unwrap().unwrap(), TensorInfo { dtype: DType::F32, shape: vec![2, 3] });
        assert_eq!(ck.f32("b").unwrap(), vec![7.0]);
        assert!(ck.info("c").unwrap().is_none());
        assert!(ck.f32("c").unwrap_err().to_string().contains("`c`"));
    }

    #[test]
    fn truncated_and_lying_files_are_reported_with_the_path() {
        let bytes = file();
        for cut in [0, 5, 8, 20, bytes.len() - 1] {
            let e = SafetensorsCheckpoint::from_files(vec![("m.safetensors".into(), bytes[..cut].to_vec())]);
            let msg = e.err().expect("truncated file must fail").to_string();
            assert!(msg.contains("m.safetensors"), "{msg}");
        }
        let mut lying = bytes.clone();
        lying[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let msg = SafetensorsCheckpoint::from_files(vec![("m.safetensors".into(), lying)]).err().unwrap().to_string();
        assert!(msg.contains("header length"), "{msg}");
    }
}
