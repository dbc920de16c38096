//! The one error type of the runtime.

use thiserror::Error;

/// Errors from loading a model or running it.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// Config, checkpoint, tokenizer or input problems.
    #[error(transparent)]
    Core(#[from] ternlight_core::CoreError),
    /// GPU problems.
    #[error(transparent)]
    Gpu(#[from] ternlight_gpu::GpuError),
    /// The request does not fit the session (context length, token ids, empty input).
    #[error("{0}")]
    Request(String),
}

impl RuntimeError {
    /// A stable name for what failed, for callers that react by kind (the JS API's `error.kind`): `network`,
    /// `model-file` (malformed or inconsistent files), `unsupported`, `invalid-input`, `invalid-request`, `no-gpu`,
    /// `device-lost`, `device-limit`, `gpu` (execution, out of memory) or `internal`.
    pub fn kind(&self) -> &'static str {
        use ternlight_core::CoreError as C;
        use ternlight_gpu::GpuError as G;
        match self {
            RuntimeError::Core(C::Network { .. }) => "network",
            RuntimeError::Core(C::Unsupported { .. }) => "unsupported",
            RuntimeError::Core(C::InvalidInput(_)) => "invalid-input",
            RuntimeError::Core(_) => "model-file",
            RuntimeError::Gpu(G::NoDevice(_)) => "no-gpu",
            RuntimeError::Gpu(G::DeviceLost(_)) => "device-lost",
            RuntimeError::Gpu(G::Limit(_)) => "device-limit",
            RuntimeError::Gpu(G::Execution(_)) => "gpu",
            RuntimeError::Gpu(G::Shape { .. } | G::Shader { .. }) => "internal",
            RuntimeError::Request(_) => "invalid-request",
        }
    }
}

/// Result alias for the runtime.
pub type Result<T> = std::result::Result<T, RuntimeError>;
