//! A model: a Hugging Face directory (config.json, safetensors single or sharded, tokenizer files), a GGUF file
//! (written by `ternlight convert`, the config and tokenizer in its metadata, or llama.cpp's own), or either of
//! them behind an `http(s)://` URL or a Hugging Face repo id (`org/name[@revision]`): the same files, tensors
//! streamed by Range requests.

use crate::progress::LoadBar;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use ternlight_core::gguf::checkpoint::GgufCheckpoint;
use ternlight_core::ranged::RangeSource;
use ternlight_core::spec::{AttentionPolicy, ModelSpec};
use ternlight_core::tensors::{check_against_spec, shard_names, SafetensorsCheckpoint, TensorSource};
use ternlight_core::tokenizer::Tokenizer;
use ternlight_gpu::Gpu;
use ternlight_runtime::http::{cache_dir, Client};
use ternlight_runtime::hub::model_base;
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
    /// A remote (or built-in) model's tokenizer files, fetched at open.
    remote_tokenizer: Option<RemoteTokenizer>,
}

/// `tokenizer.json` and `tokenizer_config.json` as a server had them (`None` where it had not).
type RemoteTokenizer = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The demo model's files (`models/demo`), built into the binary so that `ternlight run` works offline with no
/// `--model`.
mod demo {
    pub const CONFIG: &str = include_str!("../../../models/demo/config.json");
    pub const WEIGHTS: &[u8] = include_bytes!("../../../models/demo/model.safetensors");
    pub const TOKENIZER: &[u8] = include_bytes!("../../../models/demo/tokenizer.json");
    pub const TOKENIZER_CONFIG: &[u8] = include_bytes!("../../../models/demo/tokenizer_config.json");
}

impl ModelDir {
    /// The model at `path`, or the built-in demo model when there is none.
    pub fn open_or_demo(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(path) => Self::open(path),
            None => Self::demo(),
        }
    }

    /// The built-in demo model (`models/demo`).
    pub fn demo() -> Result<Self> {
        let spec = ModelSpec::from_config_json(demo::CONFIG).context("built-in demo model")?;
        let weights = vec![("built-in demo model.safetensors".to_string(), demo::WEIGHTS.to_vec())];
        let checkpoint = Checkpoint::Safetensors(SafetensorsCheckpoint::from_files(weights)?);
        let tokenizer = (Some(demo::TOKENIZER.to_vec()), Some(demo::TOKENIZER_CONFIG.to_vec()));
        Ok(ModelDir { path: "built-in demo model".into(), spec, checkpoint, remote_tokenizer: Some(tokenizer) })
    }

    /// Reads config.json and opens the checkpoint (or the GGUF file `path`), locally or from a URL or hub id.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            if let Some(base) = model_base(&path.to_string_lossy()) {
                return Self::open_remote(path, &base);
            }
        }
        if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
            return Self::from_gguf(path, GgufCheckpoint::open(path)?, None);
        }
        if !path.is_dir() {
            anyhow::bail!(
                "model directory {} does not exist (nor is it a .gguf file, an http(s) URL or an org/name hub id)",
                path.display()
            );
        }
        let config_path = path.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
        let spec = ModelSpec::from_config_json(&text).with_context(|| format!("{}", path.display()))?;
        let checkpoint = Checkpoint::Safetensors(SafetensorsCheckpoint::open_dir(path)?);
        Ok(ModelDir { path: path.to_path_buf(), spec, checkpoint, remote_tokenizer: None })
    }

    fn from_gguf(path: &Path, gguf: GgufCheckpoint, remote_tokenizer: Option<RemoteTokenizer>) -> Result<Self> {
        let spec = ModelSpec::from_config_json(&gguf.config_json()?).with_context(|| format!("{}", path.display()))?;
        Ok(ModelDir { path: path.to_path_buf(), spec, checkpoint: Checkpoint::Gguf(gguf), remote_tokenizer })
    }

    /// The files of a model directory (or one GGUF file) at `base`: small files fetched whole, safetensors
    /// streamed into the disk cache with tensors read as their bytes arrive.
    fn open_remote(path: &Path, base: &str) -> Result<Self> {
        let client = Client::default();
        if base.ends_with(".gguf") {
            let file = client.open_cached(base, &cache_dir())?;
            return Self::from_gguf(path, GgufCheckpoint::from_source(Box::new(file))?, None);
        }
        let url = |name: &str| format!("{base}/{name}");
        let config =
            client.fetch(&url("config.json"))?.with_context(|| format!("{}: not found", url("config.json")))?;
        let text = String::from_utf8(config).with_context(|| format!("{}: not UTF-8", url("config.json")))?;
        let spec = ModelSpec::from_config_json(&text).with_context(|| url("config.json"))?;
        let index_url = url("model.safetensors.index.json");
        let shards = match client.fetch(&index_url)? {
            Some(index) => shard_names(&index, &index_url)?,
            None => vec!["model.safetensors".to_string()],
        };
        let mut sources: Vec<Box<dyn RangeSource>> = Vec::with_capacity(shards.len());
        for shard in &shards {
            sources.push(Box::new(client.open_cached(&url(shard), &cache_dir())?));
        }
        let checkpoint = Checkpoint::Safetensors(SafetensorsCheckpoint::from_sources(sources)?);
        let tokenizer = (client.fetch(&url("tokenizer.json"))?, client.fetch(&url("tokenizer_config.json"))?);
        Ok(ModelDir { path: path.to_path_buf(), spec, checkpoint, remote_tokenizer: Some(tokenizer) })
    }

    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present), or the GGUF file's tokenizer, and checks
    /// its ids fit the model's embedding.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let tokenizer = self.load_tokenizer()?;
        tokenizer.check_vocab(self.spec.vocab)?;
        Ok(tokenizer)
    }

    fn load_tokenizer(&self) -> Result<Tokenizer> {
        if let Checkpoint::Gguf(g) = &self.checkpoint {
            return g.tokenizer()?.with_context(|| format!("{} carries no tokenizer", self.path.display()));
        }
        if let Some((json, config)) = &self.remote_tokenizer {
            let json = json.as_deref().with_context(|| format!("no tokenizer.json at {}", self.path.display()))?;
            return Ok(Tokenizer::from_bytes(json, config.as_deref())?);
        }
        let tj = self.path.join("tokenizer.json");
        let json = std::fs::read(&tj).with_context(|| format!("no tokenizer at {}", tj.display()))?;
        let config = std::fs::read(self.path.join("tokenizer_config.json")).ok();
        Ok(Tokenizer::from_bytes(&json, config.as_deref())?)
    }

    /// Acquires the GPU and uploads the model, showing a progress bar unless `quiet`.
    pub fn session(&self, options: &SessionOptions, quiet: bool) -> Result<Session> {
        // Header-only: a checkpoint that does not fit the config is refused before the GPU is touched.
        check_against_spec(&self.spec, self.checkpoint.source())?;
        let mut gpu = Gpu::new_blocking()?;
        ternlight_runtime::tuning::apply_cached(&mut gpu);
        let gpu = Arc::new(gpu);
        let bar = LoadBar::new(quiet);
        let session = Session::new(gpu, self.spec.clone(), self.checkpoint.source(), options, &mut |p| bar.update(p))?;
        bar.finish();
        Ok(session)
    }
}

/// Parses `--attention-policy` (see `AttentionPolicy` for the syntax).
pub fn parse_policy(text: &str) -> Result<AttentionPolicy, String> {
    AttentionPolicy::parse(text).map_err(|e| e.to_string())
}
