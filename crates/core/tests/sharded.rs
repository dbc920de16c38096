//! Sharded checkpoints (`model.safetensors.index.json` + shards) load like single files: the llama fixture,
//! re-saved as f32 in two shards, still reproduces the reference logits.

use std::path::PathBuf;
use ternlight_core::oracle::{max_abs_diff, Oracle};
use ternlight_core::reference::model::ReferenceModel;
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::{write_f32_safetensors, SafetensorsCheckpoint, TensorSource};

#[test]
fn sharded_f32_copy_of_llama_matches_transformers() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama");
    let spec = ModelSpec::from_config_json(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let single = SafetensorsCheckpoint::open_dir(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let decls = spec.tensors();
    let (first, second) = decls.split_at(decls.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let data: Vec<Vec<f32>> = part.iter().map(|d| single.f32(&d.name).unwrap()).collect();
        let tensors: Vec<(&str, Vec<usize>, &[f32])> =
            part.iter().zip(&data).map(|(d, v)| (d.name.as_str(), d.shape.clone(), v.as_slice())).collect();
        std::fs::write(dir.path().join(shard), write_f32_safetensors(&tensors).unwrap()).unwrap();
        for d in part {
            weight_map.insert(d.name.clone(), shard.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();

    let sharded = SafetensorsCheckpoint::open_dir(dir.path()).unwrap();
    assert_eq!(sharded.names().len(), decls.len());
    let oracle = Oracle::open(&src).unwrap();
    let mut model = ReferenceModel::new(spec, &sharded).unwrap();
    let d = max_abs_diff(&model.forward(&oracle.input_ids).unwrap(), &oracle.logits);
    assert!(d < 1e-3, "sharded: max abs diff {d}");

    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = SafetensorsCheckpoint::open_dir(dir.path()).err().unwrap().to_string();
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}
