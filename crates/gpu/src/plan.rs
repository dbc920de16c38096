//! A forward pass as data: a list of GPU operations recorded once and encoded into one command buffer per
//! forward. Sizes that change between forwards (tokens in the batch, logit rows, the position) are read from
//! a shared [`Step`] uniform and from the host-side [`Step`] when dispatch counts and copy ranges are computed.

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::shader::Defines;
use std::sync::Arc;

/// What changes from one forward to the next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// Position of the first token.
    pub pos0: u32,
    /// Tokens in this forward.
    pub n_tokens: u32,
    /// Token indices (within this forward) whose logits are wanted.
    pub logit_rows: Vec<u32>,
}

impl Step {
    fn rows(&self, rows: Rows) -> u32 {
        match rows {
            Rows::Tokens => self.n_tokens,
            Rows::Logits => self.logit_rows.len() as u32,
        }
    }

    fn uniform_words(&self) -> [u32; 4] {
        [self.pos0, self.n_tokens, self.logit_rows.len() as u32, 0]
    }
}

/// Which per-forward count a dispatch's rows follow (matches `row_count` in `common/step.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// One row per token of the forward.
    Tokens,
    /// One row per requested logit row.
    Logits,
}

impl Rows {
    /// The selector value the shaders read.
    pub fn selector(self) -> u32 {
        match self {
            Rows::Tokens => 0,
            Rows::Logits => 1,
        }
    }
}

/// How many workgroups a dispatch launches, as a function of the [`Step`].
#[derive(Clone, Copy, Debug)]
pub enum Grid {
    /// `rows * per_row` items, `per_group` per workgroup, laid out flat (split over x and z beyond 65535).
    Flat {
        /// Row count source.
        rows: Rows,
        /// Items per row.
        per_row: u32,
        /// Items per workgroup.
        per_group: u32,
    },
    /// A fixed number of workgroups (per head, per channel block), whatever the token count (split over x and z
    /// beyond 65535 like [`Grid::Flat`]).
    Fixed(u32),
    /// `per_chunk` workgroups for each chunk of `chunk` tokens, laid out flat.
    Chunks {
        /// Tokens per chunk.
        chunk: u32,
        /// Workgroups per chunk.
        per_chunk: u32,
    },
    /// A 2-D grid: `x` fixed, `y` = ceil(rows / rows_per_group).
    Tiles {
        /// Workgroups along x.
        x: u32,
        /// Row count source.
        rows: Rows,
        /// Rows covered by one workgroup along y.
        rows_per_group: u32,
    },
}

const MAX_GROUPS: u32 = 65535;

impl Grid {
    fn workgroups(&self, step: &Step) -> [u32; 3] {
        let flat =
            |total: u32| if total <= MAX_GROUPS { [total, 1, 1] } else { [MAX_GROUPS, 1, total.div_ceil(MAX_GROUPS)] };
        match *self {
            Grid::Flat { rows, per_row, per_group } => flat((step.rows(rows) * per_row).div_ceil(per_group)),
            Grid::Fixed(x) => flat(x),
            Grid::Chunks { chunk, per_chunk } => flat(step.n_tokens.div_ceil(chunk) * per_chunk),
            Grid::Tiles { x, rows, rows_per_group } => [x, step.rows(rows).div_ceil(rows_per_group), 1],
        }
    }
}

/// One recorded GPU operation.
pub enum Op {
    /// A compute dispatch.
    Dispatch {
        /// The compiled kernel.
        pipeline: Arc<wgpu::ComputePipeline>,
        /// Its bound buffers.
        bind_group: wgpu::BindGroup,
        /// Its launch size.
        grid: Grid,
        /// The shader file it runs (how a profile names it).
        kernel: Arc<str>,
        /// The weight bytes and arithmetic it does, where its kernel declares them (see [`Plan::set_work`]).
        work: Option<Work>,
    },
    /// Appends this forward's rows to a cache of `cache_rows` rows: position p goes to row `p % cache_rows`
    /// (one copy, or two when the forward wraps around a ring).
    AppendRows {
        /// Rows of this forward, `[n_tokens, row]`.
        src: wgpu::Buffer,
        /// The cache, `[cache_rows, row]`.
        dst: wgpu::Buffer,
        /// Bytes per row.
        row_bytes: u64,
        /// Rows the cache holds.
        cache_rows: u64,
        /// Leading rows pinned to the first positions (attention sinks); later positions cycle through the rest.
        pinned: u64,
    },
    /// Copies this forward's rows of `src` to the same rows of `dst` (`[n_tokens, row]`): a block without a
    /// pre-norm reads the stream through a copy, since a kernel may not read and accumulate into one buffer, and
    /// attention taps keep a layer's projections. Source rows may sit inside wider ones ([`Op::copy_rows`] for
    /// rows that do not).
    CopyTokenRows {
        /// Source rows.
        src: wgpu::Buffer,
        /// Byte offset of the first row's bytes in `src`, and bytes from one source row to the next.
        src_at: (u64, u64),
        /// Destination rows.
        dst: wgpu::Buffer,
        /// Bytes per row.
        row_bytes: u64,
    },
    /// Marks where the work of stage `n` begins (a model layer; stages are counted in order), so a profiled
    /// forward can time each stage. Costs nothing unprofiled.
    Stage(usize),
    /// Gathers the requested logit rows of `src` (`[n_tokens, row]`) into `dst` (`[n_logits, row]`).
    GatherLogitRows {
        /// Per-token rows.
        src: wgpu::Buffer,
        /// Gathered rows.
        dst: wgpu::Buffer,
        /// Bytes per row.
        row_bytes: u64,
    },
}

impl Op {
    /// Copies this forward's rows of `src` to the same rows of `dst`, both `row_bytes` wide.
    pub fn copy_rows(src: &wgpu::Buffer, dst: &wgpu::Buffer, row_bytes: u64) -> Self {
        Op::CopyTokenRows { src: src.clone(), src_at: (0, row_bytes), dst: dst.clone(), row_bytes }
    }
}

/// The work of one dispatch of a linear layer: the weight bytes it reads (once per dispatch, the least a product can
/// read) and the floating-point operations per row of its input, so a profile can report achieved bandwidth and
/// throughput.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// Weight bytes read.
    pub weight_bytes: u64,
    /// Operations (a multiply-add counts two) per input row.
    pub flops_per_row: u64,
    /// Which per-forward count the input rows follow.
    pub rows: Rows,
}

/// One dispatch of a profiled forward.
#[derive(Clone, Debug)]
pub struct DispatchTime {
    /// Its shader file.
    pub kernel: Arc<str>,
    /// The stage it belongs to (see [`Op::Stage`]).
    pub stage: usize,
    /// GPU seconds between its pass's timestamps.
    pub seconds: f64,
    /// Weight bytes it read (0 when its kernel declares no [`Work`]).
    pub weight_bytes: u64,
    /// Floating-point operations it did at the profiled step (0 without [`Work`]).
    pub flops: u64,
}

/// Seconds per stage of a profiled forward: the sum of its dispatches' times.
pub fn stage_times(dispatches: &[DispatchTime]) -> Vec<f64> {
    let mut stages = Vec::new();
    for d in dispatches {
        if stages.len() <= d.stage {
            stages.resize(d.stage + 1, 0.0);
        }
        stages[d.stage] += d.seconds;
    }
    stages
}

/// A recorded forward pass and the uniform buffer holding its [`Step`].
pub struct Plan {
    step_buffer: wgpu::Buffer,
    ops: Vec<Op>,
    capacity: Option<(u32, u32)>,
}

/// A buffer bound to a kernel: whole, or a byte range of it.
pub enum Binding<'a> {
    /// The whole buffer.
    Whole(&'a wgpu::Buffer),
    /// `size` bytes from `offset`.
    Range(&'a wgpu::Buffer, u64, u64),
}

impl<'a> From<&'a wgpu::Buffer> for Binding<'a> {
    fn from(b: &'a wgpu::Buffer) -> Self {
        Binding::Whole(b)
    }
}

impl Plan {
    /// An empty plan with its own step uniform.
    pub fn new(gpu: &Gpu) -> Self {
        Plan { step_buffer: gpu.uniform("step", &[0; 4]), ops: Vec::new(), capacity: None }
    }

    /// An empty plan that will run with at most `tokens` tokens and `logit_rows` logit rows per forward; kernels
    /// then refuse, when recording, any row-indexed buffer too small for that many rows (an undersized buffer
    /// would otherwise be clamped silently by the GPU's robust buffer access).
    pub fn with_capacity(gpu: &Gpu, tokens: usize, logit_rows: usize) -> Self {
        Plan { capacity: Some((tokens as u32, logit_rows as u32)), ..Self::new(gpu) }
    }

    /// Checks that `buffer` holds `row_floats` f32 for each of the plan's maximum `rows`.
    pub fn check_rows(
        &self,
        kernel: &'static str,
        what: &str,
        buffer: &wgpu::Buffer,
        rows: Rows,
        row_floats: usize,
    ) -> Result<()> {
        let Some((tokens, logits)) = self.capacity else { return Ok(()) };
        let n = match rows {
            Rows::Tokens => tokens,
            Rows::Logits => logits,
        } as u64;
        let need = n * row_floats as u64 * 4;
        if buffer.size() < need {
            return Err(crate::GpuError::shape(
                kernel,
                format!("{what} buffer holds {} bytes; {n} rows of {row_floats} floats need {need}", buffer.size()),
            ));
        }
        Ok(())
    }

    /// Number of compute dispatches in one forward.
    pub fn dispatch_count(&self) -> usize {
        self.ops.iter().filter(|o| matches!(o, Op::Dispatch { .. })).count()
    }

    /// Records a dispatch of `shader` (variant `defines`). Binding 0 is the step uniform, binding 1 a fresh
    /// uniform holding `params`, and bindings 2.. are `buffers` in order.
    pub fn dispatch(
        &mut self,
        gpu: &Gpu,
        shader: &str,
        defines: &Defines,
        params: &[u32],
        buffers: &[Binding],
        grid: Grid,
    ) -> Result<()> {
        let pipeline = gpu.pipelines.get(&gpu.device, shader, defines)?;
        let params = gpu.uniform(shader, params);
        let mut entries = vec![
            wgpu::BindGroupEntry { binding: 0, resource: self.step_buffer.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: params.as_entire_binding() },
        ];
        for (i, b) in buffers.iter().enumerate() {
            let resource = match *b {
                Binding::Whole(buf) => buf.as_entire_binding(),
                Binding::Range(buf, offset, size) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: buf,
                    offset,
                    size: std::num::NonZeroU64::new(size),
                }),
            };
            entries.push(wgpu::BindGroupEntry { binding: 2 + i as u32, resource });
        }
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(shader),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        self.ops.push(Op::Dispatch { pipeline, bind_group, grid, kernel: shader.into(), work: None });
        Ok(())
    }

    /// Declares the [`Work`] of the dispatch recorded last (linear-layer kernels do, for profiles).
    pub fn set_work(&mut self, work: Work) {
        if let Some(Op::Dispatch { work: w, .. }) = self.ops.last_mut() {
            *w = Some(work);
        }
    }

    /// Records a non-dispatch operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Encodes the plan for `step` into `encoder` (the step uniform must already hold `step`). Each run of dispatches
    /// between other operations is one compute pass; with a profiler every dispatch is a pass of its own, which
    /// writes its start and end times into the profiler's queries, in order.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, step: &Step, profiler: Option<&Profiler>) {
        let mut i = 0;
        let mut dispatch_index = 0u32;
        while i < self.ops.len() {
            if let Op::Dispatch { .. } = self.ops[i] {
                let timestamp_writes = profiler.map(|p| wgpu::ComputePassTimestampWrites {
                    query_set: &p.queries,
                    beginning_of_pass_write_index: Some(2 * dispatch_index),
                    end_of_pass_write_index: Some(2 * dispatch_index + 1),
                });
                let mut pass =
                    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
                while let Some(Op::Dispatch { pipeline, bind_group, grid, .. }) = self.ops.get(i) {
                    let [x, y, z] = grid.workgroups(step);
                    if x * y * z > 0 {
                        pass.set_pipeline(pipeline);
                        pass.set_bind_group(0, bind_group, &[]);
                        pass.dispatch_workgroups(x, y, z);
                    }
                    i += 1;
                    dispatch_index += 1;
                    if profiler.is_some() {
                        break;
                    }
                }
                continue;
            }
            match &self.ops[i] {
                Op::AppendRows { src, dst, row_bytes, cache_rows, pinned } => {
                    let (pos0, n) = (step.pos0 as u64, step.n_tokens as u64);
                    for (from, to, rows) in cache_segments(pos0, n, *pinned, *cache_rows) {
                        encoder.copy_buffer_to_buffer(src, from * row_bytes, dst, to * row_bytes, rows * row_bytes);
                    }
                }
                Op::CopyTokenRows { src, src_at: (offset, stride), dst, row_bytes } => {
                    let n = step.n_tokens as u64;
                    match *stride == *row_bytes {
                        true => encoder.copy_buffer_to_buffer(src, *offset, dst, 0, n * row_bytes),
                        false => (0..n).for_each(|t| {
                            encoder.copy_buffer_to_buffer(src, offset + t * stride, dst, t * row_bytes, *row_bytes)
                        }),
                    }
                }
                Op::Stage(_) => {}
                Op::GatherLogitRows { src, dst, row_bytes } => {
                    let rows = &step.logit_rows;
                    let mut r = 0;
                    while r < rows.len() {
                        let mut run = 1;
                        while r + run < rows.len() && rows[r + run] == rows[r] + run as u32 {
                            run += 1;
                        }
                        encoder.copy_buffer_to_buffer(
                            src,
                            rows[r] as u64 * row_bytes,
                            dst,
                            r as u64 * row_bytes,
                            run as u64 * row_bytes,
                        );
                        r += run;
                    }
                }
                Op::Dispatch { .. } => unreachable!("dispatches are encoded in passes above"),
            }
            i += 1;
        }
    }

    /// Writes `step` to the uniform, encodes the plan (and the copies of `len` f32 from each `src` into its
    /// `staging`) and submits it all as one command buffer.
    pub fn submit(
        &self,
        gpu: &Gpu,
        step: &Step,
        readbacks: &[(&wgpu::Buffer, &crate::buffer::Staging, usize)],
        profiler: Option<&Profiler>,
    ) {
        gpu.queue.write_buffer(&self.step_buffer, 0, bytemuck::cast_slice(&step.uniform_words()));
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        self.encode(&mut encoder, step, profiler);
        for &(src, staging, len) in readbacks.iter().filter(|r| r.2 > 0) {
            staging.record_copy(&mut encoder, src, 0, len);
        }
        if let Some(p) = profiler {
            let n = 2 * self.dispatch_count() as u32;
            encoder.resolve_query_set(&p.queries, 0..n, &p.resolved, 0);
            encoder.copy_buffer_to_buffer(&p.resolved, 0, &p.staging, 0, n as u64 * 8);
        }
        gpu.queue.submit([encoder.finish()]);
    }

    /// A profiler for this plan's dispatches, where the device has timestamp queries and one query set can hold
    /// two per dispatch (up to 2048 dispatches).
    pub fn profiler(&self, gpu: &Gpu) -> Option<Profiler> {
        let count = (2 * self.dispatch_count()).max(2) as u32;
        if !gpu.info.timestamps || count > wgpu::QUERY_SET_MAX_QUERIES {
            return None;
        }
        let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("pass times"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let buffer = |usage, label| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: count as u64 * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        let resolved = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC, "pass times");
        let staging = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, "pass times readback");
        Some(Profiler { queries, resolved, staging })
    }

    /// Every dispatch of the forward last submitted at `step` with `profiler`, in order: its GPU time, its stage
    /// (the last one marked before it; work before the first mark is stage 0) and its declared work.
    pub async fn dispatch_times(&self, gpu: &Gpu, profiler: &Profiler, step: &Step) -> Result<Vec<DispatchTime>> {
        let ticks = profiler.read(gpu, 2 * self.dispatch_count()).await?;
        let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
        let mut times = Vec::with_capacity(self.dispatch_count());
        let mut stage = 0;
        for op in &self.ops {
            match op {
                Op::Stage(s) => stage = *s,
                Op::Dispatch { kernel, work, .. } => {
                    let i = 2 * times.len();
                    let rows = work.map_or(0, |w| step.rows(w.rows) as u64);
                    times.push(DispatchTime {
                        kernel: kernel.clone(),
                        stage,
                        seconds: ticks[i + 1].saturating_sub(ticks[i]) as f64 * period,
                        weight_bytes: work.map_or(0, |w| w.weight_bytes),
                        flops: work.map_or(0, |w| w.flops_per_row * rows),
                    });
                }
                _ => {}
            }
        }
        Ok(times)
    }
}

/// Timestamp queries for one plan's compute passes and the buffers they are read back through.
pub struct Profiler {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    staging: wgpu::Buffer,
}

impl Profiler {
    /// The first `n` raw timestamps of the last profiled forward.
    async fn read(&self, gpu: &Gpu, n: usize) -> Result<Vec<u64>> {
        let size = (n.max(1) * 8) as u64;
        let (tx, rx) = futures_channel::oneshot::channel();
        self.staging.map_async(wgpu::MapMode::Read, ..size, move |r| {
            let _ = tx.send(r);
        });
        gpu.wait()?;
        rx.await
            .map_err(|_| GpuError::Execution("the timestamp readback was dropped".into()))?
            .map_err(|e| GpuError::Execution(e.to_string()))?;
        let view = self.staging.get_mapped_range(..size).map_err(|e| GpuError::Execution(e.to_string()))?;
        let ticks = bytemuck::pod_collect_to_vec::<u8, u64>(&view);
        drop(view);
        self.staging.unmap();
        Ok(ticks)
    }
}

/// Where positions `pos0..pos0 + n` go in a cache of `rows` rows whose first `pinned` rows hold the first
/// positions and whose other rows are a ring for the rest: `(first source row, first cache row, rows)` runs.
/// Needs `n <= rows - pinned`, as a forward never outgrows its ring.
pub fn cache_segments(pos0: u64, n: u64, pinned: u64, rows: u64) -> Vec<(u64, u64, u64)> {
    let mut runs = Vec::new();
    let mut done = 0;
    while done < n {
        let pos = pos0 + done;
        let (row, room) = match pos < pinned {
            true => (pos, pinned - pos),
            false => {
                let ring = pinned + (pos - pinned) % (rows - pinned);
                (ring, rows - ring)
            }
        };
        let take = room.min(n - done);
        runs.push((done, row, take));
        done += take;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::cache_segments;

    #[test]
    fn cache_segments_pin_sinks_and_wrap_the_ring() {
        assert_eq!(cache_segments(0, 5, 0, 8), vec![(0, 0, 5)]);
        assert_eq!(cache_segments(6, 5, 0, 8), vec![(0, 6, 2), (2, 0, 3)]);
        // Rows 0..2 hold positions 0 and 1; positions 2.. cycle through rows 2..8.
        assert_eq!(cache_segments(0, 4, 2, 8), vec![(0, 0, 2), (2, 2, 2)]);
        assert_eq!(cache_segments(7, 3, 2, 8), vec![(0, 7, 1), (1, 2, 2)]);
        assert_eq!(cache_segments(1, 8, 2, 8), vec![(0, 1, 1), (1, 2, 6), (7, 2, 1)]);
    }
}
