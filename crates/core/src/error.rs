//! The one error type of the core crate; every message names the file, tensor or field at fault.

use thiserror::Error;

/// Errors from parsing configs, tensor files and tokenizers, or from invalid requests to the reference.
#[derive(Debug, Error)]
pub enum CoreError {
    /// A remote file could not be fetched (after retries).
    #[error("cannot fetch {url}: {message}")]
    Network {
        /// The URL that failed.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON or not of the expected shape.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file that failed.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// config.json lacks a field the architecture needs, or holds a value of the wrong type.
    #[error("config.json: field `{field}` {problem}")]
    ConfigField {
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The architecture (or one layer type of it) is not one Ternlight runs.
    #[error("unsupported {what} `{name}`; supported: {supported}")]
    Unsupported {
        /// What kind of thing is unsupported (model_type, layer type, rope type, ...).
        what: &'static str,
        /// The value found in the file.
        name: String,
        /// A comma-separated list of what is supported.
        supported: String,
    },
    /// A tensor container is malformed (truncated, lying header, bad offsets).
    #[error("{path}: malformed tensor file: {message}")]
    TensorFile {
        /// The file that failed.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is absent from every file.
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor exists but its shape or dtype differs from what the config implies.
    #[error("tensor `{name}`: expected {expected}, found {found}")]
    TensorMismatch {
        /// The tensor name.
        name: String,
        /// What the spec requires.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// Tokenizer or chat template failure.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An invalid request, e.g. a token id outside the vocabulary or an empty prompt.
    #[error("{0}")]
    InvalidInput(String),
}

/// Result alias for the core crate.
pub type Result<T> = std::result::Result<T, CoreError>;

impl CoreError {
    /// Shorthand for a missing or mistyped config field.
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        CoreError::ConfigField { field: field.into(), problem: problem.into() }
    }
}
