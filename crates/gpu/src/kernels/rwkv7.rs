//! RWKV-7's time mixer (`linear/rwkv7.wgsl`): the input preparation, the generalised delta rule twice (chunkwise
//! prefill: per-chunk products in parallel, then the state across chunks; recurrent decode) over one
//! `[heads, dk, dv]` state, and the group-normed, bonus-added, gated output. Reference: `reference::rwkv7` and the
//! reference model's RWKV-7 mixer.

use super::f32_word;
use super::gated_deltanet::{ChunkScratch, CHUNK};
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

const SHADER: &str = "linear/rwkv7.wgsl";

/// Head layout and the per-token buffer of one RWKV-7 layer.
pub struct Rwkv7<'a> {
    /// Heads.
    pub heads: usize,
    /// Key channels per head.
    pub dk: usize,
    /// Value channels per head.
    pub dv: usize,
    /// `[tokens, 5 heads dk + heads dv]` = `[r | w | k | a | b | v]` (see the shader's notes).
    pub x: &'a wgpu::Buffer,
}

impl Rwkv7<'_> {
    /// Floats per token of `x`.
    pub fn width(&self) -> usize {
        5 * self.heads * self.dk + self.heads * self.dv
    }

    fn defines(&self, gpu: &Gpu, plan: &Plan) -> Result<Defines> {
        plan.check_rows("rwkv7", "inputs", self.x, Rows::Tokens, self.width())?;
        if self.heads == 0 || self.dk == 0 || self.dk > 256 || self.dv == 0 || self.dv > 256 {
            return Err(GpuError::shape(
                "rwkv7",
                format!("{} heads, dk {}, dv {} (<= 256)", self.heads, self.dk, self.dv),
            ));
        }
        if self.dv as u32 > gpu.info.max_workgroup_invocations {
            return Err(GpuError::shape("rwkv7", format!("dv {} exceeds the workgroup size", self.dv)));
        }
        Ok(Defines::new().set("DK", self.dk).set("DV", self.dv))
    }

    /// Defines of the kernels that read key channels four at a time and values in column blocks, and the blocks
    /// per head.
    fn column_blocks(&self, gpu: &Gpu, plan: &Plan) -> Result<(Defines, usize)> {
        let (defines, cols) = super::column_blocks(self.defines(gpu, plan)?, self.dk, self.dv, true);
        Ok((defines.flag("COLUMN_BLOCKS", true), cols))
    }

    fn params(&self, eps: f32) -> [u32; 3] {
        [self.heads as u32, self.width() as u32, f32_word(eps)]
    }

    fn per_head(&self) -> Grid {
        Grid::Flat { rows: Rows::Tokens, per_row: self.heads as u32, per_group: 64 }
    }

    /// Turns the raw projections in `x` into the rule's inputs; `v_first` `[tokens, heads dv]` receives the values
    /// (layer 0) or, with `v_mix` (the value LoRA's logits), is what the values lerp towards.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        plan: &mut Plan,
        [k_k, k_a]: [&wgpu::Buffer; 2],
        v_first: &wgpu::Buffer,
        v_mix: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let defines = self.defines(gpu, plan)?.flag("PREPARE", true).flag("V_MIX", v_mix.is_some());
        plan.check_rows("rwkv7", "v_first", v_first, Rows::Tokens, self.heads * self.dv)?;
        let mut buffers = vec![self.x.into(), k_k.into(), k_a.into(), v_first.into()];
        if let Some(m) = v_mix {
            plan.check_rows("rwkv7", "value mix", m, Rows::Tokens, self.heads * self.dv)?;
            buffers.push(m.into());
        }
        plan.dispatch(gpu, SHADER, &defines, &self.params(0.0), &buffers, self.per_head())
    }

    /// The recurrence token by token into `out` `[tokens, heads dv]` (decode).
    pub fn recurrent(&self, gpu: &Gpu, plan: &mut Plan, state: &wgpu::Buffer, out: &wgpu::Buffer) -> Result<()> {
        let defines = self.column_blocks(gpu, plan)?.0.flag("RECURRENT", true);
        self.check_io(plan, state, out)?;
        let buffers = [self.x.into(), state.into(), out.into()];
        plan.dispatch(gpu, SHADER, &defines, &self.params(0.0), &buffers, Grid::Fixed(self.heads as u32))
    }

    /// The chunkwise form into `out` (prefill): per-chunk products in parallel, then the state across chunks, which
    /// solves each chunk's triangular system token by token.
    pub fn chunked(
        &self,
        gpu: &Gpu,
        plan: &mut Plan,
        state: &wgpu::Buffer,
        out: &wgpu::Buffer,
        s: &ChunkScratch,
    ) -> Result<()> {
        let (defines, cols) = self.column_blocks(gpu, plan)?;
        let defines = defines.flag("CHUNKED", true).set("G_BINDING", 3);
        self.check_io(plan, state, out)?;
        let need = (CHUNK * CHUNK) as u32 * 4;
        if need > gpu.info.max_workgroup_storage {
            return Err(GpuError::Limit(format!("chunkwise RWKV-7 needs {need} bytes of workgroup memory")));
        }
        let mut buffers = vec![self.x.into(), (&s.g).into(), (&s.u).into(), (&s.aqk).into(), out.into()];
        let grid = Grid::Chunks { chunk: CHUNK as u32, per_chunk: self.heads as u32 };
        let prep = super::token_tiles(gpu, defines.clone(), CHUNK as u32).flag("CHUNK_PREP", true);
        plan.dispatch(gpu, SHADER, &prep, &self.params(0.0), &buffers, grid)?;
        buffers.push(state.into());
        let grid = Grid::Fixed(self.heads as u32);
        let defines = super::token_tiles(gpu, defines, cols as u32).flag("CHUNK_STATE", true);
        plan.dispatch(gpu, SHADER, &defines, &self.params(0.0), &buffers, grid)
    }

    /// `out = (group_norm(out) + sum(r k r_k) v) * gate` per head; the norm's weight and bias span all values.
    pub fn finish(
        &self,
        gpu: &Gpu,
        plan: &mut Plan,
        out: &wgpu::Buffer,
        gate: &wgpu::Buffer,
        [norm_w, norm_b, r_k]: [&wgpu::Buffer; 3],
        eps: f32,
    ) -> Result<()> {
        let defines = self.defines(gpu, plan)?.flag("FINISH", true);
        plan.check_rows("rwkv7", "output gate", gate, Rows::Tokens, self.heads * self.dv)?;
        let buffers = [self.x.into(), out.into(), gate.into(), norm_w.into(), norm_b.into(), r_k.into()];
        plan.dispatch(gpu, SHADER, &defines, &self.params(eps), &buffers, self.per_head())
    }

    fn check_io(&self, plan: &Plan, state: &wgpu::Buffer, out: &wgpu::Buffer) -> Result<()> {
        plan.check_rows("rwkv7", "output", out, Rows::Tokens, self.heads * self.dv)?;
        let need = (self.heads * self.dk * self.dv * 4) as u64;
        if state.size() < need {
            return Err(GpuError::shape("rwkv7", format!("state of {} bytes, {need} needed", state.size())));
        }
        Ok(())
    }
}
