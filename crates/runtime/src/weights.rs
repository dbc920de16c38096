//! A checkpoint's tensors on the GPU, organised like the spec: matrices in their stored dtype (split into
//! row blocks beyond the binding limit), norm weights and biases as f32.

use crate::error::Result;
use ternlight_core::spec::{LinearSpec, MixerSpec, MlpSpec, ModelSpec, NormSpec};
use ternlight_core::tensors::{check_against_spec, TensorSource};
use ternlight_core::CoreError;
use ternlight_gpu::buffer::Weight;
use ternlight_gpu::{wgpu, Gpu};

/// Progress of a weight upload, reported after each tensor.
#[derive(Clone, Debug, Default)]
pub struct LoadProgress {
    /// Tensors uploaded so far.
    pub tensors_done: usize,
    /// Tensors in all.
    pub tensors_total: usize,
    /// Bytes uploaded so far.
    pub bytes_done: u64,
    /// Bytes in all.
    pub bytes_total: u64,
}

/// A linear layer's weight and optional bias.
pub struct LinearWeights {
    /// `[out, in]` in the stored dtype.
    pub w: Weight,
    /// `[out]` f32.
    pub bias: Option<wgpu::Buffer>,
}

/// An RMSNorm's weight with its spec.
pub struct NormWeights {
    /// `[dim]` f32.
    pub w: wgpu::Buffer,
    /// Dim, eps, offset convention.
    pub spec: NormSpec,
}

/// Weights of a token mixer.
pub enum MixerWeights {
    /// Softmax attention projections and q/k norms.
    Attention {
        /// Query projection.
        q: LinearWeights,
        /// Key projection.
        k: LinearWeights,
        /// Value projection.
        v: LinearWeights,
        /// Output projection.
        o: LinearWeights,
        /// Per-head q and k norms.
        qk_norm: Option<(NormWeights, NormWeights)>,
    },
}

/// Weights of a channel mixer.
pub enum MlpWeights {
    /// Gated MLP projections.
    Gated {
        /// Gate projection.
        gate: LinearWeights,
        /// Up projection.
        up: LinearWeights,
        /// Down projection.
        down: LinearWeights,
    },
}

/// Weights of one layer.
pub struct LayerWeights {
    /// Token mixer.
    pub mixer: MixerWeights,
    /// Channel mixer.
    pub mlp: MlpWeights,
    /// Norm before the mixer.
    pub pre_mixer: NormWeights,
    /// Norm on the mixer output.
    pub post_mixer: Option<NormWeights>,
    /// Norm before the MLP.
    pub pre_mlp: NormWeights,
    /// Norm on the MLP output.
    pub post_mlp: Option<NormWeights>,
}

/// The whole model on the GPU.
pub struct ModelWeights {
    /// Token embedding `[vocab, hidden]`.
    pub embed: Weight,
    /// Output head, `None` when tied to the embedding.
    pub head: Option<Weight>,
    /// Final norm.
    pub final_norm: NormWeights,
    /// Per-layer weights in schedule order.
    pub layers: Vec<LayerWeights>,
}

impl ModelWeights {
    /// The head matrix (the embedding when tied).
    pub fn head(&self) -> &Weight {
        self.head.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes of weights resident on the GPU.
    pub fn bytes(&self) -> u64 {
        let lin = |l: &LinearWeights| l.w.bytes() + l.bias.as_ref().map_or(0, |b| b.size());
        let norm = |n: &NormWeights| n.w.size();
        let opt = |n: &Option<NormWeights>| n.as_ref().map_or(0, norm);
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                let mixer = match &l.mixer {
                    MixerWeights::Attention { q, k, v, o, qk_norm } => {
                        lin(q) + lin(k) + lin(v) + lin(o) + qk_norm.as_ref().map_or(0, |(a, b)| norm(a) + norm(b))
                    }
                };
                let mlp = match &l.mlp {
                    MlpWeights::Gated { gate, up, down } => lin(gate) + lin(up) + lin(down),
                };
                mixer + mlp + norm(&l.pre_mixer) + opt(&l.post_mixer) + norm(&l.pre_mlp) + opt(&l.post_mlp)
            })
            .sum();
        self.embed.bytes() + self.head.as_ref().map_or(0, Weight::bytes) + norm(&self.final_norm) + layers
    }
}

/// Uploads tensors one at a time, counting progress.
struct Uploader<'a> {
    gpu: &'a Gpu,
    source: &'a dyn TensorSource,
    progress: LoadProgress,
    on_progress: &'a mut dyn FnMut(&LoadProgress),
}

impl Uploader<'_> {
    fn advance(&mut self, bytes: usize) {
        self.progress.tensors_done += 1;
        self.progress.bytes_done += bytes as u64;
        (self.on_progress)(&self.progress);
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        let info = self.source.info(name)?.ok_or_else(|| CoreError::MissingTensor { name: name.into() })?;
        let bytes = self.source.bytes(name)?;
        let w = Weight::upload(self.gpu, name, info.dtype, rows, cols, bytes, self.gpu.info.max_binding)?;
        self.advance(bytes.len());
        Ok(w)
    }

    fn vector(&mut self, name: &str) -> Result<wgpu::Buffer> {
        let v = self.source.f32(name)?;
        let b = self.gpu.upload_f32(name, &v);
        self.advance(self.source.bytes(name)?.len());
        Ok(b)
    }

    fn linear(&mut self, l: &LinearSpec) -> Result<LinearWeights> {
        let w = self.matrix(&l.weight, l.out_features, l.in_features)?;
        let bias = l.bias.as_deref().map(|b| self.vector(b)).transpose()?;
        Ok(LinearWeights { w, bias })
    }

    fn norm(&mut self, n: &NormSpec) -> Result<NormWeights> {
        Ok(NormWeights { w: self.vector(&n.weight)?, spec: n.clone() })
    }

    fn opt_norm(&mut self, n: &Option<NormSpec>) -> Result<Option<NormWeights>> {
        n.as_ref().map(|n| self.norm(n)).transpose()
    }
}

/// Validates `source` against `spec` and uploads every tensor, calling `on_progress` after each.
pub fn upload(
    gpu: &Gpu,
    spec: &ModelSpec,
    source: &dyn TensorSource,
    on_progress: &mut dyn FnMut(&LoadProgress),
) -> Result<ModelWeights> {
    check_against_spec(spec, source)?;
    let decls = spec.tensors();
    let mut bytes_total = 0;
    for d in &decls {
        bytes_total += source.bytes(&d.name)?.len() as u64;
    }
    let mut up = Uploader {
        gpu,
        source,
        progress: LoadProgress { tensors_total: decls.len(), bytes_total, ..Default::default() },
        on_progress,
    };
    let embed = up.matrix(&spec.embed, spec.vocab, spec.hidden)?;
    let mut layers = Vec::with_capacity(spec.layers.len());
    for layer in &spec.layers {
        let pre_mixer = up.norm(&layer.norms.pre_mixer)?;
        let mixer = match &layer.mixer {
            MixerSpec::Attention(a) => MixerWeights::Attention {
                q: up.linear(&a.q_proj)?,
                k: up.linear(&a.k_proj)?,
                v: up.linear(&a.v_proj)?,
                o: up.linear(&a.o_proj)?,
                qk_norm: match &a.qk_norm {
                    Some((q, k)) => Some((up.norm(q)?, up.norm(k)?)),
                    None => None,
                },
            },
        };
        let post_mixer = up.opt_norm(&layer.norms.post_mixer)?;
        let pre_mlp = up.norm(&layer.norms.pre_mlp)?;
        let mlp = match &layer.mlp {
            MlpSpec::Gated { gate, up: u, down, .. } => {
                MlpWeights::Gated { gate: up.linear(gate)?, up: up.linear(u)?, down: up.linear(down)? }
            }
        };
        let post_mlp = up.opt_norm(&layer.norms.post_mlp)?;
        layers.push(LayerWeights { mixer, mlp, pre_mixer, post_mixer, pre_mlp, post_mlp });
    }
    let final_norm = up.norm(&spec.final_norm)?;
    let head = if spec.tied_embeddings { None } else { Some(up.matrix(&spec.lm_head, spec.vocab, spec.hidden)?) };
    Ok(ModelWeights { embed, head, final_norm, layers })
}
