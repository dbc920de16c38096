//! Ternlight runtime: a model's weights on the GPU, its per-layer state, and the forward pass as recorded plans.
//!
//! - [`weights`]: uploads a checkpoint to the GPU after validating it against the spec.
//! - [`graph`]: turns the per-layer schedule into a [`Plan`](ternlight_gpu::plan::Plan) (prefill or decode form).
//! - [`session`]: owns weights, KV cache and scratch; `prefill(ids)` and `step(id)`.
//! - [`generate`]: the sampling loop with timings.
//! - [`hub`]: model names (`http(s)://` base URLs, Hugging Face repo ids) to base URLs.
//! - `http` (native builds): model files over HTTP(S) with Range requests, resume, retries and a disk cache.
//! - [`tuning`]: kernel sizes from an autotune run, cached per adapter (a file natively, Cache Storage in the browser).
//! - `web` (wasm32): the browser API, an `Engine` that streams a model by `fetch` into WebGPU and generates text.

#![warn(missing_docs)]

pub mod bench;
pub mod error;
pub mod generate;
pub mod graph;
#[cfg(not(target_arch = "wasm32"))]
pub mod http;
pub mod hub;
pub mod session;
pub mod tuning;
#[cfg(target_arch = "wasm32")]
pub mod web;
pub mod weights;

pub use error::{Result, RuntimeError};
pub use session::{Route, Session, SessionOptions};
