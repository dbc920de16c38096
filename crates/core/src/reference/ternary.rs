//! BitNet b1.58 arithmetic: ternary weight codes and their multiplier, and per-token int8 activation fake-quantisation,
//! as transformers' `BitLinear` / `AutoBitLinear` compute them.

/// Unpacks transformers' `bitlinear` layout `u8 [out / 4, in]` (byte row r holds output rows r, r + R, r + 2R, r + 3R,
/// `R = out / 4`, in bit pairs 0-1 .. 6-7 as `t + 1`) into codes `[out, in]` in {-1, 0, 1}.
pub fn unpack_rows(packed: &[u8], out: usize, inp: usize) -> Vec<f32> {
    let r = out / 4;
    let mut w = vec![0.0; out * inp];
    for (i, &byte) in packed.iter().enumerate().take(r * inp) {
        let (row, col) = (i / inp, i % inp);
        for part in 0..4 {
            w[(part * r + row) * inp + col] = ((byte >> (2 * part)) & 3) as f32 - 1.0;
        }
    }
    w
}

/// Absmean ternarisation (rounding half to even, as torch does): codes `clamp(round(w / m), -1, 1)` and the multiplier `m = max(mean|w|, 1e-5)`.
pub fn absmean(w: &[f32]) -> (Vec<f32>, f32) {
    let m = (w.iter().map(|v| v.abs()).sum::<f32>() / w.len() as f32).max(1e-5);
    (w.iter().map(|v| (v / m).round_ties_even().clamp(-1.0, 1.0)).collect(), m)
}

/// Per-row int8 fake-quantisation (rounding half to even, as torch and WGSL do) `round(x s).clamp(-128, 127) / s` with `s = 127 / max(max|x|, 1e-5)`, rows of `dim`.
pub fn act_quant(x: &[f32], dim: usize) -> Vec<f32> {
    x.chunks_exact(dim)
        .flat_map(|row| {
            let s = 127.0 / row.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-5);
            row.iter().map(move |v| (v * s).round_ties_even().clamp(-128.0, 127.0) / s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rows_unpack_to_their_output_rows() {
        // out 4, in 2: byte row 0 holds rows 0..4 in bit pairs; codes t + 1.
        let packed = [0b10_01_00_10u8, 0b00_00_10_01];
        let w = unpack_rows(&packed, 4, 2);
        assert_eq!(w, vec![1.0, 0.0, -1.0, 1.0, 0.0, -1.0, 1.0, -1.0]);
    }

    #[test]
    fn absmean_and_act_quant_round_as_bitnet_does() {
        let (codes, m) = absmean(&[0.5, -0.1, 0.0, 1.5]);
        assert_eq!((codes, m), (vec![1.0, -0.0, 0.0, 1.0], 0.525));
        let q = act_quant(&[1.0, -0.5, 0.25], 3);
        assert_eq!(q[0], 1.0);
        assert!((q[1] + 64.0 / 127.0).abs() < 1e-7 && (q[2] - 32.0 / 127.0).abs() < 1e-7);
    }
}
