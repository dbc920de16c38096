//! The CPU reference: plain f32 Rust for every op the GPU runs, written for obviousness, not speed.
//! Kernel tests compare each WGSL kernel against the function of the same name here, and
//! [`model::ReferenceModel`] runs whole models to prove the reference against the HF logits.

pub mod attention;
pub mod block_sparse;
pub mod conv;
pub mod embedding;
pub mod feature_map;
pub mod gated_delta;
pub mod gla;
pub mod gsa;
pub mod hgrn2;
pub mod linear;
pub mod mamba2;
pub mod mlp;
pub mod model;
pub mod moe;
pub mod moh;
pub mod norm;
pub mod rat;
pub mod rope;
pub mod rwkv7;
pub mod ternary;
