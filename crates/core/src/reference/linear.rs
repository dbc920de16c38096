//! Dense linear layers in PyTorch layout.

/// `y = x W^T + b` for x [rows, k], W [n, k], b [n]: y [rows, n].
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, k: usize, n: usize) -> Vec<f32> {
    let rows = x.len() / k;
    let mut y = vec![0.0f32; rows * n];
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        for j in 0..n {
            let wj = &w[j * k..(j + 1) * k];
            let mut acc = 0.0f32;
            for i in 0..k {
                acc += xr[i] * wj[i];
            }
            y[r * n + j] = acc + bias.map_or(0.0, |b| b[j]);
        }
    }
    y
}
