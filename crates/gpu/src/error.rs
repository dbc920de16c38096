//! The one error type of the GPU crate.

use thiserror::Error;

/// Errors from device acquisition, kernel shape checks and GPU execution.
#[derive(Debug, Error)]
pub enum GpuError {
    /// No adapter or device could be obtained.
    #[error("no usable GPU: {0}")]
    NoDevice(String),
    /// A kernel was asked for shapes it does not handle.
    #[error("{kernel}: {message}")]
    Shape {
        /// The kernel that refused.
        kernel: &'static str,
        /// Why.
        message: String,
    },
    /// A request exceeds what the device allows.
    #[error("device limit exceeded: {0}")]
    Limit(String),
    /// A shader failed to preprocess (unknown include, unbalanced #if).
    #[error("shader {name}: {message}")]
    Shader {
        /// The shader file.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The device was lost (driver reset, browser reclaim, `destroy`): the model must be loaded again.
    #[error("the GPU device was lost ({0}); load the model again")]
    DeviceLost(String),
    /// The GPU reported an error while running or mapping.
    #[error("GPU execution failed: {0}")]
    Execution(String),
}

/// Result alias for the GPU crate.
pub type Result<T> = std::result::Result<T, GpuError>;

impl GpuError {
    /// Shorthand for a kernel shape refusal.
    pub fn shape(kernel: &'static str, message: impl Into<String>) -> Self {
        GpuError::Shape { kernel, message: message.into() }
    }
}
