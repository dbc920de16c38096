//! Element types of stored tensors and their exact decoding to f32.

use half::{bf16, f16};

/// Element type of a stored tensor, as far as Ternlight reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16 (upper half of an f32).
    BF16,
    /// Signed 64-bit integer (token ids in fixtures).
    I64,
    /// Unsigned byte (packed ternary weights).
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 => 1,
        }
    }

    /// Whether the type is a float type the matmul kernels accept as weights.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// The safetensors name of the type.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::U8 => "U8",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes little-endian float bytes of `dtype` to f32 exactly (every f16/bf16 value is an f32 value).
/// Returns `None` for non-float types.
pub fn decode_f32(dtype: DType, bytes: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        DType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::I64 | DType::U8 => return None,
    };
    Some(out)
}

/// The index of the first NaN or infinite element of little-endian `bytes` of `dtype` (`None` when all are
/// finite, or the type is not a float type). Looks only at exponent bits: no decoding.
pub fn first_non_finite(dtype: DType, bytes: &[u8]) -> Option<usize> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .position(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000),
        DType::F16 => bytes.chunks_exact(2).position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
        DType::BF16 => bytes.chunks_exact(2).position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80),
        DType::I64 | DType::U8 => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_elements_are_found_in_every_float_type() {
        for (dtype, bad) in [
            (DType::F32, f32::NAN.to_le_bytes().to_vec()),
            (DType::F32, f32::NEG_INFINITY.to_le_bytes().to_vec()),
            (DType::F16, f16::INFINITY.to_le_bytes().to_vec()),
            (DType::BF16, bf16::NAN.to_le_bytes().to_vec()),
        ] {
            let finite = match dtype {
                DType::F32 => f32::MAX.to_le_bytes().to_vec(),
                DType::F16 => f16::MAX.to_le_bytes().to_vec(),
                _ => bf16::MIN.to_le_bytes().to_vec(),
            };
            let bytes = [finite.clone(), finite.clone(), bad, finite.clone()].concat();
            assert_eq!(first_non_finite(dtype, &bytes), Some(2), "{dtype}");
            assert_eq!(first_non_finite(dtype, &finite), None, "{dtype}");
        }
        assert_eq!(first_non_finite(DType::U8, &[0xff; 4]), None);
    }

    #[test]
    fn bf16_and_f16_decode_exactly() {
        let values = [0.0f32, -1.5, 3.140625, 65504.0, -2.0e-3];
        for v in values {
            let b = bf16::from_f32(v);
            assert_eq!(decode_f32(DType::BF16, &b.to_le_bytes()).unwrap()[0], b.to_f32());
            let h = f16::from_f32(v);
            assert_eq!(decode_f32(DType::F16, &h.to_le_bytes()).unwrap()[0], h.to_f32());
        }
        assert_eq!(decode_f32(DType::F32, &1.25f32.to_le_bytes()).unwrap(), vec![1.25]);
        assert!(decode_f32(DType::U8, &[1]).is_none());
    }
}
