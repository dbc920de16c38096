//! Token embedding lookup.

/// Rows `ids` of `table` ([vocab, dim]), each multiplied by `scale`: out [ids.len(), dim].
pub fn embedding(table: &[f32], dim: usize, ids: &[u32], scale: f32) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| table[id as usize * dim..(id as usize + 1) * dim].iter().map(move |v| v * scale))
        .collect()
}
