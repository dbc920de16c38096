//! RMSNorm.

/// RMSNorm over consecutive groups of `dim` values: `x / sqrt(mean(x^2) + eps) * w` (or `* (1 + w)`).
pub fn rms_norm(x: &[f32], w: &[f32], dim: usize, eps: f32, unit_offset: bool) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(dim) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for (v, &g) in row.iter().zip(w) {
            out.push(v * inv * if unit_offset { 1.0 + g } else { g });
        }
    }
    out
}
