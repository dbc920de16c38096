//! Ternlight's GPU layer: one wgpu code path for native (Vulkan, Metal, DX12, GL) and the browser (WebGPU).
//!
//! - [`device`]: adapter/device acquisition with the adapter's own limits and a feature report.
//! - [`shader`]: the WGSL sources under `shaders/` and a small preprocessor for variants.
//! - [`pipeline`]: compute pipelines created once per (shader, variant) and cached.
//! - [`buffer`]: activation buffers, weights (split across bindings when larger than a binding), readback.
//! - [`plan`]: a recorded list of GPU operations, encoded into one command buffer per forward.
//! - [`kernels`]: one module per kernel family; each checks shapes and records its dispatches.
//! - `tune`: times candidate kernel sizes on the device and picks the fastest.

#![warn(missing_docs)]

pub mod buffer;
pub mod device;
pub mod error;
pub mod kernels;
pub mod pipeline;
pub mod plan;
pub mod shader;
pub mod tune;

pub use device::{DeviceInfo, Gpu, GpuOptions};
pub use error::{GpuError, Result};
/// The wgpu version the kernels are built against, for crates that hold buffers.
pub use wgpu;
