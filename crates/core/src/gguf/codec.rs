//! Block codecs of the GGUF types Ternlight reads, following llama.cpp's reference quantisers
//! (`quantize_row_tq{1,2}_0_ref` and their dequantisers) and bitnet.cpp's x86 I2_S layout.

use half::f16;

/// Weights per ternary block (TQ1_0, TQ2_0).
pub const TERNARY_BLOCK: usize = 256;

/// Ternary codes in {-1, 0, 1} and one scale per 256-weight block.
pub struct TernaryBlocks {
    /// The codes, `n` of them.
    pub codes: Vec<i8>,
    /// Scale per block.
    pub scales: Vec<f32>,
}

/// Trit `c + 1` of code `c`.
fn trit(c: i8) -> u8 {
    (c + 1) as u8
}

/// TQ2_0: per block, 64 bytes of 2-bit codes (element `128 h + 32 n + m` in bits `2n` of byte `32 h + m`) then the
/// f16 scale. `codes` is padded with zeros to whole blocks; every block gets `scale`.
pub fn encode_tq2_0(codes: &[i8], scale: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for block in codes.chunks(TERNARY_BLOCK) {
        let at = |i: usize| trit(block.get(i).copied().unwrap_or(0));
        for half in 0..2 {
            for m in 0..32 {
                let byte = (0..4).fold(0u8, |acc, n| acc | at(128 * half + 32 * n + m) << (2 * n));
                out.push(byte);
            }
        }
        out.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
    }
    out
}

/// Decodes `n` TQ2_0 weights.
pub fn decode_tq2_0(bytes: &[u8], n: usize) -> TernaryBlocks {
    let (mut codes, mut scales) = (Vec::with_capacity(n), Vec::new());
    for block in bytes.chunks_exact(66) {
        let mut values = [0i8; TERNARY_BLOCK];
        for half in 0..2 {
            for m in 0..32 {
                let byte = block[32 * half + m];
                for n in 0..4 {
                    values[128 * half + 32 * n + m] = ((byte >> (2 * n)) & 3) as i8 - 1;
                }
            }
        }
        codes.extend_from_slice(&values);
        scales.push(f16::from_le_bytes([block[64], block[65]]).to_f32());
    }
    codes.truncate(n);
    TernaryBlocks { codes, scales }
}

/// Base-3 packing of TQ1_0: `trits` most significant first into one byte, scaled by 256 / 243 rounding up.
fn pack_trits(trits: impl Iterator<Item = u8>) -> u8 {
    let q = trits.fold(0u16, |acc, t| acc * 3 + t as u16);
    ((q * 256).div_ceil(243)) as u8
}

/// Trit `n` (most significant first) of a TQ1_0 byte.
fn unpack_trit(byte: u8, n: u32) -> i8 {
    let q = byte.wrapping_mul(3u8.pow(n)) as u16;
    ((q * 3) >> 8) as i8 - 1
}

/// TQ1_0: per block, 48 bytes of five trits (elements `m + 32n` for bytes 0..32, `160 + m + 16n` for 32..48), 4
/// bytes of four trits (elements `240 + j + 4n`), then the f16 scale. Padded and scaled like [`encode_tq2_0`].
pub fn encode_tq1_0(codes: &[i8], scale: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for block in codes.chunks(TERNARY_BLOCK) {
        let at = |i: usize| trit(block.get(i).copied().unwrap_or(0));
        for m in 0..32 {
            out.push(pack_trits((0..5).map(|n| at(m + 32 * n))));
        }
        for m in 0..16 {
            out.push(pack_trits((0..5).map(|n| at(160 + m + 16 * n))));
        }
        for j in 0..4 {
            // Four trits then a zero: the first value lands in the most significant trit.
            out.push(pack_trits((0..4).map(|n| at(240 + j + 4 * n)).chain([0])));
        }
        out.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
    }
    out
}

/// Decodes `n` TQ1_0 weights.
pub fn decode_tq1_0(bytes: &[u8], n: usize) -> TernaryBlocks {
    let (mut codes, mut scales) = (Vec::with_capacity(n), Vec::new());
    for block in bytes.chunks_exact(54) {
        let mut values = [0i8; TERNARY_BLOCK];
        for m in 0..32 {
            for k in 0..5 {
                values[m + 32 * k] = unpack_trit(block[m], k as u32);
            }
        }
        for m in 0..16 {
            for k in 0..5 {
                values[160 + m + 16 * k] = unpack_trit(block[32 + m], k as u32);
            }
        }
        for j in 0..4 {
            for k in 0..4 {
                values[240 + j + 4 * k] = unpack_trit(block[48 + j], k as u32);
            }
        }
        codes.extend_from_slice(&values);
        scales.push(f16::from_le_bytes([block[52], block[53]]).to_f32());
    }
    codes.truncate(n);
    TernaryBlocks { codes, scales }
}

/// Decodes `n` bitnet.cpp I2_S weights (x86 layout: per 128-weight block of 32 bytes, byte j holds weights j, 32 + j,
/// 64 + j, 96 + j in bits 7-6, 5-4, 3-2, 1-0 as {0, 1, 2} = {-1, 0, 1}; one f32 scale after the codes).
pub fn decode_i2_s(bytes: &[u8], n: usize) -> TernaryBlocks {
    let code_bytes = n.div_ceil(128) * 32;
    let mut codes = Vec::with_capacity(n);
    for block in bytes[..code_bytes].chunks_exact(32) {
        let mut values = [0i8; 128];
        for (j, &byte) in block.iter().enumerate() {
            for g in 0..4 {
                values[32 * g + j] = ((byte >> (6 - 2 * g)) & 3) as i8 - 1;
            }
        }
        codes.extend_from_slice(&values);
    }
    codes.truncate(n);
    let scale = f32::from_le_bytes(bytes[code_bytes..code_bytes + 4].try_into().expect("4 bytes"));
    TernaryBlocks { codes, scales: vec![scale] }
}

/// Decodes `n` Q8_0 weights (blocks of an f16 scale then 32 signed bytes).
pub fn decode_q8_0(bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    for block in bytes.chunks_exact(34) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        out.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(n: usize, seed: u64) -> Vec<i8> {
        let mut rng = crate::sampling::Rng::new(seed);
        (0..n).map(|_| (rng.next_f32() * 3.0).floor() as i8 - 1).collect()
    }

    #[test]
    fn tq2_0_and_tq1_0_round_trip_codes_losslessly() {
        for n in [1, 255, 256, 700] {
            let c = codes(n, n as u64);
            let two = encode_tq2_0(&c, 0.5);
            assert_eq!(two.len(), n.div_ceil(256) * 66);
            let back = decode_tq2_0(&two, n);
            assert_eq!((back.codes, back.scales[0]), (c.clone(), 0.5));
            let one = encode_tq1_0(&c, 1.0);
            assert_eq!(one.len(), n.div_ceil(256) * 54);
            assert_eq!(decode_tq1_0(&one, n).codes, c, "TQ1_0 n={n}");
        }
    }

    #[test]
    fn tq1_0_matches_llama_cpp_byte_for_a_known_block() {
        // Five trits 2,1,0,2,1 -> q = 2*81 + 1*27 + 0*9 + 2*3 + 1 = 196 -> ceil(196 * 256 / 243) = 207.
        assert_eq!(pack_trits([2u8, 1, 0, 2, 1].into_iter()), 207);
        let decoded: Vec<i8> = (0..5).map(|k| unpack_trit(207, k)).collect();
        assert_eq!(decoded, vec![1, 0, -1, 1, 0]);
    }

    #[test]
    fn i2_s_and_q8_0_decode() {
        let mut bytes = vec![0u8; 32];
        bytes[0] = 0b10_01_00_10; // weights 0, 32, 64, 96 = 1, 0, -1, 1
        bytes.extend_from_slice(&0.25f32.to_le_bytes());
        bytes.resize(64, 0);
        let d = decode_i2_s(&bytes, 128);
        assert_eq!((d.codes[0], d.codes[32], d.codes[64], d.codes[96], d.scales[0]), (1, 0, -1, 1, 0.25));
        let mut q = f16::from_f32(0.5).to_le_bytes().to_vec();
        q.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = decode_q8_0(&q, 32);
        assert_eq!((v[0], v[31]), (-8.0, 7.5));
    }
}
