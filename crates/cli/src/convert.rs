//! `ternlight convert`: an HF BitNet checkpoint to a Ternlight-ready GGUF file with its ternary weights as exact
//! TQ1_0 or TQ2_0 codes (block scale 1, the layer multiplier kept in its `weight_scale` tensor), every other tensor in
//! its stored float type, and the HF config and tokenizer in the metadata.

use crate::model_dir::ModelDir;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use ternlight_core::dtype::DType;
use ternlight_core::gguf::checkpoint::{CONFIG_KEY, TOKENIZER_KEY};
use ternlight_core::gguf::codec::{encode_tq1_0, encode_tq2_0};
use ternlight_core::gguf::{GgmlType, GgufWriter, Value};
use ternlight_core::reference::ternary::{absmean, unpack_rows};
use ternlight_core::spec::{LinearSpec, ModelSpec, Ternary};

/// The ternary encodings `convert` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TernaryType {
    /// 1.6875 bits per weight.
    Tq1_0,
    /// 2.0625 bits per weight.
    Tq2_0,
}

/// Arguments of `ternlight convert`.
#[derive(clap::Args)]
pub struct Args {
    /// The HF BitNet model directory.
    #[arg(long)]
    model: PathBuf,
    /// The GGUF file to write.
    #[arg(long)]
    out: PathBuf,
    /// Ternary encoding.
    #[arg(long, value_enum, default_value = "tq2-0")]
    r#type: TernaryType,
}

/// The ternary layers of a transformers BitNet spec: attention and MLP projections.
fn ternary_layers(spec: &ModelSpec) -> Vec<&LinearSpec> {
    spec.layers.iter().flat_map(|l| l.matrices()).filter(|l| l.ternary.is_some()).collect()
}

/// Writes the GGUF file and reports its size.
pub fn run(args: Args) -> Result<()> {
    let model = ModelDir::open(&args.model)?;
    let source = model.checkpoint.source();
    let layers = ternary_layers(&model.spec);
    if layers.is_empty() || layers.iter().any(|l| matches!(l.ternary, Some(Ternary::Absmean { input_norm: Some(_) }))) {
        bail!("{}: convert takes transformers BitNet checkpoints (bitlinear or autobitlinear)", args.model.display());
    }
    let encode = |codes: &[i8]| match args.r#type {
        TernaryType::Tq1_0 => (GgmlType::TQ1_0, encode_tq1_0(codes, 1.0)),
        TernaryType::Tq2_0 => (GgmlType::TQ2_0, encode_tq2_0(codes, 1.0)),
    };
    let ternary: HashMap<&str, &LinearSpec> = layers.iter().map(|l| (l.weight.as_str(), *l)).collect();
    let mut w = GgufWriter::new();
    let mut online = false;
    for decl in model.spec.tensors() {
        let bytes = source.bytes(&decl.name)?;
        let info = source.info(&decl.name)?.with_context(|| format!("missing tensor {}", decl.name))?;
        let Some(l) = ternary.get(decl.name.as_str()) else {
            let ty = match info.dtype {
                DType::F32 => GgmlType::F32,
                DType::F16 => GgmlType::F16,
                DType::BF16 => GgmlType::BF16,
                other => bail!("{}: cannot store dtype {other} in GGUF", decl.name),
            };
            w.tensor(&decl.name, &info.shape, ty, bytes.to_vec());
            continue;
        };
        let (rows, cols) = (l.stored_rows(), l.in_features);
        let codes: Vec<f32> = match &l.ternary {
            Some(Ternary::PackedRows { .. }) => unpack_rows(&bytes, rows, cols),
            _ => {
                // Online ternarisation happens here once; the file then holds exact codes and their multiplier.
                online = true;
                let (codes, multiplier) = absmean(&source.f32(&decl.name)?);
                let scale = 1.0 / multiplier;
                w.tensor(&format!("{}_scale", l.weight), &[1], GgmlType::F32, scale.to_le_bytes().to_vec());
                codes
            }
        };
        let codes: Vec<i8> = codes.iter().map(|&c| c as i8).collect();
        let (ty, data) = encode(&codes);
        w.tensor(&decl.name, &[rows, cols], ty, data);
    }
    let config_path = args.model.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path)?)
        .with_context(|| format!("{}", config_path.display()))?;
    if online {
        config["quantization_config"] =
            serde_json::json!({"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"});
    }
    w.meta("general.architecture", Value::Str(model.spec.model_type.clone()));
    w.meta(CONFIG_KEY, Value::Str(config.to_string()));
    if let Ok(tokenizer) = std::fs::read_to_string(args.model.join("tokenizer.json")) {
        w.meta(TOKENIZER_KEY, Value::Str(tokenizer));
    }
    let bytes = w.to_bytes();
    std::fs::write(&args.out, &bytes).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {} ({} bytes, {} ternary tensors as {:?})",
        args.out.display(),
        bytes.len(),
        layers.len(),
        args.r#type
    );
    Ok(())
}
