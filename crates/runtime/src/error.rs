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

/// Result alias for the runtime.
pub type Result<T> = std::result::Result<T, RuntimeError>;
