//! A Hugging Face model directory on disk: config.json, safetensors (single or sharded), tokenizer files.

use crate::progress::LoadBar;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::SafetensorsCheckpoint;
use ternlight_core::tokenizer::Tokenizer;
use ternlight_gpu::Gpu;
use ternlight_runtime::{Session, SessionOptions};

/// The parsed parts of a model directory.
pub struct ModelDir {
    pub path: PathBuf,
    pub spec: ModelSpec,
    pub checkpoint: SafetensorsCheckpoint,
}

impl ModelDir {
    /// Reads config.json and opens the checkpoint.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            anyhow::bail!("model directory {} does not exist", path.display());
        }
        let config_path = path.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
        let spec = ModelSpec::from_config_json(&text).with_context(|| format!("{}", config_path.display()))?;
        let checkpoint = SafetensorsCheckpoint::open_dir(path)?;
        Ok(ModelDir { path: path.to_path_buf(), spec, checkpoint })
    }

    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present).
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let tj = self.path.join("tokenizer.json");
        let json = std::fs::read(&tj).with_context(|| format!("no tokenizer at {}", tj.display()))?;
        let config = std::fs::read(self.path.join("tokenizer_config.json")).ok();
        Ok(Tokenizer::from_bytes(&json, config.as_deref())?)
    }

    /// Acquires the GPU and uploads the model, showing a progress bar unless `quiet`.
    pub fn session(&self, options: &SessionOptions, quiet: bool) -> Result<Session> {
        let gpu = Arc::new(Gpu::new_blocking()?);
        let bar = LoadBar::new(quiet);
        let session = Session::new(gpu, self.spec.clone(), &self.checkpoint, options, &mut |p| bar.update(p))?;
        bar.finish();
        Ok(session)
    }
}
