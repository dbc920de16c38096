//! A model loaded on the GPU with its context: `prefill(ids)` runs a whole prompt in one forward (chunked only
//! beyond the scratch capacity), `step(id)` one token; logits come back only for the rows asked for.

use crate::error::{Result, RuntimeError};
use crate::graph::{build, AblatedHeads, Inspection, LayerState, Mode, Resources, TapBuffers};
use crate::weights::MixerWeights;
use crate::weights::{upload, LoadProgress, ModelWeights, OnDemand, Prefetch};
use std::future::Future;
use std::sync::Arc;
use ternlight_core::attention_map::{check_mapped, DeltaTap, HeadLayout, LayerTap};
use ternlight_core::spec::MixerSpec;
use ternlight_core::spec::{AttentionPolicy, LayerPolicy, ModelSpec};
use ternlight_core::tensors::TensorSource;
use ternlight_gpu::buffer::Staging;
use ternlight_gpu::kernels::attention::DecodeSpread;
use ternlight_gpu::kernels::sample::Draw;
use ternlight_gpu::plan::{stage_times, DispatchTime, Plan, Profiler, Step};
use ternlight_gpu::{wgpu, Gpu};

/// Sizes a session allocates for.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Longest context (positions) the KV cache holds; defaults to min(model positions, 4096).
    pub max_context: Option<usize>,
    /// Tokens one prefill forward processes; longer prompts run in chunks of this size.
    pub prefill_capacity: usize,
    /// GPU memory the session may use, in bytes; a model that would need more is refused before its weights
    /// upload.
    pub memory_budget: Option<u64>,
    /// Masks the softmax-attention layers run with (`full`: the model's own).
    pub attention_policy: AttentionPolicy,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            max_context: None,
            prefill_capacity: 512,
            memory_budget: None,
            attention_policy: AttentionPolicy::full(),
        }
    }
}

/// GPU memory a session holds, by kind.
#[derive(Clone, Debug, Default)]
pub struct MemoryReport {
    /// Weights.
    pub weights: u64,
    /// Per-layer state as allocated (KV caches at full context, recurrent and conv states).
    pub state: u64,
    /// The part of the KV caches the context still reads (grows with each token up to sinks + window, or the
    /// context).
    pub kv_cache_live: u64,
    /// Recurrent and conv states (fixed, whatever the context length).
    pub recurrent: u64,
}

/// A copy of a session's context (KV caches up to the position, recurrent and conv states), kept on the GPU.
pub struct Snapshot {
    buffers: Vec<wgpu::Buffer>,
    position: usize,
}

impl Snapshot {
    /// Tokens of context captured.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// Refuses a session whose weights (their stored size: an upper bound, since ternarised weights shrink on upload)
/// plus `context` (KV cache and state) and scratch would exceed `budget` bytes.
fn check_budget(
    spec: &ModelSpec,
    source: &dyn TensorSource,
    (context, allocated): (u64, u64),
    budget: u64,
    max_context: usize,
) -> Result<()> {
    let mut weights = 0u64;
    for d in spec.tensors() {
        weights += source.byte_len(&d.name)? as u64;
    }
    let mib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 20) as f64);
    let total = weights + allocated;
    if total > budget {
        return Err(RuntimeError::Request(format!(
            "the model needs about {} MiB of GPU memory (weights {} MiB, KV cache and state for {max_context} positions \
             {} MiB, scratch {} MiB) but the budget is {} MiB; a shorter context or prefill capacity needs less",
            mib(total),
            mib(weights),
            mib(context),
            mib(allocated - context),
            mib(budget)
        )));
    }
    Ok(())
}

/// The router's decision for one routed layer (see `route:` in [`AttentionPolicy`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Model layer.
    pub layer: usize,
    /// Mean over heads of the last prompt token's attention entropy, normalised by `ln(keys)`.
    pub entropy: f32,
    /// Whether the layer runs block-sparse from now on (the entropy was below the policy's threshold).
    pub sparse: bool,
}

/// The recorded forwards of a session: prefill, decode, and where the device's tuning splits decode attention's
/// keys over several workgroups, decode with them split, for contexts of at least the given length (below it a
/// split's second pass costs more than it spreads).
struct Plans {
    prefill: Plan,
    decode: Plan,
    long_decode: Option<(Plan, usize)>,
}

impl Plans {
    fn build(
        gpu: &Gpu,
        spec: &ModelSpec,
        weights: &ModelWeights,
        res: &Resources,
        inspection: Inspection,
    ) -> Result<Self> {
        let spread = DecodeSpread::of(gpu);
        let prefill = build(gpu, spec, weights, res, (Mode::Prefill, spread.unsplit()), inspection)?;
        let decode = build(gpu, spec, weights, res, (Mode::Decode, spread.unsplit()), inspection)?;
        let attends = |m: &MixerSpec| matches!(m, MixerSpec::Attention(_) | MixerSpec::Mla(_));
        let softmax = spec.layers.iter().any(|l| l.mixer.parts().into_iter().any(attends));
        let long_decode = match spread.splits > 1 && softmax {
            true => {
                let plan = build(gpu, spec, weights, res, (Mode::Decode, spread), inspection)?;
                Some((plan, gpu.tuning.attn_split_from as usize))
            }
            false => None,
        };
        Ok(Plans { prefill, decode, long_decode })
    }

    /// Every plan: prefill, decode, then long-context decode where there is one.
    fn all(&self) -> impl Iterator<Item = &Plan> {
        [&self.prefill, &self.decode].into_iter().chain(self.long_decode.as_ref().map(|(plan, _)| plan))
    }

    /// The plan for a forward in `mode` whose context ends at `context` tokens, and its index in [`Plans::all`].
    fn pick(&self, mode: Mode, context: usize) -> (&Plan, usize) {
        match (mode, &self.long_decode) {
            (Mode::Prefill, _) => (&self.prefill, 0),
            (Mode::Decode, Some((plan, from))) if context >= *from => (plan, 2),
            (Mode::Decode, _) => (&self.decode, 1),
        }
    }
}

/// A loaded model and its running context.
pub struct Session {
    gpu: Arc<Gpu>,
    /// The model as loaded; `spec` is it under `policy`.
    model: ModelSpec,
    policy: AttentionPolicy,
    spec: ModelSpec,
    /// Shared with sessions forked from this one.
    weights: Arc<ModelWeights>,
    res: Resources,
    plans: Plans,
    max_context: usize,
    capacity: usize,
    logit_capacity: usize,
    position: usize,
    staging: Staging,
    /// Host copy of the token the GPU sampler drew.
    token_staging: Staging,
    taps: Vec<Tap>,
    ablated: Vec<AblatedHeads>,
    ablated_heads: Vec<(usize, usize)>,
    /// Timestamp queries of each plan (see [`Plans::all`]), while profiling.
    profilers: Option<Vec<Profiler>>,
    /// The router's decisions after the last prefill (routed policies only).
    routes: Vec<Route>,
    /// Every dispatch of the last profiled forward.
    dispatch_times: Vec<DispatchTime>,
}

/// An attention tap in force: what it recorded and, per branch, the buffers the plans copy into.
struct Tap {
    record: LayerTap,
    branches: Vec<TapRows>,
}

/// One branch's row buffers and their host-readable copies (filled by each forward's own submit).
struct TapRows {
    buffers: TapBuffers,
    widths: (usize, usize),
    staging: [Staging; 2],
}

impl Session {
    /// Uploads the model from `source`, which reads each tensor when asked (files, the native HTTP cache), and
    /// records its prefill and decode plans.
    pub fn new(
        gpu: Arc<Gpu>,
        spec: ModelSpec,
        source: &dyn TensorSource,
        options: &SessionOptions,
        on_progress: &mut dyn FnMut(&LoadProgress),
    ) -> Result<Self> {
        let mut on_demand = OnDemand;
        let load = std::pin::pin!(Self::load(gpu, spec, source, &mut on_demand, options, on_progress));
        match load.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(session) => session,
            std::task::Poll::Pending => unreachable!("loading from an on-demand source never waits"),
        }
    }

    /// Uploads the model from `source` a tensor at a time through `prefetch` (which may wait for bytes to arrive) and
    /// records its prefill and decode plans.
    pub async fn load(
        gpu: Arc<Gpu>,
        spec: ModelSpec,
        source: &dyn TensorSource,
        prefetch: &mut impl Prefetch,
        options: &SessionOptions,
        on_progress: &mut dyn FnMut(&LoadProgress),
    ) -> Result<Self> {
        let model = spec;
        let spec = options.attention_policy.apply(&model)?;
        let max_context = options.max_context.unwrap_or(spec.max_positions.min(4096));
        if max_context == 0 || max_context > spec.max_positions {
            return Err(RuntimeError::Request(format!(
                "max context {max_context} must be between 1 and the model's {} positions",
                spec.max_positions
            )));
        }
        let capacity = options.prefill_capacity.clamp(1, max_context);
        let logit_capacity = capacity.min((gpu.info.max_binding / (spec.vocab as u64 * 4)) as usize);
        if logit_capacity == 0 {
            return Err(RuntimeError::Request(format!(
                "one row of {} logits exceeds the device's binding limit",
                spec.vocab
            )));
        }
        // Context and scratch first: they fail fast on device limits, before a long weights upload.
        let before = gpu.allocated_bytes();
        let res = Resources::new(&gpu, &spec, max_context, capacity, logit_capacity)?;
        gpu.check_errors("allocating the KV cache and scratch")?;
        if let Some(budget) = options.memory_budget {
            check_budget(&spec, source, (res.state_bytes(), gpu.allocated_bytes() - before), budget, max_context)?;
        }
        // Shared by forks; natively across threads (the browser has one, where wgpu handles are not Send).
        #[allow(clippy::arc_with_non_send_sync)]
        let weights = Arc::new(upload(&gpu, &spec, source, prefetch, on_progress).await?);
        gpu.check_errors("uploading the weights")?;
        let sizes = (max_context, capacity, logit_capacity);
        Self::assemble(gpu, (model, options.attention_policy.clone(), spec), weights, res, sizes)
    }

    /// A session with an empty context over uploaded weights and allocated resources: records its plans.
    fn assemble(
        gpu: Arc<Gpu>,
        (model, policy, spec): (ModelSpec, AttentionPolicy, ModelSpec),
        weights: Arc<ModelWeights>,
        res: Resources,
        (max_context, capacity, logit_capacity): (usize, usize, usize),
    ) -> Result<Self> {
        let plans = Plans::build(&gpu, &spec, &weights, &res, Inspection::default())?;
        let staging = Staging::new(&gpu, logit_capacity * spec.vocab);
        let token_staging = Staging::new(&gpu, 1);
        Ok(Session {
            gpu,
            model,
            policy,
            spec,
            weights,
            res,
            plans,
            max_context,
            capacity,
            logit_capacity,
            position: 0,
            staging,
            token_staging,
            taps: Vec::new(),
            ablated: Vec::new(),
            ablated_heads: Vec::new(),
            profilers: None,
            routes: Vec::new(),
            dispatch_times: Vec::new(),
        })
    }

    /// The model description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Tokens in the context so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Longest context this session holds.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Tokens one prefill forward takes; longer prompts run in several.
    pub fn prefill_capacity(&self) -> usize {
        self.capacity
    }

    /// Compute dispatches per forward of the decode plan (one submit each).
    pub fn decode_dispatches(&self) -> usize {
        self.plans.decode.dispatch_count()
    }

    /// Compute dispatches per decode forward at long contexts, where attention's keys are split over several
    /// workgroups and merged in a second pass (see [`DecodeSpread`]), and the context length from which it runs.
    pub fn long_decode_dispatches(&self) -> Option<(usize, usize)> {
        self.plans.long_decode.as_ref().map(|(plan, from)| (plan.dispatch_count(), *from))
    }

    /// GPU memory held.
    pub fn memory(&self) -> MemoryReport {
        let (mut kv_cache_live, mut recurrent) = (0, 0);
        for state in &self.res.states {
            for (b, by_row) in state.buffers() {
                match state {
                    LayerState::Attention { rows, keeps, .. } if by_row => {
                        kv_cache_live += b.size() / *rows as u64 * self.position.min(*keeps) as u64
                    }
                    _ => recurrent += b.size(),
                }
            }
        }
        MemoryReport { weights: self.weights.bytes(), state: self.res.state_bytes(), kv_cache_live, recurrent }
    }

    /// Forgets the context: KV caches are overwritten as positions are reused; recurrent states are zeroed.
    pub fn reset(&mut self) {
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        for (b, by_row) in self.res.states.iter().flat_map(LayerState::buffers) {
            // Caches are overwritten as the context refills them; fixed states start from zero.
            if !by_row {
                encoder.clear_buffer(b, 0, None);
            }
        }
        self.gpu.queue.submit([encoder.finish()]);
        self.position = 0;
        for tap in &mut self.taps {
            tap.record.truncate(0);
        }
    }

    fn check(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(RuntimeError::Request("empty input: at least one token is needed".into()));
        }
        for &id in ids {
            self.spec.check_token(id)?;
        }
        let end = self.position + ids.len();
        if end > self.max_context && !self.spec.streams() {
            return Err(RuntimeError::Request(format!(
                "context of {end} tokens exceeds this session's maximum of {} (the model allows {})",
                self.max_context, self.spec.max_positions
            )));
        }
        Ok(())
    }

    /// A second session on the same weights (no copy) with its own empty context, running `policy`: for
    /// comparing policies side by side. It starts without taps, ablations or profiling.
    pub fn fork(&self, policy: &AttentionPolicy) -> Result<Session> {
        let spec = policy.apply(&self.model)?;
        let res = Resources::new(&self.gpu, &spec, self.max_context, self.capacity, self.logit_capacity)?;
        self.gpu.check_errors("allocating the forked session's KV cache")?;
        let sizes = (self.max_context, self.capacity, self.logit_capacity);
        let parts = (self.model.clone(), policy.clone(), spec);
        Self::assemble(self.gpu.clone(), parts, self.weights.clone(), res, sizes)
    }

    /// The attention policy in force.
    pub fn attention_policy(&self) -> &AttentionPolicy {
        &self.policy
    }

    /// Runs the softmax-attention layers under `policy` from now on. A policy that changes any layer's mask
    /// re-allocates the KV caches (their rows depend on it) and so starts a new context; taps are kept.
    pub fn set_attention_policy(&mut self, policy: &AttentionPolicy) -> Result<()> {
        let spec = policy.apply(&self.model)?;
        if spec == self.spec {
            self.policy = policy.clone();
            return Ok(());
        }
        // A refused allocation leaves the session as it was.
        let res = Resources::new(&self.gpu, &spec, self.max_context, self.capacity, self.logit_capacity)?;
        self.gpu.check_errors("allocating the KV cache for the attention policy")?;
        (self.res, self.spec, self.policy) = (res, spec, policy.clone());
        self.routes.clear();
        self.position = 0;
        let layers: Vec<usize> = self.taps.iter().map(|t| t.record.layer()).collect();
        self.taps.clear();
        self.set_attention_taps(&layers)
    }

    /// Records what the attention maps of `layers` need at every forward (empty stops): softmax layers' queries
    /// and keys, delta-rule layers' projections for their implicit attention. The plans are re-recorded with the two copies per layer this costs; without taps they hold
    /// none. A tap records a context from its start: one set mid-context records from the next reset; layers
    /// tapped before keep what they recorded.
    pub fn set_attention_taps(&mut self, layers: &[usize]) -> Result<()> {
        for &layer in layers {
            check_mapped(&self.spec, layer)?;
        }
        let mut taps = Vec::with_capacity(layers.len());
        for &layer in layers {
            if let Some(i) = self.taps.iter().position(|t| t.record.layer() == layer) {
                taps.push(self.taps.swap_remove(i));
                continue;
            }
            let record = match (&self.spec.layers[layer].mixer, &self.weights.layers[layer].mixer) {
                (MixerSpec::GatedDeltaNet(g), MixerWeights::GatedDeltaNet { gate_host, .. }) => {
                    LayerTap::Delta(DeltaTap::new(&self.spec, layer, g, gate_host.clone()))
                }
                (MixerSpec::Gla(g), _) => LayerTap::Delta(DeltaTap::gla(&self.spec, layer, g)),
                (MixerSpec::Hgrn2(g), _) => LayerTap::Delta(DeltaTap::hgrn2(&self.spec, layer, g)),
                (MixerSpec::Lightning(l), _) => LayerTap::Delta(DeltaTap::lightning(&self.spec, layer, l)),
                (MixerSpec::LinearAttn(l), _) => LayerTap::Delta(DeltaTap::linear_attention(&self.spec, layer, l)),
                (MixerSpec::Rwkv7(r), _) => LayerTap::Delta(DeltaTap::rwkv7(&self.spec, layer, r)),
                (MixerSpec::Gsa(g), _) => LayerTap::Delta(DeltaTap::gsa(&self.spec, layer, g)),
                _ => LayerTap::attention(&self.spec, layer)?,
            };
            let branches = record
                .branches()
                .into_iter()
                .map(|b| {
                    let (first, second) = (self.capacity * b.row_widths.0, self.capacity * b.row_widths.1);
                    let rows = [self.gpu.zeros("tap rows", first), self.gpu.zeros("tap rows", second)];
                    let staging = [Staging::new(&self.gpu, first), Staging::new(&self.gpu, second)];
                    TapRows { buffers: TapBuffers { slot: b.slot, rows }, widths: b.row_widths, staging }
                })
                .collect();
            taps.push(Tap { record, branches });
        }
        taps.sort_by_key(|t| t.record.layer());
        self.taps = taps;
        self.rebuild()
    }

    /// Switches off `heads` (pairs of layer and head, softmax-attention or Gated DeltaNet value heads; empty restores
    /// the model): their outputs are zeroed before the output projection from the next forward on. The plans are
    /// re-recorded with one masking dispatch per affected layer.
    pub fn set_ablation(&mut self, heads: &[(usize, usize)]) -> Result<()> {
        let mut by_layer: Vec<(HeadLayout, Vec<usize>)> = Vec::new();
        for &(layer, head) in heads {
            let layout = HeadLayout::of(&self.spec, layer, head)?;
            match by_layer.iter_mut().find(|(l, _)| *l == layout) {
                Some((_, hs)) => hs.push(head),
                None => by_layer.push((layout, vec![head])),
            }
        }
        let mut ablated = Vec::with_capacity(by_layer.len());
        for (layout, hs) in by_layer {
            let width = layout.width();
            let row: Vec<f32> =
                (0..width).map(|c| if hs.contains(&(c / layout.head_width)) { 0.0 } else { 1.0 }).collect();
            let mask = self.gpu.upload_f32("ablation mask", &row.repeat(self.capacity));
            let out = self.gpu.zeros("ablated heads", self.capacity * width);
            ablated.push(AblatedHeads { slot: layout.slot, mask, out });
        }
        self.ablated = ablated;
        self.ablated_heads = heads.to_vec();
        self.rebuild()
    }

    /// The heads switched off, as (layer, head) pairs.
    pub fn ablation(&self) -> Vec<(usize, usize)> {
        self.ablated_heads.clone()
    }

    /// Re-records both plans with the current tap and ablations.
    fn rebuild(&mut self) -> Result<()> {
        let taps: Vec<&TapBuffers> = self.taps.iter().flat_map(|t| &t.branches).map(|b| &b.buffers).collect();
        let inspection = Inspection { taps: &taps, ablated: &self.ablated };
        self.plans = Plans::build(&self.gpu, &self.spec, &self.weights, &self.res, inspection)?;
        if self.profilers.is_some() {
            self.profilers = self.plan_profilers();
        }
        Ok(())
    }

    fn plan_profilers(&self) -> Option<Vec<Profiler>> {
        self.plans.all().map(|plan| plan.profiler(&self.gpu)).collect()
    }

    /// Times every forward on the GPU by stage and dispatch (timestamp queries), or stops; returns whether it can
    /// (profiling stays off without timestamp queries, or when a plan has more dispatches than a query set times).
    pub fn set_profiling(&mut self, on: bool) -> bool {
        self.profilers = if on { self.plan_profilers() } else { None };
        self.dispatch_times.clear();
        self.profilers.is_some()
    }

    /// GPU seconds of the last forward while profiling, by stage: the embedding, each layer, then the head.
    pub fn stage_times(&self) -> Vec<f64> {
        stage_times(&self.dispatch_times)
    }

    /// Each dispatch of the last forward while profiling: its kernel, stage, GPU time and declared work.
    pub fn dispatch_times(&self) -> &[DispatchTime] {
        &self.dispatch_times
    }

    /// What the attention tap on `layer` has recorded, if there is one.
    pub fn attention_tap(&self, layer: usize) -> Option<&LayerTap> {
        self.taps.iter().map(|t| &t.record).find(|r| r.layer() == layer)
    }

    /// Every attention tap in force, in layer order.
    pub fn attention_taps(&self) -> impl Iterator<Item = &LayerTap> {
        self.taps.iter().map(|t| &t.record)
    }

    /// Runs `ids` through the model. Without a `draw` it returns the logits of `logit_rows`; with one it draws the
    /// next token from the last of them on the GPU and returns only its id (as the single element's bits).
    async fn forward(
        &mut self,
        mode: Mode,
        ids: &[u32],
        logit_rows: Vec<u32>,
        draw: Option<&Draw<'_>>,
    ) -> Result<Vec<f32>> {
        self.gpu.queue.write_buffer(&self.res.scratch.ids, 0, bytemuck::cast_slice(ids));
        let draw = draw.filter(|_| !logit_rows.is_empty());
        self.res.sampler.set(&self.gpu, draw);
        let n_logits = if draw.is_some() { 0 } else { logit_rows.len() };
        let step = Step { pos0: self.position as u32, n_tokens: ids.len() as u32, logit_rows };
        let (plan, which) = self.plans.pick(mode, self.position + ids.len());
        let len = n_logits * self.spec.vocab;
        let position = self.position;
        // Taps that record this context from its start copy their rows out in the forward's own submit.
        let mut readbacks = vec![(&self.res.scratch.logits, &self.staging, len)];
        if draw.is_some() {
            readbacks.push((&self.res.sampler.token, &self.token_staging, 1));
        }
        for tap in self.taps.iter().filter(|t| t.record.positions() == position) {
            for b in &tap.branches {
                for (i, width) in [b.widths.0, b.widths.1].into_iter().enumerate().filter(|(_, w)| *w > 0) {
                    readbacks.push((&b.buffers.rows[i], &b.staging[i], ids.len() * width));
                }
            }
        }
        let profiler = self.profilers.as_ref().map(|p| &p[which]);
        plan.submit(&self.gpu, &step, &readbacks, profiler);
        self.position += ids.len();
        let logits = match (len, draw) {
            (_, Some(_)) => self.token_staging.read(&self.gpu, 1).await?,
            (0, None) => Vec::new(),
            _ => self.staging.read(&self.gpu, len).await?,
        };
        if let Some(profiler) = profiler {
            self.dispatch_times = plan.dispatch_times(&self.gpu, profiler, &step).await?;
        }
        for tap in self.taps.iter_mut().filter(|t| t.record.positions() == position) {
            for (i, branch) in tap.branches.iter().enumerate() {
                let (first, second) = branch.widths;
                let a = branch.staging[0].read(&self.gpu, ids.len() * first).await?;
                let b = match second {
                    0 => Vec::new(),
                    _ => branch.staging[1].read(&self.gpu, ids.len() * second).await?,
                };
                tap.record.push_rows(i, &a, &b);
            }
        }
        Ok(logits)
    }

    /// Appends `ids` to the context in as few forwards as the capacity allows and returns the logits of the
    /// prompt positions in `logit_rows` (indices into `ids`, ascending), `[logit_rows.len(), vocab]`.
    pub async fn prefill(&mut self, ids: &[u32], logit_rows: &[usize]) -> Result<Vec<f32>> {
        self.prefill_rows(ids, logit_rows, None).await
    }

    /// Appends `ids` to the context and draws the token after them on the GPU; only its id is read back.
    pub async fn prefill_sample(&mut self, ids: &[u32], draw: &Draw<'_>) -> Result<u32> {
        draw.check().map_err(RuntimeError::Request)?;
        let last = ids.len().saturating_sub(1);
        Ok(self.prefill_rows(ids, &[last], Some(draw)).await?[0].to_bits())
    }

    async fn prefill_rows(&mut self, ids: &[u32], logit_rows: &[usize], draw: Option<&Draw<'_>>) -> Result<Vec<f32>> {
        self.check(ids)?;
        if logit_rows.windows(2).any(|w| w[0] >= w[1]) || logit_rows.last().is_some_and(|&r| r >= ids.len()) {
            return Err(RuntimeError::Request(format!("logit rows must be ascending indices below {}", ids.len())));
        }
        // Routed layers attend densely through a prefill and are routed after it.
        if self.policy.routes() {
            self.set_routes(&[])?;
        }
        let mut out = Vec::with_capacity(logit_rows.len() * self.spec.vocab);
        let mut start = 0;
        let mut row = 0;
        while start < ids.len() {
            let mut end = (start + self.capacity).min(ids.len());
            let first = row;
            while row < logit_rows.len() && logit_rows[row] < end {
                if row - first == self.logit_capacity {
                    end = logit_rows[row];
                    break;
                }
                row += 1;
            }
            let rows = logit_rows[first..row].iter().map(|&r| (r - start) as u32).collect();
            out.extend(self.forward(Mode::Prefill, &ids[start..end], rows, draw).await?);
            start = end;
        }
        if self.policy.routes() {
            self.route().await?;
        }
        Ok(out)
    }

    /// The router's decisions after the last prefill: per routed layer, its measured entropy and whether it runs
    /// block-sparse now (empty for policies that route nothing).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Reads the entropies the last prefill forward measured and switches the routed layers below their threshold
    /// to block-sparse attention.
    async fn route(&mut self) -> Result<()> {
        let Some((buffer, stride)) = &self.res.entropies else { return Ok(()) };
        let all = self.gpu.read_f32(buffer, 0, (buffer.size() / 4) as usize).await?;
        let mut routes = Vec::new();
        let mut slot = 0;
        for (layer, spec) in self.spec.layers.iter().enumerate() {
            for part in spec.mixer.parts() {
                if let (MixerSpec::Attention(a), LayerPolicy::Routed(_, threshold)) = (part, self.policy.layer(layer)) {
                    if a.mask.sparse.is_some_and(|cfg| cfg.pools_only()) {
                        let heads = &all[slot * stride..][..a.n_heads];
                        let entropy = heads.iter().sum::<f32>() / a.n_heads as f32;
                        routes.push(Route { layer, entropy, sparse: entropy < threshold });
                    }
                }
                slot += 1;
            }
        }
        let sparse: Vec<usize> = routes.iter().filter(|r| r.sparse).map(|r| r.layer).collect();
        self.set_routes(&sparse)?;
        self.routes = routes;
        Ok(())
    }

    /// Runs the routed layers in `sparse` block-sparse and the others densely, re-recording the plans on a change
    /// (the caches stay: routed layers keep whole-context caches and pooled keys either way).
    fn set_routes(&mut self, sparse: &[usize]) -> Result<()> {
        let spec = self.policy.apply_routes(&self.model, sparse)?;
        if spec != self.spec {
            self.spec = spec;
            self.rebuild()?;
        }
        Ok(())
    }

    /// Appends one token and returns its logits `[vocab]`.
    pub async fn step(&mut self, id: u32) -> Result<Vec<f32>> {
        self.check(&[id])?;
        self.forward(Mode::Decode, &[id], vec![0], None).await
    }

    /// Appends one token and draws the next on the GPU; only its id is read back.
    pub async fn step_sample(&mut self, id: u32, draw: &Draw<'_>) -> Result<u32> {
        draw.check().map_err(RuntimeError::Request)?;
        self.check(&[id])?;
        Ok(self.forward(Mode::Decode, &[id], vec![0], Some(draw)).await?[0].to_bits())
    }

    /// Bytes of `buffer` that hold live context: a KV cache's filled rows, or a whole fixed-size state.
    fn live_bytes(&self, state: &LayerState, (buffer, by_row): (&wgpu::Buffer, bool)) -> u64 {
        match state {
            LayerState::Attention { rows, .. } if by_row => {
                buffer.size() / *rows as u64 * self.position.min(*rows) as u64
            }
            _ => buffer.size(),
        }
    }

    /// Captures the context so it can be restored later (e.g. a shared prompt prefix, many continuations).
    pub fn snapshot(&self) -> Snapshot {
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        let mut buffers = Vec::new();
        for state in &self.res.states {
            for (b, by_row) in state.buffers() {
                let copy = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("snapshot"),
                    size: b.size(),
                    usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(b, 0, &copy, 0, self.live_bytes(state, (b, by_row)));
                buffers.push(copy);
            }
        }
        self.gpu.queue.submit([encoder.finish()]);
        Snapshot { buffers, position: self.position }
    }

    /// Returns the context to `snapshot` (taken from this session).
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        let mine: Vec<(&wgpu::Buffer, bool)> = self.res.states.iter().flat_map(LayerState::buffers).collect();
        if mine.len() != snapshot.buffers.len()
            || mine.iter().zip(&snapshot.buffers).any(|((a, _), b)| a.size() != b.size())
        {
            return Err(RuntimeError::Request("the snapshot was taken from a different model or context size".into()));
        }
        self.position = snapshot.position;
        for tap in &mut self.taps {
            tap.record.truncate(snapshot.position);
        }
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        let mut copies = snapshot.buffers.iter();
        for state in &self.res.states {
            for (b, by_row) in state.buffers() {
                let src = copies.next().expect("sizes checked above");
                encoder.copy_buffer_to_buffer(src, 0, b, 0, self.live_bytes(state, (b, by_row)));
            }
        }
        self.gpu.queue.submit([encoder.finish()]);
        Ok(())
    }
}
