//! GGUF, llama.cpp's single-file model format: a bounds-checked reader ([`Gguf::parse`], or [`Gguf::read`] from a
//! [`RangeSource`] taking only the header's bytes), the block codecs of the types Ternlight reads ([`codec`]), a
//! writer ([`GgufWriter`]) and a [`TensorSource`](crate::tensors::TensorSource) over GGUF files ([`checkpoint`]).
//!
//! Layout: magic `GGUF`, version (2 or 3), tensor count and metadata count (u64), the metadata key/value pairs, the
//! tensor infos (name, dims innermost first, type, offset into the data section), padding to the alignment
//! (`general.alignment`, default 32), then the data. Every count, length and offset is checked against the file and
//! against caps before anything is allocated.

pub mod checkpoint;
pub mod codec;
pub mod native;
pub mod vocab;
mod writer;

pub use writer::GgufWriter;

use crate::ranged::RangeSource;
use crate::{CoreError, Result};

/// The file magic.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Most tensors a file may declare.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most metadata entries a file may declare.
pub const MAX_METADATA: u64 = 1 << 20;
/// Longest string (key, name or value) in bytes.
pub const MAX_STRING: u64 = 1 << 26;
/// Most elements of one metadata array.
pub const MAX_ARRAY: u64 = 1 << 24;
/// Most dimensions of one tensor.
pub const MAX_DIMS: u32 = 4;

/// The ggml tensor types Ternlight reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// 8-bit blocks of 32 with an f16 scale.
    Q8_0,
    /// bfloat16.
    BF16,
    /// Ternary, 256 per 54-byte block (1.6875 bits per weight).
    TQ1_0,
    /// Ternary, 256 per 66-byte block (2.0625 bits per weight).
    TQ2_0,
    /// bitnet.cpp's ternary layout: 2 bits per weight in 128-weight blocks plus one f32 scale per tensor.
    I2S,
}

impl GgmlType {
    /// The type with ggml id `id`.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            34 => GgmlType::TQ1_0,
            35 => GgmlType::TQ2_0,
            36 => GgmlType::I2S,
            _ => return None,
        })
    }

    /// The ggml id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
            GgmlType::TQ1_0 => 34,
            GgmlType::TQ2_0 => 35,
            GgmlType::I2S => 36,
        }
    }

    /// Bytes holding `elements` values of this type (blocks rounded up; I2_S adds its 32-byte scale tail).
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let blocks = |size: u64, bytes: u64| elements.div_ceil(size).checked_mul(bytes);
        match self {
            GgmlType::F32 => elements.checked_mul(4),
            GgmlType::F16 | GgmlType::BF16 => elements.checked_mul(2),
            GgmlType::Q8_0 => blocks(32, 34),
            GgmlType::TQ1_0 => blocks(256, 54),
            GgmlType::TQ2_0 => blocks(256, 66),
            GgmlType::I2S => blocks(128, 32)?.checked_add(32),
        }
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Unsigned integer (u8, u16, u32 or u64 on disk).
    Uint(u64),
    /// Signed integer (i8, i16, i32 or i64 on disk).
    Int(i64),
    /// Float (f32 or f64 on disk).
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<Value>),
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// One tensor's description.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Dimensions, innermost (contiguous) first, as ggml orders them.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    /// Byte length.
    pub size: u64,
}

impl TensorInfo {
    /// Elements in the tensor.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape outermost first (PyTorch order).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF header: metadata and tensor infos, validated against the file length.
#[derive(Clone, Debug)]
pub struct Gguf {
    /// Format version.
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

fn bad(message: impl Into<String>) -> CoreError {
    CoreError::TensorFile { path: "GGUF file".into(), message: message.into() }
}

/// A cursor over the first bytes of a `total`-byte file that refuses to read past the end; reading past the
/// prefix (but not the file) is [`NEED_MORE`].
struct Reader<'a> {
    bytes: &'a [u8],
    total: u64,
    pos: usize,
}

/// The message of the error [`Reader`] gives when its prefix is too short: the caller reads more and starts over.
/// The error message of [`Gguf::parse_prefix`] when the header runs past the bytes given.
pub const NEED_MORE: &str = "GGUF: header continues past the bytes read";

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let end = (self.pos as u64).checked_add(n).filter(|&e| e <= self.total).ok_or_else(|| {
            bad(format!("{what} at byte {} runs past the end of the {}-byte file", self.pos, self.total))
        })?;
        if end > self.bytes.len() as u64 {
            return Err(CoreError::InvalidInput(NEED_MORE.into()));
        }
        let out = &self.bytes[self.pos..end as usize];
        self.pos = end as usize;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > MAX_STRING {
            return Err(bad(format!("{what}: string of {len} bytes exceeds the {MAX_STRING}-byte cap")));
        }
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| bad(format!("{what}: string is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        let mut int = |n: u64| -> Result<u64> {
            let b = self.take(n, key)?;
            let mut word = [0u8; 8];
            word[..b.len()].copy_from_slice(b);
            Ok(u64::from_le_bytes(word))
        };
        Ok(match ty {
            0 => Value::Uint(int(1)?),
            1 => Value::Int(int(1)? as u8 as i8 as i64),
            2 => Value::Uint(int(2)?),
            3 => Value::Int(int(2)? as u16 as i16 as i64),
            4 => Value::Uint(int(4)?),
            5 => Value::Int(int(4)? as u32 as i32 as i64),
            6 => Value::Float(f32::from_bits(int(4)? as u32) as f64),
            7 => Value::Bool(int(1)? != 0),
            8 => Value::Str(self.string(key)?),
            9 => {
                if depth > 0 {
                    return Err(bad(format!("{key}: nested arrays are not supported")));
                }
                let elem = self.u32(key)?;
                let len = self.u64(key)?;
                if len > MAX_ARRAY {
                    return Err(bad(format!("{key}: array of {len} elements exceeds the {MAX_ARRAY} cap")));
                }
                // Every element takes at least one byte: refuse lengths the file cannot hold before allocating.
                if len > self.total - self.pos as u64 {
                    return Err(bad(format!("{key}: array of {len} elements is longer than the rest of the file")));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::Uint(int(8)?),
            11 => Value::Int(int(8)? as i64),
            12 => Value::Float(f64::from_bits(int(8)?)),
            other => return Err(bad(format!("{key}: unknown metadata value type {other}"))),
        })
    }
}

impl Gguf {
    /// Parses the header of a whole GGUF file and checks every tensor lies inside it.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Self::parse_prefix(bytes, bytes.len() as u64)
    }

    /// Parses the header from `source`, reading only as much of the file as the header takes.
    pub fn read(source: &dyn RangeSource) -> Result<Self> {
        let total = source.len();
        let mut want = total.min(1 << 20);
        loop {
            let prefix = source.read(0, want as usize)?;
            match Self::parse_prefix(&prefix, total) {
                Err(CoreError::InvalidInput(m)) if m == NEED_MORE && want < total => want = (want * 4).min(total),
                other => return other,
            }
        }
    }

    /// Parses the header from the first bytes `bytes` of a `total`-byte file ([`NEED_MORE`] when they end early).
    pub fn parse_prefix(bytes: &[u8], total: u64) -> Result<Self> {
        let mut r = Reader { bytes, total, pos: 0 };
        if r.take(4, "magic")? != MAGIC {
            return Err(bad("not a GGUF file (bad magic)"));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!("unsupported version {version} (supported: 2, 3)")));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_metadata = r.u64("metadata count")?;
        if n_tensors > MAX_TENSORS || n_metadata > MAX_METADATA {
            return Err(bad(format!(
                "{n_tensors} tensors / {n_metadata} metadata entries exceed the caps ({MAX_TENSORS} / {MAX_METADATA})"
            )));
        }
        let mut metadata = Vec::new();
        for _ in 0..n_metadata {
            let key = r.string("metadata key")?;
            let ty = r.u32(&key)?;
            let value = r.value(ty, &key, 0)?;
            metadata.push((key, value));
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(bad(format!("tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} supported)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&name)?);
            }
            let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d).filter(|_| d > 0));
            let elements =
                elements.ok_or_else(|| bad(format!("tensor `{name}`: dims {dims:?} are empty or overflow")))?;
            let id = r.u32(&name)?;
            let ty = GgmlType::from_id(id).ok_or_else(|| {
                bad(format!("tensor `{name}`: unsupported ggml type {id} (F32, F16, BF16, Q8_0, TQ1_0, TQ2_0, I2_S)"))
            })?;
            let offset = r.u64(&name)?;
            let size = ty.bytes_for(elements).ok_or_else(|| bad(format!("tensor `{name}`: size overflows")))?;
            tensors.push(TensorInfo { name, dims, ty, offset, size });
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, v)) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| bad("general.alignment must be a power of two"))?,
            None => 32,
        };
        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for pair in by_offset.windows(2) {
            if pair[0].offset.saturating_add(pair[0].size) > pair[1].offset {
                return Err(bad(format!(
                    "tensors `{}` and `{}` overlap in the data section",
                    pair[0].name, pair[1].name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        if let Some(t) = tensors.iter().find(|t| !names.insert(t.name.as_str())) {
            return Err(bad(format!("tensor `{}` is listed twice", t.name)));
        }
        for t in &tensors {
            let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.size));
            if !t.offset.is_multiple_of(alignment) || end.is_none_or(|e| e > total) {
                return Err(bad(format!(
                    "tensor `{}` ({} bytes at data offset {}) lies outside the {total}-byte file or off the \
                     {alignment}-byte alignment",
                    t.name, t.size, t.offset
                )));
            }
        }
        Ok(Gguf { version, metadata, tensors, data_offset })
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The bytes of tensor `t` within `file` (checked by [`Gguf::parse`]).
    pub fn data<'a>(&self, file: &'a [u8], t: &TensorInfo) -> &'a [u8] {
        let start = (self.data_offset + t.offset) as usize;
        &file[start..start + t.size as usize]
    }

    /// Where tensor `t`'s bytes lie in the file: offset and length.
    pub fn range(&self, t: &TensorInfo) -> (u64, usize) {
        (self.data_offset + t.offset, t.size as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::Str("bitnet".into())).meta("answer", Value::Uint(42));
        w.tensor("a", &[2, 3], GgmlType::F32, (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect());
        w.tensor("t", &[4, 256], GgmlType::TQ2_0, codec::encode_tq2_0(&[1; 1024], 1.0));
        w.to_bytes()
    }

    fn error(bytes: &[u8]) -> String {
        Gguf::parse(bytes).unwrap_err().to_string()
    }

    /// A header with `n_tensors` tensors of one 1-D F32 tensor info each (name "x", `dims`, type `ty`, offset 0).
    fn header(version: u32, n_tensors: u64, dims: &[u64], ty: u32) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&n_tensors.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'x');
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b
    }

    #[test]
    fn written_files_parse_back() {
        let bytes = sample();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!((g.version, g.get("answer").and_then(Value::as_u64)), (3, Some(42)));
        assert_eq!(g.tensors[0].shape(), vec![2, 3]);
        assert_eq!(g.data(&bytes, &g.tensors[0])[4..8], 1f32.to_le_bytes());
        assert_eq!((g.tensors[1].ty, g.tensors[1].size), (GgmlType::TQ2_0, 4 * 66));
    }

    #[test]
    fn malformed_files_are_refused_with_the_reason() {
        let good = sample();
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(error(&bad_magic).contains("bad magic"));
        assert!(error(&header(7, 1, &[4], 0)).contains("unsupported version 7"));
        assert!(error(&header(3, u64::MAX, &[4], 0)).contains("exceed the caps"));
        assert!(error(&header(3, 1, &[u64::MAX, 3], 0)).contains("overflow"));
        assert!(error(&header(3, 1, &[4], 99)).contains("unsupported ggml type 99"));
        assert!(error(&header(3, 1, &[4], 0)).contains("outside"), "tensor data past the end");
        assert!(error(&good[..good.len() - 40]).contains("outside"), "last tensor cut short");
        assert!(error(&good[..30]).contains("runs past the end"));
        let mut huge_string = header(3, 0, &[], 0)[..24].to_vec();
        huge_string[16..24].copy_from_slice(&1u64.to_le_bytes());
        huge_string.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(error(&huge_string).contains("cap"));
    }
}
