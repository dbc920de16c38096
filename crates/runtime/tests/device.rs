//! Device limits and faults on real devices (lavapipe natively): a device without shader-f16 or subgroups and
//! with small bindings runs the fixture exactly (weights split into row blocks), a KV cache beyond the binding
//! limit is refused before anything is uploaded, and a device lost mid-generation fails the next call with a
//! clear error, after which a new device loads the model again.

use std::path::PathBuf;
use std::sync::Arc;
use ternlight_core::oracle::{max_abs_diff, Oracle};
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::SafetensorsCheckpoint;
use ternlight_gpu::{wgpu, Gpu, GpuOptions};
use ternlight_runtime::{Session, SessionOptions};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama")
}

fn load(gpu: Arc<Gpu>, options: &SessionOptions) -> ternlight_runtime::Result<Session> {
    let spec = ModelSpec::from_config_json(&std::fs::read_to_string(fixture().join("config.json")).unwrap()).unwrap();
    let checkpoint = SafetensorsCheckpoint::open_dir(&fixture()).unwrap();
    Session::new(gpu, spec, &checkpoint, options, &mut |_| {})
}

fn prefill_diff(session: &mut Session, oracle: &Oracle) -> f32 {
    let rows: Vec<usize> = (0..oracle.input_ids.len()).collect();
    max_abs_diff(&pollster::block_on(session.prefill(&oracle.input_ids, &rows)).unwrap(), &oracle.logits)
}

#[test]
fn a_small_device_without_f16_or_subgroups_runs_the_model_or_refuses_it_up_front() {
    let oracle = Oracle::open(&fixture()).unwrap();
    // The llama fixture's largest weights are 32 KiB: 16 KiB bindings split them into row blocks.
    let options = GpuOptions {
        without: wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP,
        max_binding: Some(16384),
        ..Default::default()
    };
    let gpu = Arc::new(pollster::block_on(Gpu::with_options(&options)).unwrap());
    assert!(!gpu.info.shader_f16 && !gpu.info.subgroups && gpu.info.max_binding == 16384);
    let session_options = SessionOptions { max_context: Some(96), prefill_capacity: 2, ..Default::default() };
    let mut session = load(gpu.clone(), &session_options).unwrap();
    let d = prefill_diff(&mut session, &oracle);
    assert!(d < 1e-3, "prefill on the small device: max abs diff {d}");
    drop(session);
    // 512 positions of K and V for 2 heads of 16: 64 KiB in one binding, which this device does not allow.
    let e = load(gpu, &SessionOptions { max_context: Some(512), ..Default::default() }).err().unwrap().to_string();
    assert!(e.contains("in one binding") && e.contains("16384"), "{e}");
}

#[test]
fn a_device_lost_mid_generation_is_reported_and_a_new_one_loads_the_model() {
    let oracle = Oracle::open(&fixture()).unwrap();
    let gpu = Arc::new(Gpu::new_blocking().unwrap());
    let mut session = load(gpu.clone(), &SessionOptions::default()).unwrap();
    pollster::block_on(session.prefill(&oracle.input_ids[..4], &[3])).unwrap();
    pollster::block_on(session.step(oracle.input_ids[4])).unwrap();
    gpu.device.destroy();
    let e = pollster::block_on(session.step(oracle.input_ids[5])).unwrap_err().to_string();
    assert!(e.contains("device was lost") && gpu.is_lost(), "{e}");
    let e = pollster::block_on(session.step(oracle.input_ids[5])).unwrap_err().to_string();
    assert!(e.contains("device was lost"), "the loss persists: {e}");
    drop(session);
    drop(gpu);
    let mut again = load(Arc::new(Gpu::new_blocking().unwrap()), &SessionOptions::default()).unwrap();
    let d = prefill_diff(&mut again, &oracle);
    assert!(d < 1e-3, "after reloading: max abs diff {d}");
}
