//! Device acquisition: the adapter's own limits are requested (the defaults are far lower), and the features
//! kernels may use are reported.

use crate::error::{GpuError, Result};
use crate::kernels::Tuning;
use crate::pipeline::PipelineCache;
use std::sync::{Arc, Mutex};

/// What the device is and what it allows, for logs, `inspect` and the page.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Adapter name.
    pub name: String,
    /// Backend (Vulkan, Metal, WebGPU, ...).
    pub backend: String,
    /// Device type (discrete, integrated, CPU, ...).
    pub device_type: String,
    /// Whether f16 arithmetic is available in shaders.
    pub shader_f16: bool,
    /// Whether subgroup operations are available.
    pub subgroups: bool,
    /// Lanes per subgroup where subgroups are available and all have one size (lavapipe: 8), natively; else 0.
    /// Kernels that share loads between lanes by `subgroupBroadcast` are compiled for it. Browsers get 0: their
    /// WGSL needs `enable subgroups;`, which naga's WGSL front end rejects.
    pub subgroup_size: u32,
    /// Whether timestamp queries are available.
    pub timestamps: bool,
    /// Whether WGSL's `packed_4x8_integer_dot_product` (`dot4I8Packed`) is available.
    pub packed_dot: bool,
    /// Largest storage buffer binding, bytes.
    pub max_binding: u64,
    /// Largest buffer, bytes.
    pub max_buffer: u64,
    /// Workgroup shared memory, bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup.
    pub max_workgroup_invocations: u32,
    /// Storage buffers one kernel may bind (WebGPU guarantees 8; fused kernels that need more fall back).
    pub max_storage_buffers: u32,
}

/// A device, its queue and the pipeline cache: everything kernels need.
pub struct Gpu {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// What the device is and allows.
    pub info: DeviceInfo,
    /// Compiled pipelines, created once.
    pub pipelines: PipelineCache,
    /// Workgroup and tile sizes the kernels use on this device.
    pub tuning: Tuning,
    /// The first GPU error no one handled (validation, out of memory), kept instead of wgpu's default panic.
    errors: Arc<Mutex<Option<String>>>,
    /// Why the device was lost, once it has been (for good: every later check fails).
    lost: Arc<Mutex<Option<String>>>,
    /// Bytes of the scratch-style buffers created so far (see [`Gpu::allocated_bytes`]).
    pub(crate) allocated: std::sync::atomic::AtomicU64,
}

/// What to take from the adapter below what it offers: fallbacks tested on hardware that has more (no
/// shader-f16, no subgroups, small bindings), or a smaller share of a GPU.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Features not to enable even where the adapter has them.
    pub without: wgpu::Features,
    /// A storage-binding limit below the adapter's, bytes.
    pub max_binding: Option<u64>,
    /// A limit on storage buffers per kernel below the adapter's.
    pub max_storage_buffers: Option<u32>,
}

impl Gpu {
    /// Acquires the best available adapter and a device with its full limits.
    pub async fn new() -> Result<Self> {
        Self::with_options(&GpuOptions::default()).await
    }

    /// Acquires the best available adapter and a device with its limits and features, less what `options` holds
    /// back (the device enforces the lower limits itself).
    pub async fn with_options(options: &GpuOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoDevice(format!("no adapter ({e}); on Linux install mesa-vulkan-drivers")))?;
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let features = adapter.features() & wanted & !options.without;
        let mut limits = adapter.limits();
        if let Some(cap) = options.max_binding {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(cap);
        }
        if let Some(cap) = options.max_storage_buffers {
            limits.max_storage_buffers_per_shader_stage = limits.max_storage_buffers_per_shader_stage.min(cap);
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("ternlight"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoDevice(e.to_string()))?;
        let a = adapter.get_info();
        let info = DeviceInfo {
            name: a.name,
            backend: format!("{:?}", a.backend),
            device_type: format!("{:?}", a.device_type),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_size: match features.contains(wgpu::Features::SUBGROUP) {
                true if !cfg!(target_arch = "wasm32") && a.subgroup_min_size == a.subgroup_max_size => {
                    a.subgroup_min_size
                }
                _ => 0,
            },
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            packed_dot: instance
                .wgsl_language_features()
                .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct),
            max_binding: limits.max_storage_buffer_binding_size as u64,
            max_buffer: limits.max_buffer_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
            max_storage_buffers: limits.max_storage_buffers_per_shader_stage,
        };
        let tuning = Tuning::for_device(&info);
        let errors = Arc::new(Mutex::new(None));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().expect("error slot poisoned");
            if slot.is_none() {
                *slot = Some(match e {
                    wgpu::Error::OutOfMemory { .. } => "out of GPU memory".to_string(),
                    other => other.to_string(),
                });
            }
        }));
        let lost = Arc::new(Mutex::new(None));
        let sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *sink.lock().expect("loss slot poisoned") = Some(format!("{reason:?}: {message}"));
        });
        Ok(Gpu {
            device,
            lost,
            queue,
            info,
            pipelines: PipelineCache::default(),
            tuning,
            errors,
            allocated: Default::default(),
        })
    }

    /// Blocking [`Gpu::new`] for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// Whether the device has been lost (destroyed, reset by the driver, or taken by the browser): everything
    /// built on it must be dropped and the model loaded again on a new [`Gpu`].
    pub fn is_lost(&self) -> bool {
        self.lost.lock().expect("loss slot poisoned").is_some()
    }

    /// Bytes of device memory the driver holds for buffers now, as wgpu counts them (native backends; `None` in the
    /// browser, which does not say).
    pub fn buffer_memory(&self) -> Option<u64> {
        let bytes = self.device.get_internal_counters().hal.buffer_memory.read();
        (bytes > 0).then_some(bytes as u64)
    }

    /// Fails with the first GPU error raised since the last check (e.g. out of memory during `what`).
    pub fn check_errors(&self, what: &str) -> Result<()> {
        if let Some(why) = self.lost.lock().expect("loss slot poisoned").clone() {
            return Err(GpuError::DeviceLost(format!("{what}: {why}")));
        }
        match self.errors.lock().expect("error slot poisoned").take() {
            Some(e) => Err(GpuError::Execution(format!("{what}: {e}"))),
            None => Ok(()),
        }
    }

    /// Waits for submitted work (native); the browser drives completion itself.
    pub(crate) fn wait(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Execution(e.to_string()))?;
        Ok(())
    }
}
