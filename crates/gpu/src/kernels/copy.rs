//! A streaming copy (`common/copy.wgsl`): the memory bandwidth the device achieves, the roofline decode speed is
//! measured against. It copies only when the step holds tokens (every plan binds the step uniform).

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan};
use crate::shader::Defines;

/// Records `dst = src` over `src`'s whole length (a multiple of 16 bytes, `dst` at least as long), with `wg`
/// invocations per workgroup (the bandwidth figure takes the best of several).
pub fn copy(gpu: &Gpu, plan: &mut Plan, src: &wgpu::Buffer, dst: &wgpu::Buffer, wg: u32) -> Result<()> {
    if !src.size().is_multiple_of(16) || dst.size() < src.size() {
        return Err(GpuError::shape("copy", format!("{} bytes into {} (multiples of 16)", src.size(), dst.size())));
    }
    let quads = (src.size() / 16) as u32;
    let defines = Defines::new().set("WG", wg);
    plan.dispatch(
        gpu,
        "common/copy.wgsl",
        &defines,
        &[quads],
        &[src.into(), dst.into()],
        Grid::Fixed(quads.div_ceil(wg)),
    )
}
