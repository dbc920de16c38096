//! Rotary position embedding, rotate-half convention, optionally on a leading slice of each head.

/// Rotates `x` [tokens, heads, head_dim] in place; token t sits at position `pos0 + t`. `cos`/`sin` are
/// [positions, rotary_dim / 2] tables (see `RopeSpec::tables`).
pub fn rope(x: &mut [f32], heads: usize, head_dim: usize, rotary_dim: usize, pos0: usize, cos: &[f32], sin: &[f32]) {
    let half = rotary_dim / 2;
    for (t, tok) in x.chunks_exact_mut(heads * head_dim).enumerate() {
        let row = (pos0 + t) * half;
        for head in tok.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (c, s) = (cos[row + i], sin[row + i]);
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * s;
                head[i + half] = b * c + a * s;
            }
        }
    }
}
