//! The one error type of the core crate; every message names the file, tensor or field at fault.

use thiserror::Error;

/// Errors from parsing configs, tensor files and tokenizers, or from invalid requests to the reference.
#[derive(Debug, Error)]
pub enum CoreError {
    /// A remote file could not be fetched (after retries).
    #[error("cannot fetch {}: {}", OneLine(.url), OneLine(.message))]
    Network {
        /// The URL that failed.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", OneLine(.path))]
    Io {
        /// The file that failed.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON or not of the expected shape.
    #[error("{}: invalid JSON: {}", OneLine(.path), OneLine(.message))]
    Json {
        /// The file that failed.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// config.json lacks a field the architecture needs, or holds a value of the wrong type.
    #[error("config.json: field `{}` {}", OneLine(.field), OneLine(.problem))]
    ConfigField {
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The architecture (or one layer type of it) is not one Ternlight runs.
    #[error("unsupported {what} `{}`; supported: {supported}", OneLine(.name))]
    Unsupported {
        /// What kind of thing is unsupported (model_type, layer type, rope type, ...).
        what: &'static str,
        /// The value found in the file.
        name: String,
        /// A comma-separated list of what is supported.
        supported: String,
    },
    /// A tensor container is malformed (truncated, lying header, bad offsets).
    #[error("{}: malformed tensor file: {}", OneLine(.path), OneLine(.message))]
    TensorFile {
        /// The file that failed.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is absent from every file.
    #[error("tensor `{}` is missing from the checkpoint", OneLine(.name))]
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor exists but its shape or dtype differs from what the config implies.
    #[error("tensor `{}`: expected {expected}, found {}", OneLine(.name), OneLine(.found))]
    TensorMismatch {
        /// The tensor name.
        name: String,
        /// What the spec requires.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// Tokenizer or chat template failure.
    #[error("tokenizer: {}", OneLine(.0))]
    Tokenizer(String),
    /// An invalid request, e.g. a token id outside the vocabulary or an empty prompt.
    #[error("{}", OneLine(.0))]
    InvalidInput(String),
}

/// Shows a message on one line: control characters (newlines from a file's strings among them) escaped, so
/// an error about a hostile file stays one line wherever it is printed.
pub struct OneLine<'a>(pub &'a str);

impl std::fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c.is_control() {
                true => write!(f, "{}", c.escape_default())?,
                false => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Result alias for the core crate.
pub type Result<T> = std::result::Result<T, CoreError>;

impl CoreError {
    /// Shorthand for a missing or mistyped config field.
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        CoreError::ConfigField { field: field.into(), problem: problem.into() }
    }
}
