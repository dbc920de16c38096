//! A whole decoder-only model on the CPU, driven by a [`ModelSpec`]: the oracle for the GPU runtime.

use super::{attention::attention, embedding::embedding, linear::linear, mlp::gated, norm::rms_norm, rope::rope};
use crate::spec::{LinearSpec, MixerSpec, MlpSpec, ModelSpec, NormSpec};
use crate::tensors::{check_against_spec, TensorSource};
use crate::{CoreError, Result};
use std::collections::HashMap;

/// Per-layer key/value history, [positions, n_kv_heads, head_dim] each.
#[derive(Default, Clone)]
struct LayerCache {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// The model on the CPU in f32 with a KV cache; `forward` appends tokens and returns their logits.
pub struct ReferenceModel {
    spec: ModelSpec,
    weights: HashMap<String, Vec<f32>>,
    rope_tables: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    cache: Vec<LayerCache>,
    position: usize,
}

impl ReferenceModel {
    /// Decodes every tensor of `spec` from `source` to f32, after checking names and shapes.
    pub fn new(spec: ModelSpec, source: &dyn TensorSource) -> Result<Self> {
        check_against_spec(&spec, source)?;
        let mut weights = HashMap::new();
        for decl in spec.tensors() {
            weights.insert(decl.name.clone(), source.f32(&decl.name)?);
        }
        let rope_tables = spec
            .layers
            .iter()
            .map(|l| match &l.mixer {
                MixerSpec::Attention(a) => a.rope.as_ref().map(|r| r.tables(spec.max_positions)),
            })
            .collect();
        let cache = vec![LayerCache::default(); spec.layers.len()];
        Ok(ReferenceModel { spec, weights, rope_tables, cache, position: 0 })
    }

    /// Tokens processed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Forgets the context.
    pub fn reset(&mut self) {
        self.cache.iter_mut().for_each(|c| *c = LayerCache::default());
        self.position = 0;
    }

    fn w(&self, name: &str) -> &[f32] {
        &self.weights[name]
    }

    fn linear(&self, x: &[f32], l: &LinearSpec) -> Vec<f32> {
        linear(x, self.w(&l.weight), l.bias.as_deref().map(|b| self.w(b)), l.in_features, l.out_features)
    }

    fn norm(&self, x: &[f32], n: &NormSpec) -> Vec<f32> {
        rms_norm(x, self.w(&n.weight), n.dim, n.eps, n.unit_offset)
    }

    /// Runs `ids` after the tokens already seen and returns their logits, [ids.len(), vocab].
    pub fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(CoreError::InvalidInput("no tokens to process".into()));
        }
        for &id in ids {
            self.spec.check_token(id)?;
        }
        let pos0 = self.position;
        if pos0 + ids.len() > self.spec.max_positions {
            return Err(CoreError::InvalidInput(format!(
                "context of {} tokens exceeds the model's {} positions",
                pos0 + ids.len(),
                self.spec.max_positions
            )));
        }
        let spec = self.spec.clone();
        let hidden = spec.hidden;
        let mut x = embedding(self.w(&spec.embed), hidden, ids, spec.embed_scale.unwrap_or(1.0));
        for (li, layer) in spec.layers.iter().enumerate() {
            let h = self.norm(&x, &layer.norms.pre_mixer);
            let mixed = match &layer.mixer {
                MixerSpec::Attention(a) => {
                    let mut q = self.linear(&h, &a.q_proj);
                    let mut k = self.linear(&h, &a.k_proj);
                    let v = self.linear(&h, &a.v_proj);
                    if let Some((qn, kn)) = &a.qk_norm {
                        q = self.norm(&q, qn);
                        k = self.norm(&k, kn);
                    }
                    if let (Some(r), Some((cos, sin))) = (&a.rope, &self.rope_tables[li]) {
                        rope(&mut q, a.n_heads, a.head_dim, r.rotary_dim, pos0, cos, sin);
                        rope(&mut k, a.n_kv_heads, a.head_dim, r.rotary_dim, pos0, cos, sin);
                    }
                    let cache = &mut self.cache[li];
                    cache.k.extend_from_slice(&k);
                    cache.v.extend_from_slice(&v);
                    let o =
                        attention(&q, &cache.k, &cache.v, a.n_heads, a.n_kv_heads, a.head_dim, pos0, a.window, a.scale);
                    self.linear(&o, &a.o_proj)
                }
            };
            let mixed = match &layer.norms.post_mixer {
                Some(n) => self.norm(&mixed, n),
                None => mixed,
            };
            x.iter_mut().zip(&mixed).for_each(|(a, b)| *a += b);
            let h = self.norm(&x, &layer.norms.pre_mlp);
            let out = match &layer.mlp {
                MlpSpec::Gated { gate, up, down, act } => {
                    let a = gated(*act, &self.linear(&h, gate), &self.linear(&h, up));
                    self.linear(&a, down)
                }
            };
            let out = match &layer.norms.post_mlp {
                Some(n) => self.norm(&out, n),
                None => out,
            };
            x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
        }
        let x = self.norm(&x, &spec.final_norm);
        self.position += ids.len();
        Ok(linear(&x, self.w(&spec.lm_head), None, hidden, spec.vocab))
    }
}
