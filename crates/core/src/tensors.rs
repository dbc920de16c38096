//! Tensor containers: where weight bytes come from, behind one trait.
//!
//! [`TensorSource`] hides the container; [`SafetensorsCheckpoint`] reads single-file and sharded
//! (`model.safetensors.index.json`) checkpoints. [`check_against_spec`] validates every tensor the spec needs
//! (presence, shape, dtype) before anything is uploaded.

use crate::dtype::{decode_f32, DType};
use crate::spec::ModelSpec;
use crate::{CoreError, Result};
use safetensors::{tensor::Metadata, Dtype as StDtype, SafeTensors};
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
    /// The raw bytes of `name`.
    fn bytes(&self, name: &str) -> Result<&[u8]>;

    /// The tensor decoded to f32 (float dtypes only).
    fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.info(name)?.ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        decode_f32(info.dtype, self.bytes(name)?).ok_or_else(|| CoreError::TensorMismatch {
            name: name.into(),
            expected: "a float dtype (F32, F16, BF16)".into(),
            found: info.dtype.to_string(),
        })
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

/// One parsed safetensors file held in memory.
struct SafetensorsFile {
    path: String,
    bytes: Vec<u8>,
    data_start: usize,
    metadata: Metadata,
}

impl SafetensorsFile {
    fn parse(path: String, bytes: Vec<u8>) -> Result<Self> {
        let bad = |message: String| CoreError::TensorFile { path: path.clone(), message };
        if bytes.len() < 8 {
            return Err(bad(format!("{} bytes is shorter than the 8-byte header length", bytes.len())));
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if header_len > (bytes.len() - 8) as u64 {
            return Err(bad(format!("header length {header_len} runs past the end of the {}-byte file", bytes.len())));
        }
        let (n, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            use safetensors::SafeTensorError as E;
            bad(match e {
                E::MetadataIncompleteBuffer => {
                    "the data section does not match the sizes in the header (truncated file?)".into()
                }
                E::InvalidOffset(t) => format!("tensor `{t}` has data offsets that overlap or leave gaps"),
                E::TensorInvalidInfo => "a tensor's byte range does not match its dtype and shape".into(),
                other => other.to_string(),
            })
        })?;
        Ok(SafetensorsFile { path, bytes, data_start: 8 + n, metadata })
    }

    fn info(&self, name: &str) -> Result<Option<TensorInfo>> {
        self.metadata
            .info(name)
            .map(|i| Ok(TensorInfo { dtype: map_dtype(name, i.dtype)?, shape: i.shape.clone() }))
            .transpose()
    }

    fn bytes(&self, name: &str) -> Option<&[u8]> {
        let i = self.metadata.info(name)?;
        let (s, e) = i.data_offsets;
        self.bytes.get(self.data_start + s..self.data_start + e)
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
        let mut parsed = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, (path, bytes)) in files.into_iter().enumerate() {
            let file = SafetensorsFile::parse(path, bytes)?;
            for name in file.metadata.tensors().keys() {
                index.insert(name.clone(), i);
            }
            parsed.push(file);
        }
        Ok(SafetensorsCheckpoint { files: parsed, index })
    }

    /// Opens the checkpoint in a HF model directory: `model.safetensors.index.json` (sharded) or `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<String> = if index_path.exists() {
            let text = read_file(&index_path)?;
            let json: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| CoreError::Json { path: index_path.display().to_string(), message: e.to_string() })?;
            let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| CoreError::Json {
                path: index_path.display().to_string(),
                message: "no `weight_map` object".into(),
            })?;
            let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
            shards.sort();
            shards.dedup();
            shards
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            if name.contains("..") || name.contains('/') {
                return Err(CoreError::Json {
                    path: index_path.display().to_string(),
                    message: format!("shard name `{name}` leaves the model directory"),
                });
            }
            let path = dir.join(&name);
            files.push((path.display().to_string(), read_file(&path)?));
        }
        Self::from_files(files)
    }

    /// Names of all tensors in the checkpoint.
    pub fn names(&self) -> Vec<&str> {
        self.index.keys().map(String::as_str).collect()
    }
}

impl TensorSource for SafetensorsCheckpoint {
    fn info(&self, name: &str) -> Result<Option<TensorInfo>> {
        match self.index.get(name) {
            Some(&i) => self.files[i].info(name),
            None => Ok(None),
        }
    }

    fn bytes(&self, name: &str) -> Result<&[u8]> {
        let &i = self.index.get(name).ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        let file = &self.files[i];
        file.bytes(name).ok_or_else(|| CoreError::TensorFile {
            path: file.path.clone(),
            message: format!("tensor `{name}` lies outside the file"),
        })
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
