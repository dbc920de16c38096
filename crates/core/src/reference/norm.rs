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

/// Gated RMSNorm over groups of `dim`: `rms_norm(x) * w * silu(gate)` (Gated DeltaNet outputs).
pub fn rms_norm_gated(x: &[f32], gate: &[f32], w: &[f32], dim: usize, eps: f32) -> Vec<f32> {
    let normed = rms_norm(x, w, dim, eps, false);
    normed.iter().zip(gate).map(|(n, &g)| n * super::mlp::activate(crate::spec::Activation::Silu, g)).collect()
}
