//! Writes GGUF version 3 files: metadata, tensor infos, then 32-byte-aligned tensor data.

use super::{GgmlType, Value, MAGIC};

const ALIGNMENT: u64 = 32;

/// A GGUF file assembled in memory.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry.
    pub fn meta(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor of shape `shape` (outermost first) whose encoded bytes are `data`.
    pub fn tensor(&mut self, name: &str, shape: &[usize], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push((name.to_string(), dims, ty, data));
        self
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn value(out: &mut Vec<u8>, v: &Value) {
        let (ty, payload): (u32, Vec<u8>) = match v {
            Value::Uint(x) => (10, x.to_le_bytes().to_vec()),
            Value::Int(x) => (11, x.to_le_bytes().to_vec()),
            Value::Float(x) => (12, x.to_le_bytes().to_vec()),
            Value::Bool(b) => (7, vec![*b as u8]),
            Value::Str(s) => {
                let mut p = Vec::new();
                Self::string(&mut p, s);
                (8, p)
            }
            Value::Array(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                let elem = items.first().map_or(8, |first| {
                    let mut probe = Vec::new();
                    Self::value(&mut probe, first);
                    u32::from_le_bytes(probe[..4].try_into().expect("type word"))
                });
                out.extend_from_slice(&elem.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    let mut one = Vec::new();
                    Self::value(&mut one, item);
                    out.extend_from_slice(&one[4..]);
                }
                return;
            }
        };
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&payload);
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            Self::string(&mut out, key);
            Self::value(&mut out, value);
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            Self::string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        out.resize((out.len() as u64).div_ceil(ALIGNMENT) as usize * ALIGNMENT as usize, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            out.resize((out.len() as u64).div_ceil(ALIGNMENT) as usize * ALIGNMENT as usize, 0);
        }
        out
    }
}
