//! Every parser of untrusted model files, driven end to end from raw bytes: the entry points of the fuzz targets
//! in `fuzz/` and of the test that replays their corpora (`tests/fuzz_corpus.rs`), so both exercise one path.
//!
//! Each function parses its input as a stranger's file would be parsed on load and then uses what it got (reads
//! every tensor, computes every size), returning the first error. Panics, hangs and runaway allocations are the
//! bugs these entry points exist to find; an `Err` is the expected answer to a malformed file.

use crate::gguf::checkpoint::GgufCheckpoint;
use crate::spec::ModelSpec;
use crate::tensors::{SafetensorsCheckpoint, TensorSource};
use crate::tokenizer::{render_template, ChatMessage, Tokenizer};
use crate::Result;

/// Reads every tensor `source` lists, decoding float ones to f32.
fn read_all(source: &dyn TensorSource, names: &[String]) -> Result<()> {
    for name in names {
        match source.info(name)? {
            Some(info) if info.dtype.is_float() => drop(source.f32(name)?),
            Some(_) => drop(source.bytes(name)?),
            None => {}
        }
    }
    Ok(())
}

/// A single-file safetensors checkpoint: header, then every tensor read and decoded.
pub fn safetensors(data: &[u8]) -> Result<()> {
    let file = SafetensorsCheckpoint::from_files(vec![("untrusted.safetensors".into(), data.to_vec())])?;
    let names: Vec<String> = file.names().into_iter().map(String::from).collect();
    read_all(&file, &names)
}

/// A GGUF file: header, its tokenizer (carried or rebuilt from llama.cpp metadata) loaded, its model spec, then
/// every tensor the spec names read (ternary ones unpacked).
pub fn gguf(data: &[u8]) -> Result<()> {
    let file = GgufCheckpoint::from_bytes(data.to_vec())?;
    file.tokenizer()?;
    let spec = ModelSpec::from_config_json(&file.config_json()?)?;
    let names: Vec<String> = spec.tensors().into_iter().map(|d| d.name).collect();
    read_all(&file, &names)
}

/// A `config.json`: its spec, the tensors it implies and the bytes of one position of context.
pub fn config(data: &[u8]) -> Result<()> {
    let spec = ModelSpec::from_config_json(&String::from_utf8_lossy(data))?;
    drop(spec.tensors());
    spec.context_bytes(1, crate::dtype::DType::F16);
    Ok(())
}

/// A `tokenizer.json`: loaded, then a short mixed-script text encoded and decoded.
pub fn tokenizer(data: &[u8]) -> Result<()> {
    let tokenizer = Tokenizer::from_bytes(data, None)?;
    let ids = tokenizer.encode("Hello, wörld! 1.58 bits — 三", true)?;
    tokenizer.decode(&ids).map(drop)
}

/// A chat template rendered with a two-turn conversation.
pub fn chat_template(data: &[u8]) -> Result<()> {
    let message = |role: &str, content: &str| ChatMessage { role: role.into(), content: content.into() };
    let messages = [message("system", "Be brief."), message("user", "Hi there")];
    render_template(&String::from_utf8_lossy(data), &messages, Some("<s>"), Some("</s>")).map(drop)
}
