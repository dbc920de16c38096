//! A model on disk: a Hugging Face directory (config.json, safetensors single or sharded, tokenizer files) or a
//! GGUF file (written by `ternlight convert`, the config and tokenizer in its metadata, or llama.cpp's own).

use crate::progress::LoadBar;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use ternlight_core::gguf::checkpoint::{GgufCheckpoint, TOKENIZER_KEY};
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::{SafetensorsCheckpoint, TensorSource};
use ternlight_core::tokenizer::Tokenizer;
use ternlight_gpu::Gpu;
use ternlight_runtime::{Session, SessionOptions};

/// Where the weights come from.
pub enum Checkpoint {
    /// A Hugging Face directory's safetensors.
    Safetensors(SafetensorsCheckpoint),
    /// A Ternlight-ready GGUF file.
    Gguf(GgufCheckpoint),
}

impl Checkpoint {
    /// The tensors.
    pub fn source(&self) -> &dyn TensorSource {
        match self {
            Checkpoint::Safetensors(c) => c,
            Checkpoint::Gguf(c) => c,
        }
    }
}

/// The parsed parts of a model directory or GGUF file.
pub struct ModelDir {
    pub path: PathBuf,
    pub spec: ModelSpec,
    pub checkpoint: Checkpoint,
}

impl ModelDir {
    /// Reads config.json and opens the checkpoint (or the GGUF file `path`).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
            let gguf = GgufCheckpoint::open(path)?;
            let spec =
                ModelSpec::from_config_json(&gguf.config_json()?).with_context(|| format!("{}", path.display()))?;
            return Ok(ModelDir { path: path.to_path_buf(), spec, checkpoint: Checkpoint::Gguf(gguf) });
        }
        if !path.is_dir() {
            anyhow::bail!("model directory {} does not exist (or is not a .gguf file)", path.display());
        }
        let config_path = path.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
        let spec = ModelSpec::from_config_json(&text).with_context(|| format!("{}", config_path.display()))?;
        let checkpoint = Checkpoint::Safetensors(SafetensorsCheckpoint::open_dir(path)?);
        Ok(ModelDir { path: path.to_path_buf(), spec, checkpoint })
    }

    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present), or the GGUF file's tokenizer.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        if let Checkpoint::Gguf(g) = &self.checkpoint {
            let json = g.text(TOKENIZER_KEY).with_context(|| match g.text("tokenizer.ggml.model") {
                Some(kind) => format!(
                    "{}: its llama.cpp tokenizer (tokenizer.ggml.model = {kind}) is not read yet; token ids work \
                     (`ternlight logits`)",
                    self.path.display()
                ),
                None => format!("{} carries no tokenizer", self.path.display()),
            })?;
            return Ok(Tokenizer::from_bytes(json.as_bytes(), None)?);
        }
        let tj = self.path.join("tokenizer.json");
        let json = std::fs::read(&tj).with_context(|| format!("no tokenizer at {}", tj.display()))?;
        let config = std::fs::read(self.path.join("tokenizer_config.json")).ok();
        Ok(Tokenizer::from_bytes(&json, config.as_deref())?)
    }

    /// Acquires the GPU and uploads the model, showing a progress bar unless `quiet`.
    pub fn session(&self, options: &SessionOptions, quiet: bool) -> Result<Session> {
        let gpu = Arc::new(Gpu::new_blocking()?);
        let bar = LoadBar::new(quiet);
        let session = Session::new(gpu, self.spec.clone(), self.checkpoint.source(), options, &mut |p| bar.update(p))?;
        bar.finish();
        Ok(session)
    }
}
