//! Compute pipelines, created once per (shader, variant) and then shared.

use crate::error::Result;
use crate::shader::{preprocess, Defines};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A cache of compiled compute pipelines keyed by shader path and defines.
#[derive(Default)]
pub struct PipelineCache {
    pipelines: Mutex<HashMap<(String, Defines), Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    /// The pipeline for `shader` with `defines` (entry point `main`), compiling it on first use.
    pub fn get(&self, device: &wgpu::Device, shader: &str, defines: &Defines) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = (shader.to_string(), defines.clone());
        let mut map = self.pipelines.lock().expect("pipeline cache poisoned");
        if let Some(p) = map.get(&key) {
            return Ok(p.clone());
        }
        let source = preprocess(shader, defines)?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = Arc::new(device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(shader),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        }));
        map.insert(key, pipeline.clone());
        Ok(pipeline)
    }
}
