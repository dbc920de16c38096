//! RMSNorm and LayerNorm.

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

/// LayerNorm over consecutive groups of `dim` values: `(x - mean) / sqrt(var + eps) * w + b`. `w` and `b` cover
/// a whole row of one or more groups (a group norm's per-channel affine); rows are `w.len()` wide.
pub fn layer_norm(x: &[f32], w: &[f32], b: Option<&[f32]>, dim: usize, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(w.len()) {
        for (gi, group) in row.chunks_exact(dim).enumerate() {
            let mean = group.iter().sum::<f32>() / dim as f32;
            let var = group.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (c, v) in group.iter().enumerate() {
                let ch = gi * dim + c;
                out.push((v - mean) * inv * w[ch] + b.map_or(0.0, |b| b[ch]));
            }
        }
    }
    out
}
