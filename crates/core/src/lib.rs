//! Ternlight core: everything about a model that does not need a GPU.
//!
//! - [`spec`]: the architecture-neutral model description parsed from a Hugging Face `config.json`
//!   (the per-layer schedule is data, not code).
//! - [`tensors`]: tensor containers (safetensors, single file or sharded) and exact dtype decoding.
//! - [`tokenizer`]: `tokenizer.json` loading and chat-template rendering.
//! - [`sampling`]: token selection from logits with a seeded RNG.
//! - [`reference`]: a plain f32 CPU implementation of every op the GPU runs; the oracle for kernel tests.
//! - [`untrusted`]: every parser of model files driven from raw bytes (the fuzz targets' entry points).
//! - [`attention_map`]: attention weights of one layer's heads for visualisation, from tapped queries and keys.

#![warn(missing_docs)]

pub mod attention_map;
pub mod dtype;
pub mod error;
pub mod gguf;
pub mod oracle;
pub mod ranged;
pub mod reference;
pub mod sampling;
pub mod spec;
pub mod tensors;
pub mod tokenizer;
pub mod untrusted;

pub use error::{CoreError, Result};
