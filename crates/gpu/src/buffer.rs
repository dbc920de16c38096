//! GPU memory: f32 activation buffers, weight matrices in their stored dtype, and readback.
//!
//! A weight matrix larger than the device's storage-binding limit is split into row blocks, one buffer each;
//! kernels dispatch once per block and write the matching slice of their output.

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use ternlight_core::dtype::DType;
use wgpu::util::DeviceExt;

/// Usage of every storage buffer Ternlight creates: bindable, copyable both ways.
const STORAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// One row block of a weight matrix.
pub struct WeightBlock {
    /// The block's bytes, in the matrix's dtype, row-major.
    pub buffer: wgpu::Buffer,
    /// First matrix row held.
    pub row0: usize,
    /// Rows held.
    pub rows: usize,
}

/// A `[rows, cols]` matrix kept in its stored dtype (f32, f16 or bf16) on the GPU, or as ternary codes.
pub struct Weight {
    /// Storage dtype (16-bit types are packed two per u32 and decoded in the kernel); `U8` for ternary codes.
    pub dtype: DType,
    /// Ternary codes in {-1, 0, 1}, 2 bits each, 16 per u32 in row-major element order (`code + 1`).
    pub ternary: bool,
    /// Matrix rows (output features of a linear layer, vocabulary of an embedding).
    pub rows: usize,
    /// Matrix columns (input features).
    pub cols: usize,
    /// Row blocks, each within the binding limit.
    pub blocks: Vec<WeightBlock>,
}

impl Weight {
    /// Whether `other` has this matrix's shape, storage and row blocks, so that one kernel can read the two side by
    /// side (a gated MLP's gate and up projections).
    pub fn same_layout(&self, other: &Weight) -> bool {
        (self.rows, self.cols, self.dtype, self.ternary) == (other.rows, other.cols, other.dtype, other.ternary)
            && self.blocks.len() == other.blocks.len()
            && self.blocks.iter().zip(&other.blocks).all(|(a, b)| (a.row0, a.rows) == (b.row0, b.rows))
    }

    /// Elements in one stored u32/f32 word (`EPW` in `common/weights.wgsl`): 16 ternary codes, two 16-bit floats, one f32.
    pub fn elements_per_word(&self) -> usize {
        match self.dtype {
            _ if self.ternary => 16,
            DType::F32 => 1,
            _ => 2,
        }
    }

    /// Uploads a row-major matrix from its raw little-endian bytes, split into blocks of at most `max_binding` bytes.
    pub fn upload(
        gpu: &Gpu,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        max_binding: u64,
    ) -> Result<Self> {
        Self::upload_grouped(gpu, name, (dtype, rows, cols), bytes, max_binding, 1)
    }

    /// [`Weight::upload`] with blocks that split the rows only at multiples of `row_group` (stacked experts: a block
    /// holds whole experts).
    pub fn upload_grouped(
        gpu: &Gpu,
        name: &str,
        (dtype, rows, cols): (DType, usize, usize),
        bytes: &[u8],
        max_binding: u64,
        row_group: usize,
    ) -> Result<Self> {
        if !dtype.is_float() {
            return Err(GpuError::shape("weight upload", format!("{name}: dtype {dtype} is not a float type")));
        }
        let row_bytes = cols * dtype.size();
        if bytes.len() != rows * row_bytes {
            return Err(GpuError::shape(
                "weight upload",
                format!("{name}: {} bytes for [{rows}, {cols}] {dtype}", bytes.len()),
            ));
        }
        // Blocks start on 4-byte boundaries: 16-bit rows of odd width pair up.
        let pair = if dtype.size() == 2 && cols % 2 == 1 { 2 } else { 1 };
        let align = if row_group.is_multiple_of(pair) { row_group } else { row_group * pair };
        let mut per_block = ((max_binding / row_bytes.max(1) as u64).min(rows.max(1) as u64)) as usize;
        if per_block < rows {
            per_block -= per_block % align;
        }
        if per_block == 0 {
            return Err(GpuError::Limit(format!(
                "{name}: {align} row(s) of {row_bytes} bytes exceed the {max_binding}-byte binding limit"
            )));
        }
        let blocks = (0..rows)
            .step_by(per_block)
            .map(|row0| {
                let n = per_block.min(rows - row0);
                let data = &bytes[row0 * row_bytes..(row0 + n) * row_bytes];
                let padded: Vec<u8>;
                let contents = match data.len().is_multiple_of(4) && !data.is_empty() {
                    true => data,
                    false => {
                        padded = [data, &[0; 4][..4 - data.len() % 4]].concat();
                        &padded
                    }
                };
                let buffer = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(name),
                    contents,
                    usage: STORAGE,
                });
                WeightBlock { buffer, row0, rows: n }
            })
            .collect();
        Ok(Weight { dtype, ternary: false, rows, cols, blocks })
    }

    /// The one-block f32 matrices `parts` stacked row-wise into a new one-block matrix, copied on the GPU: one
    /// binding where a kernel would otherwise take one per part (Hybrid Gated Flow corrections of stacked
    /// projections under a storage-buffer limit).
    pub fn stack_rows(gpu: &Gpu, name: &str, parts: &[&Weight]) -> Result<Self> {
        let cols = parts.first().map_or(0, |w| w.cols);
        let alike = |w: &&Weight| (w.dtype, w.ternary, w.cols, w.blocks.len()) == (DType::F32, false, cols, 1);
        if parts.is_empty() || !parts.iter().all(alike) {
            return Err(GpuError::shape("stack_rows", format!("{name}: one-block f32 matrices of one width")));
        }
        let rows: usize = parts.iter().map(|w| w.rows).sum();
        let size = (rows * cols * 4).max(4) as u64;
        if size > gpu.info.max_binding {
            return Err(GpuError::Limit(format!("{name}: {size} bytes exceed the binding limit")));
        }
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size,
            usage: STORAGE,
            mapped_at_creation: false,
        });
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for w in parts {
            let bytes = (w.rows * cols * 4) as u64;
            encoder.copy_buffer_to_buffer(&w.blocks[0].buffer, 0, &buffer, at, bytes);
            at += bytes;
        }
        gpu.queue.submit([encoder.finish()]);
        Ok(Weight {
            dtype: DType::F32,
            ternary: false,
            rows,
            cols,
            blocks: vec![WeightBlock { buffer, row0: 0, rows }],
        })
    }

    /// Uploads ternary `codes` (`[rows, cols]`, each -1, 0 or 1) packed 16 per u32 (2 bits per weight), in row blocks
    /// of at most `max_binding` bytes that start on whole words.
    pub fn upload_ternary(
        gpu: &Gpu,
        name: &str,
        codes: &[i8],
        rows: usize,
        cols: usize,
        max_binding: u64,
    ) -> Result<Self> {
        if codes.len() != rows * cols || codes.iter().any(|c| !(-1..=1).contains(c)) {
            return Err(GpuError::shape(
                "ternary upload",
                format!("{name}: {} codes in -1..=1 for [{rows}, {cols}]", codes.len()),
            ));
        }
        // A block must start on a word: its first element index is a multiple of 16.
        let align = (1..=16).find(|r| (r * cols).is_multiple_of(16)).unwrap_or(16);
        // Four codes per byte; in u64, as the byte limit times four overflows a 32-bit usize (wasm32).
        let mut per_block = ((max_binding.saturating_mul(4) / cols.max(1) as u64).min(rows.max(1) as u64)) as usize;
        if per_block < rows {
            per_block -= per_block % align;
        }
        if per_block == 0 {
            return Err(GpuError::Limit(format!(
                "{name}: {align} ternary rows exceed the {max_binding}-byte binding limit"
            )));
        }
        let blocks = (0..rows)
            .step_by(per_block)
            .map(|row0| {
                let n = per_block.min(rows - row0);
                let part = &codes[row0 * cols..(row0 + n) * cols];
                let mut words = vec![0u32; part.len().div_ceil(16).max(1)];
                for (i, &c) in part.iter().enumerate() {
                    words[i / 16] |= ((c + 1) as u32) << (2 * (i % 16));
                }
                let buffer = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(name),
                    contents: bytemuck::cast_slice(&words),
                    usage: STORAGE,
                });
                WeightBlock { buffer, row0, rows: n }
            })
            .collect();
        Ok(Weight { dtype: DType::U8, ternary: true, rows, cols, blocks })
    }

    /// Bytes resident on the GPU.
    pub fn bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.buffer.size()).sum()
    }
}

impl Gpu {
    /// A zero-filled f32 buffer of `len` elements.
    pub fn zeros(&self, label: &str, len: usize) -> wgpu::Buffer {
        let size = (len.max(1) * 4) as u64;
        self.allocated.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: STORAGE,
            mapped_at_creation: false,
        })
    }

    /// Bytes of the buffers [`Gpu::zeros`] and [`Gpu::upload_f32`] have created so far. Never decremented: a phase's
    /// share (the KV cache and scratch of a session) is the difference across it.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An f32 buffer holding `data`.
    pub fn upload_f32(&self, label: &str, data: &[f32]) -> wgpu::Buffer {
        let contents: &[u8] = if data.is_empty() { &[0; 4] } else { bytemuck::cast_slice(data) };
        self.allocated.fetch_add(contents.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: STORAGE,
        })
    }

    /// A uniform buffer holding `words`.
    pub fn uniform(&self, label: &str, words: &[u32]) -> wgpu::Buffer {
        let mut data = words.to_vec();
        data.resize(data.len().div_ceil(4).max(1) * 4, 0);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(&data),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// Copies `len` f32 values starting at element `offset` of `buffer` back to the host (one-off readbacks;
    /// per-forward readbacks use a persistent [`Staging`] buffer recorded into the forward's own submit).
    pub async fn read_f32(&self, buffer: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<f32>> {
        let staging = Staging::new(self, len);
        let mut encoder = self.device.create_command_encoder(&Default::default());
        staging.record_copy(&mut encoder, buffer, offset, len);
        self.queue.submit([encoder.finish()]);
        staging.read(self, len).await
    }
}

/// A host-readable buffer kept for repeated readbacks (the logits of every forward), so reading back costs
/// neither an allocation nor a second submit.
pub struct Staging {
    buffer: wgpu::Buffer,
}

impl Staging {
    /// A staging buffer for up to `len` f32 values.
    pub fn new(gpu: &Gpu, len: usize) -> Self {
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: (len.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Staging { buffer }
    }

    /// Records a copy of `len` f32 values from element `offset` of `src` into this buffer.
    pub fn record_copy(&self, encoder: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, offset: usize, len: usize) {
        encoder.copy_buffer_to_buffer(src, (offset * 4) as u64, &self.buffer, 0, (len * 4) as u64);
    }

    /// Waits for the submitted copy and returns the first `len` values.
    pub async fn read(&self, gpu: &Gpu, len: usize) -> Result<Vec<f32>> {
        let size = (len * 4) as u64;
        let (tx, rx) = futures_channel::oneshot::channel();
        self.buffer.map_async(wgpu::MapMode::Read, ..size.max(4), move |r| {
            let _ = tx.send(r);
        });
        gpu.wait()?;
        let mapped = rx.await;
        // After the wait: in the browser a device loss is reported while the mapping is pending, and it explains
        // a failed mapping better than the mapping's own error.
        gpu.check_errors("running the GPU work")?;
        mapped
            .map_err(|_| GpuError::Execution("readback was cancelled".into()))?
            .map_err(|e| GpuError::Execution(format!("readback failed: {e}")))?;
        let view = self.buffer.get_mapped_range(..size.max(4)).map_err(|e| GpuError::Execution(e.to_string()))?;
        let out = bytemuck::cast_slice::<u8, f32>(&view[..size as usize]).to_vec();
        drop(view);
        self.buffer.unmap();
        Ok(out)
    }
}
