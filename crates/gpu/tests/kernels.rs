//! Every kernel against its CPU reference on random inputs at awkward sizes (not tile multiples, T=1, T=150,
//! head_dim 16/64/128), on whatever adapter the machine has (lavapipe in CI).

use half::{bf16, f16};
use std::sync::OnceLock;
use ternlight_core::dtype::{decode_f32, DType};
use ternlight_core::reference;
use ternlight_core::sampling::Rng;
use ternlight_core::spec::{Activation, AttentionMask, Future, RopeScaling, RopeSpec};
use ternlight_gpu::buffer::Weight;
use ternlight_gpu::kernels::attention::{self, Attention, DecodeSpread, PrefillShape};
use ternlight_gpu::kernels::conv::ShortConv;
use ternlight_gpu::kernels::matmul::{linear, Epilogue, InputNorm, Linear, MatmulShape};
use ternlight_gpu::kernels::norm::{rms_norm, NormArgs, NormOutput};
use ternlight_gpu::kernels::{embedding, mlp, rope};
use ternlight_gpu::plan::{Plan, Rows, Step};
use ternlight_gpu::tune::TunedKernel;
use ternlight_gpu::Gpu;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new_blocking().expect("a GPU adapter (lavapipe: apt install mesa-vulkan-drivers)"))
}

/// A device of its own whose kernels share nothing across subgroups (as in browsers, which have none), so that the
/// paths without `subgroupBroadcast` run on lavapipe too.
fn gpu_without_broadcast() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let mut g = Gpu::new_blocking().expect("a GPU adapter (lavapipe: apt install mesa-vulkan-drivers)");
        g.tuning.broadcast = false;
        g
    })
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * scale).collect()
}

fn encode(dtype: DType, v: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
        _ => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
    }
}

fn run(plan: &Plan, step: &Step, out: &wgpu::Buffer, len: usize) -> Vec<f32> {
    run_on(gpu(), plan, step, out, len)
}

/// Submits `plan` (built on `g`) for `step` and reads back `len` floats of `out`.
fn run_on(g: &Gpu, plan: &Plan, step: &Step, out: &wgpu::Buffer, len: usize) -> Vec<f32> {
    plan.submit(g, step, &[], None);
    pollster::block_on(g.read_f32(out, 0, len)).unwrap()
}

fn tokens(pos0: usize, n: usize) -> Step {
    Step { pos0: pos0 as u32, n_tokens: n as u32, logit_rows: vec![] }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let d = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d <= tol * scale, "{what}: max abs diff {d} (scale {scale})");
}

#[test]
fn matmul_matches_reference_for_every_dtype_shape_and_epilogue() {
    let g = gpu();
    let mut rng = Rng::new(1);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // 104 inputs: CPU adapters' matrix-vector product gives each invocation 16 whole rows, 300 of them a part
        // of a workgroup. 37 x 48: lavapipe's tiles of 16 rows share their input quads by subgroup broadcast, the
        // last tile part-full, as are the last tiles of 70 columns.
        for (rows, k, n) in [(1, 17, 33), (150, 67, 45), (5, 64, 256), (63, 1, 7), (2, 104, 300), (37, 48, 70)] {
            for shape in [MatmulShape::Tiled, MatmulShape::Vector] {
                for (epilogue, bias) in [(Epilogue::Store, false), (Epilogue::Accumulate, true)] {
                    let x = random(&mut rng, rows * k, 1.0);
                    let raw = encode(dtype, &random(&mut rng, n * k, 0.5));
                    let wf = decode_f32(dtype, &raw).unwrap();
                    let b = random(&mut rng, n, 0.5);
                    let y0 = random(&mut rng, rows * n, 1.0);
                    let w = Weight::upload(g, "w", dtype, n, k, &raw, g.info.max_binding).unwrap();
                    let (xb, yb, bb) = (g.upload_f32("x", &x), g.upload_f32("y", &y0), g.upload_f32("b", &b));
                    let mut plan = Plan::new(g);
                    let l = Linear {
                        x: &xb,
                        w: &w,
                        bias: bias.then_some(&bb),
                        scale: if bias { 0.75 } else { 1.0 },
                        y: &yb,
                        y_offset: 0,
                        y_stride: 0,
                        rows: Rows::Tokens,
                        epilogue,
                        shape,
                        input_norm: None,
                        up: None,
                        stacked: &[],
                        stacked_outputs: &[],
                    };
                    linear(g, &mut plan, &l).unwrap();
                    let got = run(&plan, &tokens(0, rows), &yb, rows * n);
                    // The biased cases also scale x W^T (a muP multiplier) before adding the bias.
                    let mut want = reference::linear::linear(&x, &wf, None, k, n);
                    if bias {
                        for row in want.chunks_exact_mut(n) {
                            row.iter_mut().zip(&b).for_each(|(v, b)| *v = 0.75 * *v + b);
                        }
                    }
                    if epilogue == Epilogue::Accumulate {
                        want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
                    }
                    assert_close(&got, &want, 1e-5, &format!("{dtype} {rows}x{k}x{n} {shape:?} {epilogue:?}"));
                }
            }
        }
    }
}

#[test]
fn matvec_with_a_fused_input_norm_matches_the_norm_then_the_layer() {
    let g = gpu();
    let mut rng = Rng::new(42);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // 136 takes whole quads of words on CPU adapters' tuning; the others element-wise or word-wise loops.
        for (k, n, unit_offset, bias) in
            [(67, 45, false, false), (130, 7, true, true), (1, 3, false, true), (136, 9, true, false)]
        {
            let x = random(&mut rng, k, 3.0);
            let norm = random(&mut rng, k, 1.0);
            let raw = encode(dtype, &random(&mut rng, n * k, 0.5));
            let wf = decode_f32(dtype, &raw).unwrap();
            let b = random(&mut rng, n, 0.5);
            let y0 = random(&mut rng, n, 1.0);
            let w = Weight::upload(g, "w", dtype, n, k, &raw, g.info.max_binding).unwrap();
            let (xb, yb, bb, nb) =
                (g.upload_f32("x", &x), g.upload_f32("y", &y0), g.upload_f32("b", &b), g.upload_f32("n", &norm));
            let mut plan = Plan::new(g);
            let l = Linear {
                x: &xb,
                w: &w,
                bias: bias.then_some(&bb),
                scale: 0.5,
                y: &yb,
                y_offset: 0,
                y_stride: 0,
                rows: Rows::Tokens,
                epilogue: Epilogue::Accumulate,
                shape: MatmulShape::Vector,
                input_norm: Some(InputNorm { weight: &nb, eps: 1e-5, unit_offset }),
                up: None,
                stacked: &[],
                stacked_outputs: &[],
            };
            linear(g, &mut plan, &l).unwrap();
            assert_eq!(plan.dispatch_count(), 1);
            let got = run(&plan, &tokens(0, 1), &yb, n);
            let normed = reference::norm::rms_norm(&x, &norm, k, 1e-5, unit_offset);
            let product = reference::linear::linear(&normed, &wf, None, k, n);
            let want: Vec<f32> = (0..n).map(|i| y0[i] + 0.5 * product[i] + if bias { b[i] } else { 0.0 }).collect();
            assert_close(&got, &want, 1e-5, &format!("{dtype} k{k} n{n} offset {unit_offset} bias {bias}"));
        }
    }
    let x = g.zeros("x", 8);
    let w = Weight::upload(g, "w", DType::F32, 2, 4, &[0; 32], g.info.max_binding).unwrap();
    let l = Linear {
        x: &x,
        w: &w,
        bias: None,
        scale: 1.0,
        y: &x,
        y_offset: 0,
        y_stride: 0,
        rows: Rows::Tokens,
        epilogue: Epilogue::Store,
        shape: MatmulShape::Tiled,
        input_norm: Some(InputNorm { weight: &x, eps: 1e-5, unit_offset: false }),
        up: None,
        stacked: &[],
        stacked_outputs: &[],
    };
    let refused = linear(g, &mut Plan::new(g), &l).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("matrix-vector"), "{refused}");
}

/// A gated MLP's gate and up products and activation in one dispatch, for both kernel shapes, every dtype, weights
/// split into row blocks, an output offset, and (decode) a folded input norm.
#[test]
fn gated_pair_layers_match_the_gated_reference() {
    let g = gpu();
    let mut rng = Rng::new(43);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (rows, k, n, act) in [
            (1, 67, 45, Activation::Silu),
            (1, 66, 13, Activation::Silu),
            (37, 19, 30, Activation::GeluTanh),
            (3, 8, 5, Activation::Relu2),
        ] {
            for shape in [MatmulShape::Tiled, MatmulShape::Vector] {
                let normed = shape == MatmulShape::Vector && rows == 1;
                let x = random(&mut rng, rows * k, 2.0);
                let norm = random(&mut rng, k, 1.0);
                let (raw_gate, raw_up) =
                    (encode(dtype, &random(&mut rng, n * k, 0.5)), encode(dtype, &random(&mut rng, n * k, 0.5)));
                let (gf, uf) = (decode_f32(dtype, &raw_gate).unwrap(), decode_f32(dtype, &raw_up).unwrap());
                // Blocks of 8 rows: several per matrix, the last one short.
                let limit = (8 * k * dtype.size()) as u64;
                let gate = Weight::upload(g, "gate", dtype, n, k, &raw_gate, limit).unwrap();
                let up = Weight::upload(g, "up", dtype, n, k, &raw_up, limit).unwrap();
                assert!(gate.blocks.len() > 1 || n <= 8);
                let (stride, offset) = (n + 3, 2);
                let (xb, nb, yb) = (g.upload_f32("x", &x), g.upload_f32("norm", &norm), g.zeros("y", rows * stride));
                let mut plan = Plan::new(g);
                let l = Linear {
                    x: &xb,
                    w: &gate,
                    bias: None,
                    scale: 0.8,
                    y: &yb,
                    y_offset: offset,
                    y_stride: stride,
                    rows: Rows::Tokens,
                    epilogue: Epilogue::Gated(act),
                    shape,
                    input_norm: normed.then_some(InputNorm { weight: &nb, eps: 1e-6, unit_offset: true }),
                    up: Some(&up),
                    stacked: &[],
                    stacked_outputs: &[],
                };
                linear(g, &mut plan, &l).unwrap();
                assert_eq!(plan.dispatch_count(), gate.blocks.len());
                let got = run(&plan, &tokens(0, rows), &yb, rows * stride);
                let input = if normed { reference::norm::rms_norm(&x, &norm, k, 1e-6, true) } else { x.clone() };
                let scaled = |w: &[f32]| -> Vec<f32> {
                    reference::linear::linear(&input, w, None, k, n).iter().map(|v| v * 0.8).collect()
                };
                let want = reference::mlp::gated(act, &scaled(&gf), &scaled(&uf));
                let cols: Vec<f32> = got.chunks_exact(stride).flat_map(|r| r[offset..offset + n].to_vec()).collect();
                assert_close(&cols, &want, 1e-5, &format!("{dtype} {rows}x{k}x{n} {shape:?} {act:?}"));
            }
        }
    }
}

/// Two or three projections of one input as one row-wise stack in one dispatch, outputs side by side, for both
/// kernel shapes and every dtype, with an offset, accumulation and (decode) a folded input norm.
#[test]
fn stacked_projections_match_their_separate_products() {
    let g = gpu();
    let mut rng = Rng::new(45);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // The last stack fits 8 whole rows per invocation on CPU adapters (16 would put row 64 mid-workgroup).
        let stacks =
            [(1, 67, vec![13, 7, 9]), (29, 18, vec![5, 22]), (3, 33, vec![1, 1, 3]), (2, 96, vec![64, 64, 131])];
        for (rows, k, parts) in stacks {
            for shape in [MatmulShape::Tiled, MatmulShape::Vector] {
                let normed = shape == MatmulShape::Vector;
                let x = random(&mut rng, rows * k, 2.0);
                let norm = random(&mut rng, k, 1.0);
                let raws: Vec<Vec<u8>> = parts.iter().map(|&n| encode(dtype, &random(&mut rng, n * k, 0.5))).collect();
                let weights: Vec<Weight> = raws
                    .iter()
                    .zip(&parts)
                    .map(|(raw, &n)| Weight::upload(g, "w", dtype, n, k, raw, g.info.max_binding).unwrap())
                    .collect();
                let n: usize = parts.iter().sum();
                let (stride, offset) = (n + 4, 3);
                let y0 = random(&mut rng, rows * stride, 1.0);
                let (xb, nb, yb) = (g.upload_f32("x", &x), g.upload_f32("norm", &norm), g.upload_f32("y", &y0));
                let rest: Vec<&Weight> = weights[1..].iter().collect();
                let mut plan = Plan::new(g);
                let l = Linear {
                    x: &xb,
                    w: &weights[0],
                    bias: None,
                    scale: 1.5,
                    y: &yb,
                    y_offset: offset,
                    y_stride: stride,
                    rows: Rows::Tokens,
                    epilogue: Epilogue::Accumulate,
                    shape,
                    input_norm: normed.then_some(InputNorm { weight: &nb, eps: 1e-6, unit_offset: false }),
                    up: None,
                    stacked: &rest,
                    stacked_outputs: &[],
                };
                linear(g, &mut plan, &l).unwrap();
                assert_eq!(plan.dispatch_count(), 1);
                let got = run(&plan, &tokens(0, rows), &yb, rows * stride);
                let input = if normed { reference::norm::rms_norm(&x, &norm, k, 1e-6, false) } else { x.clone() };
                let mut want = y0.clone();
                let mut col = offset;
                for (raw, &p) in raws.iter().zip(&parts) {
                    let product = reference::linear::linear(&input, &decode_f32(dtype, raw).unwrap(), None, k, p);
                    for (r, row) in product.chunks_exact(p).enumerate() {
                        row.iter().enumerate().for_each(|(j, v)| want[r * stride + col + j] += 1.5 * v);
                    }
                    col += p;
                }
                assert_close(&got, &want, 1e-5, &format!("{dtype} {rows}x{k} stack {parts:?} {shape:?}"));
                // Each matrix's products in an output of its own (q, k and v of one layer).
                let outs: Vec<wgpu::Buffer> = parts.iter().map(|&p| g.zeros("y", rows * p)).collect();
                let rest_outs: Vec<&wgpu::Buffer> = outs[1..].iter().collect();
                let separate = Linear {
                    y: &outs[0],
                    y_offset: 0,
                    y_stride: 0,
                    epilogue: Epilogue::Store,
                    stacked_outputs: &rest_outs,
                    ..l
                };
                let mut plan = Plan::new(g);
                linear(g, &mut plan, &separate).unwrap();
                assert_eq!(plan.dispatch_count(), 1);
                plan.submit(g, &tokens(0, rows), &[], None);
                let mut col = offset;
                for (&p, out) in parts.iter().zip(&outs) {
                    let got = pollster::block_on(g.read_f32(out, 0, rows * p)).unwrap();
                    let want: Vec<f32> = (0..rows * p)
                        .map(|i| want[(i / p) * stride + col + i % p] - y0[(i / p) * stride + col + i % p])
                        .collect();
                    assert_close(&got, &want, 1e-5, &format!("{dtype} {rows}x{k} stack {parts:?} {shape:?} separate"));
                    col += p;
                }
            }
        }
    }
}

/// Every size `tune` may pick computes the plain, stacked and gated products right (on a device of its own, whose
/// tuning the test sets).
#[test]
fn every_tuning_candidate_computes_the_same_products() {
    let mut g = Gpu::new_blocking().unwrap();
    // k = 37 takes the element-by-element loop; 36 and 40 take whole words, 40 also four words a step, 48 eight.
    for k in [37, 36, 40, 48] {
        tuning_candidates_compute_the_same_products(&mut g, k);
    }
    let base = g.tuning.clone();
    for (kernel, tuning) in ternlight_gpu::tune::candidates(&base, g.info.packed_dot) {
        if kernel == TunedKernel::TernaryMatvec {
            g.tuning = tuning.clone();
            stacked_and_gated_ternary_products(&g, &format!("{tuning:?}"));
        }
    }
}

/// [`every_tuning_candidate_computes_the_same_products`] at input width `k`. The matrix-vector candidates read the
/// input through a fused RMSNorm (Gemma's `1 + w` form), as decode's first projections of a block do.
fn tuning_candidates_compute_the_same_products(g: &mut Gpu, k: usize) {
    let mut rng = Rng::new(46);
    // The stack's second matrix starts on a workgroup's first row where a workgroup has 8 or 16 outputs, so the
    // row-per-invocation kernel takes it there, and ends part-way through a workgroup.
    let (rows, parts) = (5, [16, 11]);
    let x = random(&mut rng, rows * k, 1.0);
    let norm = random(&mut rng, k, 1.0);
    let raws: Vec<Vec<u8>> = parts.iter().map(|&n| encode(DType::BF16, &random(&mut rng, n * k, 0.5))).collect();
    let w: Vec<Vec<f32>> = raws.iter().map(|r| decode_f32(DType::BF16, r).unwrap()).collect();
    let gate = encode(DType::BF16, &random(&mut rng, 16 * k, 0.5));
    let gate_f = decode_f32(DType::BF16, &gate).unwrap();
    // (stacked, gated) products of the layer input `input`.
    let wants = |input: &[f32]| {
        let (a, b) = (
            reference::linear::linear(input, &w[0], None, k, 16),
            reference::linear::linear(input, &w[1], None, k, 11),
        );
        let stacked: Vec<f32> = a.chunks_exact(16).zip(b.chunks_exact(11)).flat_map(|(a, b)| [a, b].concat()).collect();
        let gate_product = reference::linear::linear(input, &gate_f, None, k, 16);
        (stacked, reference::mlp::gated(Activation::Silu, &gate_product, &a))
    };
    let plain = wants(&x);
    let normed = wants(&reference::norm::rms_norm(&x, &norm, k, 1e-5, true));
    for (kernel, tuning) in ternlight_gpu::tune::candidates(&g.tuning.clone(), g.info.packed_dot) {
        let shape = match kernel {
            TunedKernel::Matvec => MatmulShape::Vector,
            TunedKernel::Matmul => MatmulShape::Tiled,
            TunedKernel::TernaryMatvec | TunedKernel::DecodeAttention | TunedKernel::SplitFrom => continue,
        };
        g.tuning = tuning.clone();
        let g = &g;
        let upload = |name, raw: &[u8], n| Weight::upload(g, name, DType::BF16, n, k, raw, g.info.max_binding).unwrap();
        let (first, second, gate_w) =
            (upload("w", &raws[0], 16), upload("w2", &raws[1], 11), upload("gate", &gate, 16));
        let (xb, nb) = (g.upload_f32("x", &x), g.upload_f32("norm", &norm));
        let vector = shape == MatmulShape::Vector;
        for gated in [false, true] {
            let n = if gated { 16 } else { 27 };
            let yb = g.zeros("y", rows * n);
            let rest = [&second];
            let mut plan = Plan::new(g);
            let l = Linear {
                x: &xb,
                w: if gated { &gate_w } else { &first },
                bias: None,
                scale: 1.0,
                y: &yb,
                y_offset: 0,
                y_stride: 0,
                rows: Rows::Tokens,
                epilogue: if gated { Epilogue::Gated(Activation::Silu) } else { Epilogue::Store },
                shape,
                input_norm: vector.then_some(InputNorm { weight: &nb, eps: 1e-5, unit_offset: true }),
                up: gated.then_some(&first),
                stacked: if gated { &[] } else { &rest },
                stacked_outputs: &[],
            };
            linear(g, &mut plan, &l).unwrap();
            plan.submit(g, &tokens(0, rows), &[], None);
            let got = pollster::block_on(g.read_f32(&yb, 0, rows * n)).unwrap();
            let (stacked_want, gated_want) = if vector { &normed } else { &plain };
            let want = if gated { gated_want } else { stacked_want };
            assert_close(&got, want, 1e-5, &format!("k {k} {tuning:?} {shape:?} gated {gated}"));
            if !gated {
                // The same stack with each matrix's products in an output of its own.
                let (y1, y2) = (g.zeros("y1", rows * 16), g.zeros("y2", rows * 11));
                let mut plan = Plan::new(g);
                linear(g, &mut plan, &Linear { y: &y1, stacked_outputs: &[&y2], ..l }).unwrap();
                plan.submit(g, &tokens(0, rows), &[], None);
                let mut got = pollster::block_on(g.read_f32(&y1, 0, rows * 16)).unwrap();
                got.extend(pollster::block_on(g.read_f32(&y2, 0, rows * 11)).unwrap());
                let (a, b): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
                    want.chunks_exact(27).map(|r| (r[..16].to_vec(), r[16..].to_vec())).unzip();
                let separate: Vec<f32> = a.concat().into_iter().chain(b.concat()).collect();
                assert_close(&got, &separate, 1e-5, &format!("k {k} {tuning:?} {shape:?} separate outputs"));
            }
        }
    }
}

#[test]
fn weights_beyond_the_binding_limit_are_split_into_row_blocks() {
    let g = gpu();
    let mut rng = Rng::new(2);
    let (rows, k, n) = (3, 13, 41);
    for dtype in [DType::BF16, DType::F32] {
        let raw = encode(dtype, &random(&mut rng, n * k, 0.5));
        let wf = decode_f32(dtype, &raw).unwrap();
        let limit = (7 * k * dtype.size()) as u64;
        let w = Weight::upload(g, "w", dtype, n, k, &raw, limit).unwrap();
        assert!(w.blocks.len() >= 6, "{} blocks", w.blocks.len());
        assert!(w.blocks.iter().all(|b| b.buffer.size() <= limit.div_ceil(4) * 4));
        let x = random(&mut rng, rows * k, 1.0);
        let xb = g.upload_f32("x", &x);
        for shape in [MatmulShape::Tiled, MatmulShape::Vector] {
            let mut plan = Plan::new(g);
            // Write the columns 3..3+n of rows of width n+5, with a bias, to exercise offsets and per-block bias.
            let (stride, off) = (n + 5, 3);
            let b = random(&mut rng, n, 0.5);
            let (bb, yw) = (g.upload_f32("b", &b), g.zeros("yw", rows * stride));
            let l = Linear { bias: Some(&bb), y_offset: off, y_stride: stride, ..Linear::new(&xb, &w, &yw, shape) };
            linear(g, &mut plan, &l).unwrap();
            let got = run(&plan, &tokens(0, rows), &yw, rows * stride);
            let want = reference::linear::linear(&x, &wf, Some(&b), k, n);
            let cols: Vec<f32> = got.chunks_exact(stride).flat_map(|r| r[off..off + n].to_vec()).collect();
            assert_close(&cols, &want, 1e-5, "split matmul into offset columns");
            assert!(got.chunks_exact(stride).all(|r| r[..off].iter().chain(&r[off + n..]).all(|&v| v == 0.0)));
        }

        let ids: Vec<u32> = (0..9).map(|i| (i * 17 % n) as u32).collect();
        let idb = g.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 36,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        g.queue.write_buffer(&idb, 0, bytemuck::cast_slice(&ids));
        let out = g.zeros("emb", ids.len() * k);
        let mut plan = Plan::new(g);
        embedding::embedding(g, &mut plan, &w, &idb, &out, 1.5).unwrap();
        let got = run(&plan, &tokens(0, ids.len()), &out, ids.len() * k);
        assert_close(&got, &reference::embedding::embedding(&wf, k, &ids, 1.5), 1e-6, "split embedding");
    }
    let e = Weight::upload(g, "huge", DType::F32, 2, 100, &[0; 800], 64).err().unwrap();
    assert!(e.to_string().contains("huge"), "{e}");
}

#[test]
fn rms_norm_matches_reference_in_every_output_mode() {
    let g = gpu();
    let mut rng = Rng::new(3);
    for (dim, groups, rows) in [(19, 3, 150), (64, 1, 1), (130, 2, 7)] {
        for unit_offset in [false, true] {
            let x = random(&mut rng, rows * groups * dim, 2.0);
            let w = random(&mut rng, dim, 1.0);
            let res = random(&mut rng, rows * groups * dim, 1.0);
            let want = reference::norm::rms_norm(&x, &w, dim, 1e-6, unit_offset);
            let wb = g.upload_f32("w", &w);
            let args = NormArgs {
                weight: &wb,
                dim,
                groups_per_row: groups,
                rows: Rows::Tokens,
                eps: 1e-6,
                unit_offset,
                row_stride: 0,
                centered: false,
                bias: None,
            };
            let step = tokens(0, rows);

            let xb = g.upload_f32("x", &x);
            let mut plan = Plan::new(g);
            rms_norm(g, &mut plan, &args, &xb, NormOutput::InPlace).unwrap();
            assert_close(&run(&plan, &step, &xb, x.len()), &want, 1e-5, "in place");

            let (xb, out) = (g.upload_f32("x", &x), g.upload_f32("r", &res));
            let mut plan = Plan::new(g);
            rms_norm(g, &mut plan, &args, &xb, NormOutput::Residual(&out)).unwrap();
            let sum: Vec<f32> = want.iter().zip(&res).map(|(a, b)| a + b).collect();
            assert_close(&run(&plan, &step, &out, x.len()), &sum, 1e-5, "residual");

            let gate = random(&mut rng, x.len(), 3.0);
            let (xb, gb) = (g.upload_f32("x", &x), g.upload_f32("gate", &gate));
            let mut plan = Plan::new(g);
            ternlight_gpu::kernels::norm::rms_norm_gated(
                g,
                &mut plan,
                &args,
                &xb,
                NormOutput::InPlace,
                Some((&gb, Activation::Silu)),
            )
            .unwrap();
            if !unit_offset {
                let want = reference::norm::rms_norm_gated(&x, &gate, &w, dim, 1e-6);
                assert_close(&run(&plan, &step, &xb, x.len()), &want, 1e-5, "gated");
            }
        }
    }
}

/// A norm over the leading `dim` values of longer rows (MLA's latent ahead of its key tail) leaves the rest alone.
#[test]
fn rms_norm_over_part_of_each_row() {
    let g = gpu();
    let mut rng = Rng::new(16);
    let (rows, dim, stride) = (5, 19, 26);
    let x = random(&mut rng, rows * stride, 2.0);
    let w = random(&mut rng, dim, 1.0);
    let mut want = x.clone();
    for r in 0..rows {
        let normed = reference::norm::rms_norm(&x[r * stride..][..dim], &w, dim, 1e-5, false);
        want[r * stride..][..dim].copy_from_slice(&normed);
    }
    let (xb, wb) = (g.upload_f32("x", &x), g.upload_f32("w", &w));
    let args = NormArgs {
        weight: &wb,
        dim,
        groups_per_row: 1,
        rows: Rows::Tokens,
        eps: 1e-5,
        unit_offset: false,
        row_stride: stride,
        centered: false,
        bias: None,
    };
    let mut plan = Plan::new(g);
    rms_norm(g, &mut plan, &args, &xb, NormOutput::InPlace).unwrap();
    assert_close(&run(&plan, &tokens(0, rows), &xb, x.len()), &want, 1e-5, "strided rows");
}

#[test]
fn layer_norm_matches_reference_with_and_without_bias() {
    let g = gpu();
    let mut rng = Rng::new(17);
    for (dim, groups, rows, biased) in [(19, 3, 150, true), (64, 1, 1, false), (130, 2, 7, true)] {
        // An offset mean, so centring matters.
        let x: Vec<f32> = random(&mut rng, rows * groups * dim, 2.0).iter().map(|v| v + 3.0).collect();
        let (w, b) = (random(&mut rng, dim, 1.0), random(&mut rng, dim, 1.0));
        let bias = biased.then_some(b.as_slice());
        let mut want = Vec::new();
        for row in x.chunks_exact(dim) {
            want.extend(reference::norm::layer_norm(row, &w, bias, dim, 1e-5));
        }
        let (xb, wb, bb) = (g.upload_f32("x", &x), g.upload_f32("w", &w), g.upload_f32("b", &b));
        let args = NormArgs {
            weight: &wb,
            dim,
            groups_per_row: groups,
            rows: Rows::Tokens,
            eps: 1e-5,
            unit_offset: false,
            row_stride: 0,
            centered: true,
            bias: biased.then_some(&bb),
        };
        let mut plan = Plan::new(g);
        rms_norm(g, &mut plan, &args, &xb, NormOutput::InPlace).unwrap();
        assert_close(&run(&plan, &tokens(0, rows), &xb, x.len()), &want, 1e-5, &format!("layer norm {dim}x{groups}"));
    }
}

#[test]
fn rope_matches_reference_with_full_and_partial_rotation() {
    let g = gpu();
    let mut rng = Rng::new(4);
    for (heads, head_dim, rotary_dim, pos0, t) in [(3, 16, 16, 5, 150), (2, 64, 16, 0, 1), (4, 128, 128, 99, 3)] {
        let spec = RopeSpec { theta: 10000.0, rotary_dim, scaling: RopeScaling::None };
        let tables = rope::RopeTables::new(g, &spec, 200);
        let (cos, sin) = spec.tables(200);
        let mut x = random(&mut rng, t * heads * head_dim, 1.0);
        let xb = g.upload_f32("x", &x);
        let mut plan = Plan::new(g);
        rope::rope(g, &mut plan, &[(&xb, heads)], head_dim, &tables).unwrap();
        let got = run(&plan, &tokens(pos0, t), &xb, x.len());
        reference::rope::rope(&mut x, heads, head_dim, rotary_dim, pos0, &cos, &sin);
        assert_close(&got, &x, 1e-6, &format!("rope h{heads} d{head_dim} r{rotary_dim}"));
    }
}

#[test]
fn rope_rotates_queries_and_keys_in_one_dispatch() {
    let g = gpu();
    let mut rng = Rng::new(41);
    for (q_heads, k_heads, head_dim, rotary_dim, pos0, t) in [(6, 2, 16, 10, 7, 37), (5, 5, 12, 12, 0, 1)] {
        let spec = RopeSpec { theta: 10000.0, rotary_dim, scaling: RopeScaling::None };
        let tables = rope::RopeTables::new(g, &spec, 100);
        let (cos, sin) = spec.tables(100);
        let mut q = random(&mut rng, t * q_heads * head_dim, 1.0);
        let mut k = random(&mut rng, t * k_heads * head_dim, 1.0);
        let (qb, kb) = (g.upload_f32("q", &q), g.upload_f32("k", &k));
        let mut plan = Plan::new(g);
        rope::rope(g, &mut plan, &[(&qb, q_heads), (&kb, k_heads)], head_dim, &tables).unwrap();
        assert_eq!(plan.dispatch_count(), 1);
        let got_q = run(&plan, &tokens(pos0, t), &qb, q.len());
        let got_k = pollster::block_on(g.read_f32(&kb, 0, k.len())).unwrap();
        reference::rope::rope(&mut q, q_heads, head_dim, rotary_dim, pos0, &cos, &sin);
        reference::rope::rope(&mut k, k_heads, head_dim, rotary_dim, pos0, &cos, &sin);
        assert_close(&got_q, &q, 1e-6, &format!("queries h{q_heads} d{head_dim} r{rotary_dim}"));
        assert_close(&got_k, &k, 1e-6, &format!("keys h{k_heads} d{head_dim} r{rotary_dim}"));
    }
}

#[test]
fn rope_with_head_norms_matches_the_norms_then_the_rotation() {
    let g = gpu();
    let mut rng = Rng::new(44);
    let cases = [(5, 3, 12, 12, 9, 1, true), (4, 4, 32, 8, 0, 3, false)];
    for (q_heads, k_heads, head_dim, rotary_dim, pos0, t, unit_offset) in cases {
        let spec = RopeSpec { theta: 10000.0, rotary_dim, scaling: RopeScaling::None };
        let tables = rope::RopeTables::new(g, &spec, 64);
        let (cos, sin) = spec.tables(64);
        let (q, k) = (random(&mut rng, t * q_heads * head_dim, 2.0), random(&mut rng, t * k_heads * head_dim, 2.0));
        let (qw, kw) = (random(&mut rng, head_dim, 1.0), random(&mut rng, head_dim, 1.0));
        let (qb, kb, qwb, kwb) =
            (g.upload_f32("q", &q), g.upload_f32("k", &k), g.upload_f32("qw", &qw), g.upload_f32("kw", &kw));
        let mut plan = Plan::new(g);
        let norms = rope::HeadNorms { q: &qwb, k: &kwb, eps: 1e-6, unit_offset };
        rope::rope_normed(g, &mut plan, [(&qb, q_heads), (&kb, k_heads)], head_dim, &tables, norms).unwrap();
        assert_eq!(plan.dispatch_count(), 1);
        let got_q = run(&plan, &tokens(pos0, t), &qb, q.len());
        let got_k = pollster::block_on(g.read_f32(&kb, 0, k.len())).unwrap();
        let mut want_q = reference::norm::rms_norm(&q, &qw, head_dim, 1e-6, unit_offset);
        let mut want_k = reference::norm::rms_norm(&k, &kw, head_dim, 1e-6, unit_offset);
        reference::rope::rope(&mut want_q, q_heads, head_dim, rotary_dim, pos0, &cos, &sin);
        reference::rope::rope(&mut want_k, k_heads, head_dim, rotary_dim, pos0, &cos, &sin);
        assert_close(&got_q, &want_q, 1e-5, &format!("normed queries h{q_heads} d{head_dim}"));
        assert_close(&got_k, &want_k, 1e-5, &format!("normed keys h{k_heads} d{head_dim}"));
    }
}

#[test]
fn gated_activations_match_reference() {
    let g = gpu();
    let mut rng = Rng::new(5);
    for act in [Activation::Silu, Activation::GeluTanh, Activation::Sigmoid, Activation::Identity] {
        let (t, width) = (150, 37);
        let gate = random(&mut rng, t * width, 6.0);
        let up = random(&mut rng, t * width, 1.0);
        let (gb, ub, ob) = (g.upload_f32("g", &gate), g.upload_f32("u", &up), g.zeros("o", t * width));
        let mut plan = Plan::new(g);
        mlp::gated_act(g, &mut plan, act, &gb, &ub, &ob, width).unwrap();
        assert_close(
            &run(&plan, &tokens(0, t), &ob, t * width),
            &reference::mlp::gated(act, &gate, &up),
            1e-5,
            &format!("{act:?}"),
        );
    }
}

/// One attention case: shapes, the forward's place in the context, the mask and the cache rows (a ring of the
/// window plus the forward after the sinks, or the whole context).
struct AttentionCase {
    heads: usize,
    kv: usize,
    d: usize,
    pos0: usize,
    t: usize,
    mask: AttentionMask,
    ring: Option<usize>,
    /// Rotate by cache position (StreamingLLM) with this many rotated channels.
    rotary: Option<usize>,
}

fn check_attention_case(g: &Gpu, rng: &mut Rng, c: &AttentionCase) {
    let (heads, kv, d, pos0, t) = (c.heads, c.kv, c.d, c.pos0, c.t);
    let ctx = pos0 + t;
    let q = random(rng, t * heads * d, 1.0);
    let k = random(rng, ctx * kv * d, 1.0);
    let v = random(rng, ctx * kv * d, 1.0);
    let scale = 1.0 / (d as f32).sqrt();
    let rope_spec = c.rotary.map(|rotary_dim| RopeSpec { theta: 10000.0, rotary_dim, scaling: RopeScaling::None });
    let host_tables = rope_spec.as_ref().map(|r| (r.tables(ctx), r.rotary_dim));
    let rotation = host_tables.as_ref().map(|((cos, sin), rotary_dim)| reference::attention::Rotation {
        cos,
        sin,
        rotary_dim: *rotary_dim,
    });
    let want = reference::attention::attention_qk_v(&q, &k, &v, (heads, kv), (d, d), pos0, &c.mask, scale, rotation);
    // Rows 0..sinks hold the first positions and the other rows cycle, as appending every position would leave them.
    let (rows, sinks) = (c.ring.unwrap_or(ctx), c.mask.sinks);
    let as_ring = |full: &[f32]| {
        let mut r = vec![0.0; rows * kv * d];
        for j in (0..sinks.min(ctx)).chain(ctx.saturating_sub(rows - sinks).max(sinks)..ctx) {
            let row = if j < sinks { j } else { sinks + (j - sinks) % (rows - sinks) };
            r[row * kv * d..][..kv * d].copy_from_slice(&full[j * kv * d..][..kv * d]);
        }
        r
    };
    let (qb, kb, vb, ob) = (
        g.upload_f32("q", &q),
        g.upload_f32("k", &as_ring(&k)),
        g.upload_f32("v", &as_ring(&v)),
        g.zeros("o", q.len()),
    );
    let tables = rope_spec.as_ref().map(|r| rope::RopeTables::new(g, r, ctx));
    let a = Attention {
        rotation: tables.as_ref(),
        ..Attention::new((&qb, &ob), (&kb, &vb, rows), (heads, kv, d), &c.mask, scale)
    };
    let what =
        format!("h{heads}/{kv} d{d} pos0 {pos0} t{t} {} ring {:?} rotary {:?}", c.mask.describe(), c.ring, c.rotary);
    for shape in prefill_shapes(g) {
        let mut plan = Plan::new(g);
        attention::prefill_with(g, &mut plan, &a, shape).unwrap();
        let got = run(&plan, &tokens(pos0, t), &ob, q.len());
        let heads = shape.heads_for(&a);
        assert_close(&got, &want, 1e-5, &format!("prefill {shape:?} ({heads} heads per invocation) {what}"));
    }
    check_decode(g, &a, (pos0, t, ctx), &want, &format!("decode {what}"));
    // Gated attention: the output times the sigmoid of a gate laid out like it.
    let gate = random(rng, want.len(), 3.0);
    let gated: Vec<f32> = want.iter().zip(&gate).map(|(o, z)| o / (1.0 + (-z).exp())).collect();
    let gb = g.upload_f32("gate", &gate);
    let a = Attention { output_gate: Some(&gb), ..a };
    for shape in prefill_shapes(g) {
        let mut plan = Plan::new(g);
        attention::prefill_with(g, &mut plan, &a, shape).unwrap();
        let got = run(&plan, &tokens(pos0, t), &ob, q.len());
        assert_close(&got, &gated, 1e-5, &format!("gated prefill {shape:?} {what}"));
    }
    check_decode(g, &a, (pos0, t, ctx), &gated, &format!("gated decode {what}"));
}

/// The prefill shapes every attention case runs through: the device's, one head per streaming invocation, two and
/// up to eight heads per invocation, and staged K/V tiles of 16 and 64 keys.
fn prefill_shapes(g: &Gpu) -> [PrefillShape; 6] {
    let shape = |kv_tile, heads| PrefillShape { kv_tile, heads };
    [PrefillShape::of(g), PrefillShape::STREAMING, shape(0, 2), shape(0, 8), shape(16, 1), shape(64, 1)]
}

/// Runs `a` (with its output redirected to a fresh buffer) through the decode kernel and compares with `want`: with
/// the device's tuning, and with each (token, head) over several workgroups (flash-decoding), in workgroups of 8
/// (CPU adapters' size) and 64 (GPUs'), where value units shared by fewer invocations than a workgroup add up
/// several keys at once.
fn check_decode(g: &Gpu, a: &Attention, (pos0, t, ctx): (usize, usize, usize), want: &[f32], what: &str) {
    let out = g.zeros("decode out", want.len());
    let a = Attention { out: &out, ..*a };
    let spread = |wg, splits, heads| DecodeSpread { wg, splits, heads };
    for spread in [DecodeSpread::of(g), spread(8, 7, 1), spread(8, 7, 2), spread(64, 1, 8), spread(64, 32, 3)] {
        let scores = g.zeros("scores", t * a.n_heads * spread.scratch_row(a.v_dim, ctx));
        let mut plan = Plan::new(g);
        attention::decode_with(g, &mut plan, &a, &scores, ctx, spread).unwrap();
        let splits = spread.splits_for(ctx);
        let got = run(&plan, &tokens(pos0, t), &out, want.len());
        assert_close(&got, want, 1e-5, &format!("{what} {spread:?} ({splits} splits)"));
    }
}

#[test]
fn attention_kernels_match_reference_with_gqa_windows_and_a_filled_cache() {
    let g = gpu();
    let mut rng = Rng::new(6);
    let cases = [
        // (heads, kv_heads, head_dim, pos0, tokens, window, ring rows: the window plus the forward's tokens)
        (4, 2, 16, 0, 150, None, None),
        (4, 2, 16, 0, 150, Some(7), None),
        (6, 3, 64, 20, 33, Some(16), None),
        (2, 1, 128, 0, 1, None, None),
        (4, 4, 64, 149, 1, None, None),
        (8, 2, 128, 70, 1, Some(5), None),
        (4, 2, 16, 100, 5, Some(16), Some(21)),
        (6, 3, 64, 90, 33, Some(16), Some(49)),
        (8, 2, 128, 200, 1, Some(5), Some(6)),
        // Groups of three and six query heads per KV head (SmolLM2's 9 over 3), shared by streaming invocations.
        (9, 3, 64, 5, 21, None, None),
        (12, 2, 32, 40, 17, Some(9), None),
        // Qwen3.5's 256-wide heads, one per streaming invocation; on lavapipe each key and value loaded once per
        // subgroup of consecutive queries, the last subgroup part-full.
        (4, 2, 256, 6, 13, None, None),
        // Heads wider than the unrolled loops' 256 channels.
        (2, 1, 320, 3, 9, None, None),
        (2, 1, 320, 11, 1, Some(6), None),
    ];
    for (heads, kv, d, pos0, t, window, ring) in cases {
        let mask = AttentionMask::causal(window);
        check_attention_case(g, &mut rng, &AttentionCase { heads, kv, d, pos0, t, mask, ring, rotary: None });
    }
}

/// The composable mask pieces at awkward sizes: sinks beside a window (pinned rows before a ring), prefix-LM,
/// bidirectional, Dual Triangle, and StreamingLLM rotation by cache position (full and partial rotary).
#[test]
fn attention_masks_compose_and_match_reference() {
    let g = gpu();
    let mut rng = Rng::new(61);
    let sinks = |window, sinks| AttentionMask { window: Some(window), sinks, ..Default::default() };
    let future = |future| AttentionMask { future, ..Default::default() };
    let case = |heads, kv, d, pos0, t, mask, ring, rotary| AttentionCase { heads, kv, d, pos0, t, mask, ring, rotary };
    let cases = [
        case(4, 2, 16, 0, 37, sinks(7, 3), None, None),
        case(4, 2, 16, 90, 13, sinks(9, 4), Some(4 + 9 + 13), None),
        case(6, 3, 24, 113, 1, sinks(10, 2), Some(2 + 10 + 1), None),
        case(3, 1, 20, 0, 45, future(Future::Prefix(11)), None, None),
        case(3, 1, 20, 30, 9, future(Future::Prefix(35)), None, None),
        case(4, 2, 16, 0, 29, future(Future::Bidirectional), None, None),
        case(4, 2, 16, 17, 23, AttentionMask { window: Some(6), ..future(Future::Bidirectional) }, None, None),
        case(2, 2, 18, 0, 31, AttentionMask { dual_triangle: true, ..future(Future::Bidirectional) }, None, None),
        case(2, 1, 18, 12, 1, AttentionMask { dual_triangle: true, ..Default::default() }, None, None),
        case(4, 2, 16, 0, 41, sinks(8, 4), None, Some(16)),
        case(4, 2, 24, 77, 19, sinks(11, 3), Some(3 + 11 + 19), Some(16)),
        case(4, 1, 32, 140, 1, sinks(13, 4), Some(4 + 13 + 1), Some(32)),
    ];
    for c in &cases {
        check_attention_case(g, &mut rng, c);
    }
}

#[test]
fn unsupported_shapes_are_refused_before_dispatch() {
    let g = gpu();
    let b = g.zeros("b", 16);
    let causal = AttentionMask::default();
    let a = Attention::new((&b, &b), (&b, &b, 1), (3, 2, 16), &causal, 1.0);
    let e = attention::prefill(g, &mut Plan::new(g), &a).unwrap_err();
    assert!(e.to_string().contains("kv heads"), "{e}");
    let a = Attention { n_heads: 2, v_dim: 24, ..a };
    assert!(attention::decode(g, &mut Plan::new(g), &a, &b, 4).unwrap_err().to_string().contains("v_dim 24"));
}

/// MLA's absorbed form: one shared key head of `[latent | key tail]`, values = the latent (the key rows' first
/// channels), read from the same cache.
#[test]
fn latent_attention_reads_values_from_the_key_rows() {
    let g = gpu();
    let mut rng = Rng::new(15);
    let (heads, rank, tail) = (3, 20, 7);
    let d = rank + tail;
    for (pos0, t) in [(0, 37), (37, 1)] {
        let ctx = pos0 + t;
        let q = random(&mut rng, t * heads * d, 1.0);
        let k = random(&mut rng, ctx * d, 1.0);
        let v: Vec<f32> = k.chunks_exact(d).flat_map(|row| row[..rank].to_vec()).collect();
        let scale = 0.3;
        let want = reference::attention::attention_qk_v(
            &q,
            &k,
            &v,
            (heads, 1),
            (d, rank),
            pos0,
            &AttentionMask::default(),
            scale,
            None,
        );
        let (qb, kb, ob) = (g.upload_f32("q", &q), g.upload_f32("k", &k), g.zeros("o", t * heads * rank));
        let causal = AttentionMask::default();
        let a = Attention { v_dim: rank, ..Attention::new((&qb, &ob), (&kb, &kb, ctx), (heads, 1, d), &causal, scale) };
        for shape in prefill_shapes(g) {
            let mut plan = Plan::new(g);
            attention::prefill_with(g, &mut plan, &a, shape).unwrap();
            let got = run(&plan, &tokens(pos0, t), &ob, want.len());
            assert_close(&got, &want, 1e-5, &format!("latent prefill {shape:?} t{t}"));
        }
        check_decode(g, &a, (pos0, t, ctx), &want, &format!("latent decode t{t}"));
    }
}

#[test]
fn gpu_errors_become_results_not_panics() {
    let g = Gpu::new_blocking().unwrap();
    g.check_errors("nothing yet").unwrap();
    let too_big = g.info.max_buffer.saturating_add(4);
    let _ = g.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("too big"),
        size: too_big,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let e = g.check_errors("allocating").unwrap_err().to_string();
    assert!(e.contains("allocating"), "{e}");
    g.check_errors("after").unwrap();
}

#[test]
fn short_conv_matches_reference_and_carries_its_state() {
    let g = gpu();
    let mut rng = Rng::new(7);
    // 37 channels one per invocation; 44 and 20 in quads over blocks of 8 tokens (11 quads: a part-full workgroup).
    for (channels, kernel) in [(37, 4), (44, 4), (20, 3)] {
        let w = random(&mut rng, channels * kernel, 1.0);
        let state0 = random(&mut rng, channels * (kernel - 1), 1.0);
        let bias = random(&mut rng, channels, 1.0);
        let (wb, sb, bb) = (g.upload_f32("w", &w), g.upload_f32("state", &state0), g.upload_f32("bias", &bias));
        let mut ref_state = state0.clone();
        let cases = [(1, true, false), (2, false, true), (150, true, true), (1, false, false), (3, true, true)];
        for ((t, silu, biased), sequential) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
            let x = random(&mut rng, t * channels, 2.0);
            let (xb, yb) = (g.upload_f32("x", &x), g.zeros("y", t * channels));
            let mut plan = Plan::new(g);
            let bias_b = biased.then_some(&bb);
            let call = ShortConv {
                x: &xb,
                weight: &wb,
                bias: bias_b,
                state: &sb,
                state_offset: 0,
                y: &yb,
                channels,
                kernel,
                silu,
                advance: true,
                sequential,
            };
            ternlight_gpu::kernels::conv::short_conv(g, &mut plan, &call).unwrap();
            assert_eq!(plan.dispatch_count(), if sequential { 1 } else { 2 });
            let got = run(&plan, &tokens(0, t), &yb, t * channels);
            let bias_r = biased.then_some(&bias[..]);
            let want = reference::conv::short_conv(&x, (&w, bias_r), &mut ref_state, channels, kernel, silu);
            let what = format!("conv {channels}x{kernel} T={t} sequential {sequential}");
            assert_close(&got, &want, 1e-5, &what);
            let state = pollster::block_on(g.read_f32(&sb, 0, ref_state.len())).unwrap();
            assert_close(&state, &ref_state, 0.0, &format!("{what}: state"));
        }
    }
}

mod gdn {
    use super::*;
    use ternlight_core::reference::gated_delta::{self, Dims};
    use ternlight_gpu::kernels::gated_deltanet::{self as kernel, ChunkScratch, DeltaNet};

    struct Case {
        d: Dims,
        qkv: Vec<f32>,
        ab: Vec<f32>,
        params: Vec<f32>,
        /// beta's multiplier: 2 exercises negative eigenvalues (OLMo hybrid, fla `allow_neg_eigval`).
        beta_scale: f32,
    }

    fn case(rng: &mut Rng, d: Dims, t: usize) -> Case {
        let width = 2 * d.n_k_heads * d.dk + d.n_v_heads * d.dv;
        let params = [random(rng, d.n_v_heads, 1.0), random(rng, d.n_v_heads, 1.0)].concat();
        let beta_scale = if d.n_v_heads == d.n_k_heads { 2.0 } else { 1.0 };
        Case { d, qkv: random(rng, t * width, 1.0), ab: random(rng, t * 2 * d.n_v_heads, 2.0), params, beta_scale }
    }

    /// Reference output for `c`, advancing `state`.
    fn reference_run(c: &Case, state: &mut [f32]) -> Vec<f32> {
        let d = &c.d;
        let (hv, key) = (d.n_v_heads, d.n_k_heads * d.dk);
        let width = 2 * key + hv * d.dv;
        let cols = |off: usize, w: usize, stride: usize, x: &[f32]| -> Vec<f32> {
            x.chunks_exact(stride).flat_map(|r| r[off..off + w].to_vec()).collect()
        };
        let (q, k, v) =
            (cols(0, key, width, &c.qkv), cols(key, key, width, &c.qkv), cols(2 * key, hv * d.dv, width, &c.qkv));
        let (b, a) = (cols(0, hv, 2 * hv, &c.ab), cols(hv, hv, 2 * hv, &c.ab));
        let (g, beta) = gated_delta::gates(&a, &b, &c.params[..hv], &c.params[hv..]);
        let beta: Vec<f32> = beta.iter().map(|b| b * c.beta_scale).collect();
        gated_delta::recurrent(&q, &k, &v, gated_delta::Decay::PerHead(&g), &beta, state, d)
    }

    /// `ab`'s rows of `width` placed at column 2 of rows 3 wider, as a fused projection leaves them.
    fn embedded(ab: &[f32], width: usize) -> Vec<f32> {
        ab.chunks_exact(width).flat_map(|row| [&[7.0, -7.0][..], row, &[9.0]].concat()).collect()
    }

    /// `c` through the chunkwise or the recurrent kernel (with `norm`, the recurrent one's fused output norm), its
    /// gate inputs read from inside wider rows.
    fn gpu_run(
        g: &Gpu,
        c: &Case,
        state: &wgpu::Buffer,
        chunked: bool,
        norm: Option<&kernel::HeadOutputNorm>,
    ) -> Vec<f32> {
        let d = &c.d;
        let t = c.ab.len() / (2 * d.n_v_heads);
        let ab = g.upload_f32("ab", &embedded(&c.ab, 2 * d.n_v_heads));
        let (qkv, params) = (g.upload_f32("qkv", &c.qkv), g.upload_f32("p", &c.params));
        let out = g.zeros("out", t * d.n_v_heads * d.dv);
        let call = DeltaNet {
            n_k_heads: d.n_k_heads,
            n_v_heads: d.n_v_heads,
            dk: d.dk,
            dv: d.dv,
            qkv: &qkv,
            ab: &ab,
            ab_columns: (2, 2 * d.n_v_heads + 3),
            gate_params: &params,
            per_channel: false,
            beta_scale: c.beta_scale,
            state,
            out: &out,
        };
        let mut plan = Plan::new(g);
        match chunked {
            true => kernel::chunked(g, &mut plan, &call, &ChunkScratch::new(g, t, d.n_v_heads, d.dk, d.dv)).unwrap(),
            false => kernel::recurrent(g, &mut plan, &call, norm).unwrap(),
        }
        run_on(g, &plan, &tokens(0, t), &out, t * d.n_v_heads * d.dv)
    }

    #[test]
    fn chunked_and_recurrent_kernels_match_reference_at_awkward_lengths() {
        let mut rng = Rng::new(8);
        let shapes = [
            Dims { n_k_heads: 2, n_v_heads: 4, dk: 16, dv: 32 },
            Dims { n_k_heads: 1, n_v_heads: 1, dk: 64, dv: 48 },
            Dims { n_k_heads: 1, n_v_heads: 2, dk: 18, dv: 32 },
        ];
        for d in shapes {
            for t in [1, 63, 64, 65, 150] {
                let c = case(&mut rng, d, t);
                let s0 = random(&mut rng, d.n_v_heads * d.dk * d.dv, 0.3);
                let mut want_state = s0.clone();
                let want = reference_run(&c, &mut want_state);
                for (g, chunked) in [(gpu(), false), (gpu(), true), (gpu_without_broadcast(), true)] {
                    let sb = g.upload_f32("state", &s0);
                    let got = gpu_run(g, &c, &sb, chunked, None);
                    let what = format!("{d:?} T={t} chunked={chunked} broadcast={}", g.tuning.broadcast);
                    assert_close(&got, &want, 2e-4, &what);
                    let state = pollster::block_on(g.read_f32(&sb, 0, s0.len())).unwrap();
                    assert_close(&state, &want_state, 2e-4, &format!("state {what}"));
                }
            }
        }
    }

    /// The recurrent kernel applies the layer's per-head output norm as it writes (plain, with unit offset, and
    /// gated by SiLU or sigmoid of z) at head widths that are not powers of two, over several tokens.
    #[test]
    fn recurrent_kernel_fuses_the_gated_output_norm() {
        use kernel::HeadOutputNorm;
        let g = gpu();
        let mut rng = Rng::new(31);
        let shapes = [
            Dims { n_k_heads: 2, n_v_heads: 4, dk: 16, dv: 32 },
            Dims { n_k_heads: 1, n_v_heads: 2, dk: 32, dv: 48 },
            Dims { n_k_heads: 1, n_v_heads: 2, dk: 20, dv: 30 },
        ];
        for d in shapes {
            let t = 3;
            let c = case(&mut rng, d, t);
            let width = d.n_v_heads * d.dv;
            let (weight, z) = (random(&mut rng, d.dv, 1.0), random(&mut rng, t * width, 2.0));
            let s0 = random(&mut rng, d.n_v_heads * d.dk * d.dv, 0.3);
            let raw = reference_run(&c, &mut s0.clone());
            let gates = [None, Some(Activation::Silu), Some(Activation::Sigmoid)];
            for (gate, unit_offset) in gates.into_iter().zip([true, false, false]) {
                let mut want = reference::norm::rms_norm(&raw, &weight, d.dv, 1e-5, unit_offset);
                if let Some(act) = gate {
                    let gated: Vec<f32> = z.iter().map(|&v| reference::mlp::activate(act, v)).collect();
                    want.iter_mut().zip(gated).for_each(|(y, g)| *y *= g);
                }
                let (wb, zb) = (g.upload_f32("norm", &weight), g.upload_f32("z", &z));
                let norm = HeadOutputNorm { weight: &wb, eps: 1e-5, unit_offset, gate: gate.map(|act| (&zb, act)) };
                let got = gpu_run(g, &c, &g.upload_f32("state", &s0), false, Some(&norm));
                assert_close(&got, &want, 2e-4, &format!("{d:?} gate {gate:?} unit offset {unit_offset}"));
            }
        }
    }

    /// Kimi Delta Attention: the decay per key channel.
    #[test]
    fn per_channel_decay_kernels_match_reference_and_hand_off() {
        let mut rng = Rng::new(14);
        // The second shape's head widths take scalar columns and a last quad of keys of 2 in the recurrent kernel;
        // the third's 8 column blocks share keys across a subgroup where the device has subgroups of 8.
        let shapes = [
            Dims { n_k_heads: 2, n_v_heads: 2, dk: 16, dv: 24 },
            Dims { n_k_heads: 1, n_v_heads: 2, dk: 18, dv: 30 },
            Dims { n_k_heads: 1, n_v_heads: 2, dk: 20, dv: 32 },
        ];
        for d in shapes {
            let (hv, key) = (d.n_v_heads, d.n_k_heads * d.dk);
            let width = 2 * key + hv * d.dv;
            let ab_width = hv * (1 + d.dk);
            let params = [random(&mut rng, hv, 1.0), random(&mut rng, hv * d.dk, 1.0)].concat();
            for t in [1, 63, 65, 150] {
                let qkv = random(&mut rng, t * width, 1.0);
                let ab = random(&mut rng, t * ab_width, 2.0);
                let cols = |off: usize, w: usize, stride: usize, x: &[f32]| -> Vec<f32> {
                    x.chunks_exact(stride).flat_map(|r| r[off..off + w].to_vec()).collect()
                };
                let (b, a) = (cols(0, hv, ab_width, &ab), cols(hv, hv * d.dk, ab_width, &ab));
                let decay = gated_delta::channel_gates(&a, &params[..hv], &params[hv..]);
                let beta: Vec<f32> = b.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect();
                let (q, k, v) =
                    (cols(0, key, width, &qkv), cols(key, key, width, &qkv), cols(2 * key, hv * d.dv, width, &qkv));
                let mut want_state = vec![0.0; hv * d.dk * d.dv];
                let per_channel = gated_delta::Decay::PerChannel(&decay);
                let want = gated_delta::recurrent(&q, &k, &v, per_channel, &beta, &mut want_state, &d);
                let run_gpu = |g: &Gpu, range: std::ops::Range<usize>, state: &wgpu::Buffer, chunked: bool| {
                    let n = range.len();
                    let (qb, abb) = (
                        g.upload_f32("qkv", &qkv[range.start * width..range.end * width]),
                        g.upload_f32("ab", &ab[range.start * ab_width..range.end * ab_width]),
                    );
                    let (pb, out) = (g.upload_f32("params", &params), g.zeros("out", n * hv * d.dv));
                    let call = DeltaNet {
                        n_k_heads: d.n_k_heads,
                        n_v_heads: hv,
                        dk: d.dk,
                        dv: d.dv,
                        qkv: &qb,
                        ab: &abb,
                        ab_columns: (0, 0),
                        gate_params: &pb,
                        per_channel: true,
                        beta_scale: 1.0,
                        state,
                        out: &out,
                    };
                    let mut plan = Plan::new(g);
                    if chunked {
                        kernel::chunked(g, &mut plan, &call, &ChunkScratch::new(g, n, hv, d.dk, d.dv)).unwrap();
                    } else {
                        kernel::recurrent(g, &mut plan, &call, None).unwrap();
                    }
                    run_on(g, &plan, &tokens(0, n), &out, n * hv * d.dv)
                };
                for (g, chunked) in [(gpu(), false), (gpu(), true), (gpu_without_broadcast(), true)] {
                    let sb = g.zeros("state", want_state.len());
                    let what = format!("kda T={t} chunked={chunked} broadcast={}", g.tuning.broadcast);
                    assert_close(&run_gpu(g, 0..t, &sb, chunked), &want, 2e-4, &what);
                    let state = pollster::block_on(g.read_f32(&sb, 0, want_state.len())).unwrap();
                    assert_close(&state, &want_state, 2e-4, &format!("state {what}"));
                }
                if t == 150 {
                    let g = gpu();
                    let sb = g.zeros("state", want_state.len());
                    let mut got = run_gpu(g, 0..100, &sb, true);
                    for i in 100..t {
                        got.extend(run_gpu(g, i..i + 1, &sb, false));
                    }
                    assert_close(&got, &want, 2e-4, "kda prefill 100 then 50 steps");
                }
            }
        }
    }

    #[test]
    fn chunked_prefill_hands_its_state_to_recurrent_decode() {
        let g = gpu();
        let mut rng = Rng::new(10);
        let d = Dims { n_k_heads: 2, n_v_heads: 4, dk: 16, dv: 16 };
        let long = case(&mut rng, d, 100);
        let mut state = vec![0.0; d.n_v_heads * d.dk * d.dv];
        let want = reference_run(&long, &mut state);
        let width = long.qkv.len() / 100;
        let sb = g.zeros("state", state.len());
        let prefix = Case {
            d,
            qkv: long.qkv[..70 * width].to_vec(),
            ab: long.ab[..70 * 8].to_vec(),
            params: long.params.clone(),
            beta_scale: long.beta_scale,
        };
        let mut got = gpu_run(g, &prefix, &sb, true, None);
        for t in 70..100 {
            let one = Case {
                d,
                qkv: long.qkv[t * width..(t + 1) * width].to_vec(),
                ab: long.ab[t * 8..(t + 1) * 8].to_vec(),
                params: long.params.clone(),
                beta_scale: long.beta_scale,
            };
            got.extend(gpu_run(g, &one, &sb, false, None));
        }
        assert_close(&got, &want, 2e-4, "prefill 70 then 30 decode steps vs one pass");
    }
}

mod gla {
    use super::*;
    use ternlight_core::reference::gla::{self as reference_gla, Dims};
    use ternlight_gpu::kernels::gated_deltanet::ChunkScratch;
    use ternlight_gpu::kernels::gla::{self as kernel, Gla};

    fn gpu_run(g: &Gpu, d: &Dims, qkv: &[f32], gk: &[f32], state: &wgpu::Buffer, chunked: bool) -> Vec<f32> {
        gpu_run_with(g, d, qkv, gk, state, chunked, (kernel::Decay::LogSigmoid(16.0), (d.dk as f32).powf(-0.5), 0))
    }

    /// `qkv` through the chunkwise or the recurrent kernel on `g` with `decay` and `q_scale`, the state at float
    /// `offset` of `state`.
    fn gpu_run_with(
        g: &Gpu,
        d: &Dims,
        qkv: &[f32],
        gk: &[f32],
        state: &wgpu::Buffer,
        chunked: bool,
        (decay, q_scale, offset): (kernel::Decay, f32, usize),
    ) -> Vec<f32> {
        let t = qkv.len() / (d.heads * (2 * d.dk + d.dv));
        let (qb, gb, out) = (g.upload_f32("qkv", qkv), g.upload_f32("gk", gk), g.zeros("out", t * d.heads * d.dv));
        let call = Gla {
            heads: d.heads,
            dk: d.dk,
            dv: d.dv,
            decay,
            q_scale,
            qkv: &qb,
            gk: &gb,
            state,
            state_offset: offset,
            out: &out,
        };
        let mut plan = Plan::new(g);
        if chunked {
            kernel::chunked(g, &mut plan, &call, &ChunkScratch::new(g, t, d.heads, d.dk, d.dv)).unwrap();
        } else {
            kernel::recurrent(g, &mut plan, &call).unwrap();
        }
        run_on(g, &plan, &tokens(0, t), &out, t * d.heads * d.dv)
    }

    fn reference_run(d: &Dims, qkv: &[f32], gk: &[f32], state: &mut [f32]) -> Vec<f32> {
        let (key, width) = (d.heads * d.dk, d.heads * (2 * d.dk + d.dv));
        let cols = |off: usize, w: usize| -> Vec<f32> {
            qkv.chunks_exact(width).flat_map(|r| r[off..off + w].to_vec()).collect()
        };
        let g = reference_gla::log_decay(gk, 16.0);
        reference_gla::recurrent(&cols(0, key), &cols(key, key), &cols(2 * key, d.heads * d.dv), &g, state, d)
    }

    #[test]
    fn chunked_and_recurrent_kernels_match_reference_and_hand_off() {
        let mut rng = Rng::new(12);
        for d in [Dims::new(2, 16, 32), Dims::new(1, 64, 24), Dims::new(2, 18, 30)] {
            let width = d.heads * (2 * d.dk + d.dv);
            for t in [1, 63, 64, 65, 150] {
                let qkv = random(&mut rng, t * width, 1.0);
                let gk = random(&mut rng, t * d.heads * d.dk, 6.0);
                let s0 = random(&mut rng, d.heads * d.dk * d.dv, 0.3);
                let mut want_state = s0.clone();
                let want = reference_run(&d, &qkv, &gk, &mut want_state);
                for (g, chunked) in [(gpu(), false), (gpu(), true), (gpu_without_broadcast(), true)] {
                    let sb = g.upload_f32("state", &s0);
                    let what = format!("{d:?} T={t} chunked={chunked} broadcast={}", g.tuning.broadcast);
                    assert_close(&gpu_run(g, &d, &qkv, &gk, &sb, chunked), &want, 2e-4, &what);
                    let state = pollster::block_on(g.read_f32(&sb, 0, s0.len())).unwrap();
                    assert_close(&state, &want_state, 2e-4, &format!("state {what}"));
                }
                if t == 150 {
                    let g = gpu();
                    let sb = g.upload_f32("state", &s0);
                    let (gw, split) = (d.heads * d.dk, 100);
                    let mut got = gpu_run(g, &d, &qkv[..split * width], &gk[..split * gw], &sb, true);
                    for i in split..t {
                        got.extend(gpu_run(
                            g,
                            &d,
                            &qkv[i * width..(i + 1) * width],
                            &gk[i * gw..(i + 1) * gw],
                            &sb,
                            false,
                        ));
                    }
                    assert_close(&got, &want, 2e-4, &format!("{d:?} prefill 100 then 50 steps"));
                }
            }
        }
    }

    /// Lightning attention: one constant log decay per head, unscaled queries.
    #[test]
    fn per_head_decay_with_unscaled_queries_matches_reference() {
        let mut rng = Rng::new(13);
        let d = Dims { scale: 1.0, ..Dims::new(3, 16, 16) };
        let width = d.heads * (2 * d.dk + d.dv);
        let slopes = [0.25f32, 0.0625, 0.003];
        let per_head: Vec<f32> = slopes.iter().map(|s| -s).collect();
        for t in [1, 65, 150] {
            let qkv = random(&mut rng, t * width, 1.0);
            let key = d.heads * d.dk;
            let cols = |off: usize, w: usize| -> Vec<f32> {
                qkv.chunks_exact(width).flat_map(|r| r[off..off + w].to_vec()).collect()
            };
            let q = cols(0, key);
            let decay: Vec<f32> =
                (0..t).flat_map(|_| per_head.iter().flat_map(|&g| std::iter::repeat_n(g, d.dk))).collect();
            let mut want_state = vec![0.0; d.heads * d.dk * d.dv];
            let v = cols(2 * key, d.heads * d.dv);
            let want = reference_gla::recurrent(&q, &cols(key, key), &v, &decay, &mut want_state, &d);
            // The state sits 6 floats into its buffer: not on a vec4, so the recurrent kernel takes scalar columns.
            let offset = 6;
            for (g, chunked) in [(gpu(), false), (gpu(), true), (gpu_without_broadcast(), true)] {
                let sb = g.zeros("state", offset + want_state.len());
                let got = gpu_run_with(g, &d, &qkv, &per_head, &sb, chunked, (kernel::Decay::PerHead, 1.0, offset));
                let what = format!("lightning T={t} chunked={chunked} broadcast={}", g.tuning.broadcast);
                assert_close(&got, &want, 2e-4, &what);
                let state = pollster::block_on(g.read_f32(&sb, offset, want_state.len())).unwrap();
                assert_close(&state, &want_state, 2e-4, &format!("state {what}"));
            }
        }
    }
}

#[test]
fn plans_with_a_capacity_refuse_undersized_buffers() {
    let g = gpu();
    let (small, ok) = (g.zeros("small", 10), g.zeros("ok", 4 * 8));
    let mut plan = Plan::with_capacity(g, 4, 1);
    let e = mlp::gated_act(g, &mut plan, Activation::Silu, &ok, &ok, &small, 8).unwrap_err().to_string();
    assert!(e.contains("gated_act") && e.contains("output") && e.contains("4 rows of 8 floats"), "{e}");
    mlp::gated_act(g, &mut plan, Activation::Silu, &ok, &ok, &ok, 8).unwrap();
}

#[test]
fn linear_attention_feature_maps_and_normaliser_match_reference() {
    use ternlight_core::reference::{feature_map as fm, gla::Dims};
    use ternlight_core::spec::{FeatureMap, LinearSpec};
    use ternlight_gpu::kernels::gated_deltanet::ChunkScratch;
    use ternlight_gpu::kernels::gla::{self, Decay, Gla};
    use ternlight_gpu::kernels::linear_attn::{divide, features, Heads};
    let g = gpu();
    let mut rng = Rng::new(13);
    let l = |n: &str| LinearSpec::new(n, 1, 1, true);
    let maps = [
        (FeatureMap::Hadamard(Box::new([l("a"), l("b"), l("c"), l("d")])), 7, false),
        (FeatureMap::Taylor, 5, true),
        (FeatureMap::Hedgehog(Box::new([l("a"), l("b")])), 9, true),
    ];
    let (heads, dv) = (3, 6);
    for (map, dk, normalize) in maps {
        let (f, carried) = (map.features(dk), dv + usize::from(normalize));
        let layers: Vec<Vec<f32>> =
            map.layers().iter().flat_map(|_| [random(&mut rng, dk * dk, 0.4), random(&mut rng, dk, 0.3)]).collect();
        let weights = (!layers.is_empty()).then(|| g.upload_f32("map", &layers.concat()));
        let phi = |x: &[f32], which: usize| match map {
            FeatureMap::Hadamard(_) => {
                let p = &layers[4 * which..];
                fm::hadamard(x, &p[0], &p[1], &p[2], &p[3], dk)
            }
            FeatureMap::Taylor => fm::taylor(x, dk),
            FeatureMap::Hedgehog(_) => fm::hedgehog(x, &layers[2 * which], &layers[2 * which + 1], dk),
        };
        for t in [1, 70] {
            let (src_w, dst_w) = (heads * (2 * dk + dv), heads * (2 * f + carried));
            let src = random(&mut rng, t * src_w, 1.0);
            let cols = |off: usize, w: usize| -> Vec<f32> {
                src.chunks_exact(src_w).flat_map(|r| r[off..off + w].to_vec()).collect()
            };
            let (q, k) = (phi(&cols(0, heads * dk), 0), phi(&cols(heads * dk, heads * dk), 1));
            let v = cols(2 * heads * dk, heads * dv);
            let v_carried = if normalize { fm::with_ones(&v, dv) } else { v.clone() };
            let mut want_rows = Vec::new();
            for i in 0..t {
                want_rows.extend_from_slice(&q[i * heads * f..][..heads * f]);
                want_rows.extend_from_slice(&k[i * heads * f..][..heads * f]);
                want_rows.extend_from_slice(&v_carried[i * heads * carried..][..heads * carried]);
            }
            let (sb, db) = (g.upload_f32("src", &src), g.zeros("dst", t * dst_w));
            let h = Heads { heads, dk, dv, normalize };
            let mut plan = Plan::new(g);
            features(g, &mut plan, &map, weights.as_ref(), &sb, &db, h).unwrap();
            assert_close(&run(&plan, &tokens(0, t), &db, t * dst_w), &want_rows, 1e-5, &format!("{map:?} features"));
            let scale = if normalize { 1.0 } else { (dk as f32).powf(-0.5) };
            let want = if normalize {
                fm::normalized(&q, &k, &v, heads, f, dv)
            } else {
                let mut state = vec![0.0; heads * f * dv];
                let d = Dims { heads, dk: f, dv, scale };
                ternlight_core::reference::gla::recurrent(&q, &k, &v, &vec![0.0; q.len()], &mut state, &d)
            };
            for chunked in [true, false] {
                let (zero, state) = (g.zeros("decay", heads), g.zeros("state", heads * f * carried));
                let (out, normed) = (g.zeros("out", t * heads * carried), g.zeros("normed", t * heads * dv));
                let call = Gla {
                    heads,
                    dk: f,
                    dv: carried,
                    decay: Decay::PerHead,
                    q_scale: scale,
                    qkv: &db,
                    gk: &zero,
                    state: &state,
                    state_offset: 0,
                    out: &out,
                };
                let mut plan = Plan::new(g);
                if chunked {
                    gla::chunked(g, &mut plan, &call, &ChunkScratch::new(g, t, heads, f, carried)).unwrap();
                } else {
                    gla::recurrent(g, &mut plan, &call).unwrap();
                }
                let result = if normalize {
                    divide(g, &mut plan, &out, &normed, heads, dv).unwrap();
                    &normed
                } else {
                    &out
                };
                let got = run(&plan, &tokens(0, t), result, t * heads * dv);
                assert_close(&got, &want, 1e-4, &format!("{map:?} attention, {t} tokens, chunked {chunked}"));
            }
        }
    }
}

#[test]
fn moe_routing_and_selected_experts_match_reference_across_weight_blocks() {
    use ternlight_core::reference::moe::{route, Routing};
    use ternlight_core::spec::RouterScoring;
    use ternlight_gpu::kernels::moe::{self, ExpertLinear, GroupedLinear, Router};
    let g = gpu();
    let mut rng = Rng::new(11);
    let (experts, hidden, inter) = (5, 19, 13);
    for (n_tok, top_k, scoring, biased) in [
        (1, 1, RouterScoring::Softmax, false),
        (37, 3, RouterScoring::Softmax, false),
        (6, 2, RouterScoring::Sigmoid, true),
        (150, 2, RouterScoring::Softmax, true),
    ] {
        let logits = random(&mut rng, n_tok * experts, 3.0);
        let bias = random(&mut rng, experts, 0.3);
        let x = random(&mut rng, n_tok * hidden, 1.0);
        let raw_up = encode(DType::BF16, &random(&mut rng, experts * inter * hidden, 0.5));
        let raw_down = encode(DType::BF16, &random(&mut rng, experts * hidden * inter, 0.5));
        let (w_up, w_down) = (decode_f32(DType::BF16, &raw_up).unwrap(), decode_f32(DType::BF16, &raw_down).unwrap());
        let y0 = random(&mut rng, n_tok * hidden, 1.0);
        let routing =
            Routing { scoring, selection_bias: biased.then_some(&bias[..]), top_k, normalize: true, scale: 1.5 };

        // Reference: per token, the weighted sum of down(up(x)) through its experts, added to y0.
        let mut want_routes = Vec::new();
        let mut want = y0.clone();
        for t in 0..n_tok {
            for (e, weight) in route(&logits[t * experts..(t + 1) * experts], &routing) {
                want_routes.extend([e as f32, weight]);
                let xt = &x[t * hidden..(t + 1) * hidden];
                let h = reference::linear::linear(
                    xt,
                    &w_up[e * inter * hidden..(e + 1) * inter * hidden],
                    None,
                    hidden,
                    inter,
                );
                let w_e = &w_down[e * hidden * inter..(e + 1) * hidden * inter];
                let o = reference::linear::linear(&h, w_e, None, inter, hidden);
                want[t * hidden..(t + 1) * hidden].iter_mut().zip(o).for_each(|(a, b)| *a += weight * b);
            }
        }

        // Blocks of two experts each: the kernels must skip experts held by other blocks.
        let block_bytes = |rows: usize, cols: usize| (2 * rows * cols * 2) as u64;
        let up = Weight::upload_grouped(
            g,
            "up",
            (DType::BF16, experts * inter, hidden),
            &raw_up,
            block_bytes(inter, hidden),
            inter,
        )
        .unwrap();
        let down = Weight::upload_grouped(
            g,
            "down",
            (DType::BF16, experts * hidden, inter),
            &raw_down,
            block_bytes(hidden, inter),
            hidden,
        )
        .unwrap();
        assert_eq!((up.blocks.len(), down.blocks.len()), (3, 3));
        let (lb, bb, xb) = (g.upload_f32("logits", &logits), g.upload_f32("bias", &bias), g.upload_f32("x", &x));
        let routes = g.zeros("routes", n_tok * top_k * 2);
        let mid = g.zeros("mid", n_tok * top_k * inter);
        let yb = g.upload_f32("y", &y0);
        let mut plan = Plan::new(g);
        let router = Router {
            scoring,
            selection_bias: biased.then_some(&bb),
            n_experts: experts,
            top_k,
            normalize: true,
            scale: 1.5,
        };
        moe::route(g, &mut plan, &router, &lb, &routes).unwrap();
        let l = ExpertLinear { x: &xb, w: &up, n: inter, routes: &routes, top_k, y: &mid, combine: None };
        moe::expert_linear(g, &mut plan, &l).unwrap();
        let l = ExpertLinear {
            x: &mid,
            w: &down,
            n: hidden,
            routes: &routes,
            top_k,
            y: &yb,
            combine: Some(Epilogue::Accumulate),
        };
        moe::expert_linear(g, &mut plan, &l).unwrap();
        let got = run(&plan, &tokens(0, n_tok), &yb, n_tok * hidden);
        let got_routes = pollster::block_on(g.read_f32(&routes, 0, n_tok * top_k * 2)).unwrap();
        for (i, (a, b)) in got_routes.iter().zip(&want_routes).enumerate() {
            if i % 2 == 0 {
                assert_eq!(a, b, "expert of slot {} (T={n_tok}, k={top_k})", i / 2);
            } else {
                assert!((a - b).abs() < 1e-5, "route weight {a} vs {b}");
            }
        }
        assert_close(&got, &want, 1e-4, &format!("moe T={n_tok} k={top_k} {scoring:?}"));

        // The prefill form: tokens grouped per expert, slot outputs combined afterwards.
        let (lists, counts) = (g.zeros("lists", n_tok * experts), g.zeros("counts", experts));
        let slots = g.zeros("slots", n_tok * top_k * hidden);
        let yb = g.upload_f32("y", &y0);
        let mid = g.zeros("mid", n_tok * top_k * inter);
        let mut plan = Plan::new(g);
        moe::route(g, &mut plan, &router, &lb, &routes).unwrap();
        moe::group(g, &mut plan, &routes, (experts, top_k), &lists, &counts).unwrap();
        let grouped =
            |x, slot_input, w, n, y| GroupedLinear { x, slot_input, w, n, top_k, lists: &lists, counts: &counts, y };
        moe::grouped_linear(g, &mut plan, &grouped(&xb, false, &up, inter, &mid)).unwrap();
        moe::grouped_linear(g, &mut plan, &grouped(&mid, true, &down, hidden, &slots)).unwrap();
        moe::combine_slots(g, &mut plan, (&slots, &routes), (hidden, top_k), &yb, Epilogue::Accumulate).unwrap();
        let got = run(&plan, &tokens(0, n_tok), &yb, n_tok * hidden);
        assert_close(&got, &want, 1e-4, &format!("grouped moe T={n_tok} k={top_k} {scoring:?}"));
    }
}

/// Absorbed MLA (queries into the latent, attention over cached latents, context out through kv_b) equals attention
/// over expanded per-head keys `[W_uk c | k_tail]` and values `W_uv c`.
#[test]
fn absorbed_mla_matches_expanded_keys_and_values() {
    use ternlight_gpu::kernels::mla::Mla;
    let g = gpu();
    let mut rng = Rng::new(17);
    let (heads, nope, tail, v_dim, rank) = (3, 11, 5, 9, 13);
    let (qk, latent) = (nope + tail, rank + tail);
    let raw = encode(DType::BF16, &random(&mut rng, heads * (nope + v_dim) * rank, 0.5));
    let kv_b = decode_f32(DType::BF16, &raw).unwrap();
    let w = Weight::upload(g, "kv_b", DType::BF16, heads * (nope + v_dim), rank, &raw, g.info.max_binding).unwrap();
    for (pos0, t) in [(0, 70), (70, 1)] {
        let ctx = pos0 + t;
        let q = random(&mut rng, t * heads * qk, 1.0);
        let rows = random(&mut rng, ctx * latent, 1.0);
        // Expanded keys and values per head from each cached latent row.
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for row in rows.chunks_exact(latent) {
            let up = reference::linear::linear(&row[..rank], &kv_b, None, rank, heads * (nope + v_dim));
            for head in up.chunks_exact(nope + v_dim) {
                k.extend_from_slice(&head[..nope]);
                k.extend_from_slice(&row[rank..]);
                v.extend_from_slice(&head[nope..]);
            }
        }
        let scale = (qk as f32).powf(-0.5);
        let want = reference::attention::attention_qk_v(
            &q,
            &k,
            &v,
            (heads, heads),
            (qk, v_dim),
            pos0,
            &AttentionMask::default(),
            scale,
            None,
        );

        let (qb, cache) = (g.upload_f32("q", &q), g.upload_f32("latents", &rows));
        let (q_abs, ctx_b, out) =
            (g.zeros("q abs", t * heads * latent), g.zeros("ctx", t * heads * rank), g.zeros("out", want.len()));
        let mla = Mla { n_heads: heads, nope, rope: tail, v_dim, rank, kv_b: &w };
        let causal = AttentionMask::default();
        let call = Attention {
            v_dim: rank,
            ..Attention::new((&q_abs, &ctx_b), (&cache, &cache, ctx), (heads, 1, latent), &causal, scale)
        };
        let scores = g.zeros("scores", t * heads * DecodeSpread::of(g).scratch_row(rank, ctx));
        let mut plan = Plan::new(g);
        mla.absorb_queries(g, &mut plan, &qb, &q_abs).unwrap();
        if t == 1 {
            attention::decode(g, &mut plan, &call, &scores, ctx).unwrap();
        } else {
            attention::prefill(g, &mut plan, &call).unwrap();
        }
        mla.expand_output(g, &mut plan, &ctx_b, &out).unwrap();
        assert_close(&run(&plan, &tokens(pos0, t), &out, want.len()), &want, 1e-4, &format!("mla t{t}"));
    }
}

/// Mamba2's scan on the GPU (prep, the GLA kernels, skip) against the token-by-token reference, chunked and
/// recurrent, with grouped B/C and a prefill handing its state to decode.
#[test]
fn mamba2_scan_matches_reference() {
    use ternlight_core::reference::mamba2::{scan, Dims};
    use ternlight_gpu::kernels::gated_deltanet::ChunkScratch;
    use ternlight_gpu::kernels::gla::{self, Decay, Gla};
    use ternlight_gpu::kernels::mamba2::Mamba2;
    let g = gpu();
    let mut rng = Rng::new(18);
    let d = Dims { heads: 4, head_dim: 8, groups: 2, state: 16, dt_limit: (0.0, f32::INFINITY) };
    let (h, p, n) = (d.heads, d.head_dim, d.state);
    let width = h * p + 2 * d.groups * n;
    let params = [random(&mut rng, h, 1.0), random(&mut rng, h, 1.0), random(&mut rng, h, 1.0)].concat();
    let pb = g.upload_f32("params", &params);
    let run_gpu = |xbc: &[f32], dt: &[f32], state: &wgpu::Buffer, chunked: bool| {
        let t = dt.len() / h;
        let (xb, db) = (g.upload_f32("xbc", xbc), g.upload_f32("dt", dt));
        let (qkv, gk, out) = (g.zeros("qkv", t * h * (2 * n + p)), g.zeros("gk", t * h * n), g.zeros("y", t * h * p));
        let ssm = Mamba2 {
            n_heads: h,
            head_dim: p,
            n_groups: d.groups,
            state: n,
            dt_limit: d.dt_limit,
            xbc: &xb,
            params: &pb,
        };
        let call = Gla {
            heads: h,
            dk: n,
            dv: p,
            decay: Decay::Log,
            q_scale: 1.0,
            qkv: &qkv,
            gk: &gk,
            state,
            state_offset: 0,
            out: &out,
        };
        let mut plan = Plan::new(g);
        ssm.prepare(g, &mut plan, &db, &qkv, &gk).unwrap();
        if chunked {
            gla::chunked(g, &mut plan, &call, &ChunkScratch::new(g, t, h, n, p)).unwrap();
        } else {
            gla::recurrent(g, &mut plan, &call).unwrap();
        }
        ssm.skip(g, &mut plan, &out).unwrap();
        run(&plan, &tokens(0, t), &out, t * h * p)
    };
    for t in [1, 65, 150] {
        let xbc = random(&mut rng, t * width, 1.0);
        let dt = random(&mut rng, t * h, 2.0);
        let mut want_state = vec![0.0; h * n * p];
        let want = scan(&xbc, &dt, &params, &mut want_state, &d);
        for chunked in [false, true] {
            let sb = g.zeros("state", want_state.len());
            assert_close(&run_gpu(&xbc, &dt, &sb, chunked), &want, 2e-4, &format!("mamba2 T={t} chunked={chunked}"));
            let state = pollster::block_on(g.read_f32(&sb, 0, want_state.len())).unwrap();
            assert_close(&state, &want_state, 2e-4, &format!("mamba2 state T={t} chunked={chunked}"));
        }
        if t == 150 {
            let sb = g.zeros("state", want_state.len());
            let mut got = run_gpu(&xbc[..100 * width], &dt[..100 * h], &sb, true);
            for i in 100..t {
                got.extend(run_gpu(&xbc[i * width..(i + 1) * width], &dt[i * h..(i + 1) * h], &sb, false));
            }
            assert_close(&got, &want, 2e-4, "mamba2 prefill 100 then 50 steps");
        }
    }
}

/// Gated Slot Attention on the GPU (gates, a value-decay GLA pass, the slot softmax, a key-decay GLA pass) against
/// the token-by-token reference, chunked and recurrent, with a prefill handing both states to decode.
#[test]
fn gated_slot_attention_matches_reference() {
    use ternlight_core::reference::gla::log_decay;
    use ternlight_core::reference::gsa::{recurrent, Dims};
    use ternlight_gpu::kernels::gated_deltanet::ChunkScratch;
    use ternlight_gpu::kernels::gla::{self, Decay, Gla};
    use ternlight_gpu::kernels::gsa::Gsa;
    let mut rng = Rng::new(19);
    // 32 slots: the first pass's 8 column blocks share keys across a subgroup where the device has subgroups of 8.
    let d = Dims { heads: 2, dk: 12, dv: 20, slots: 32, scale: 0.7 };
    let (h, k, v, m) = (d.heads, d.dk, d.dv, d.slots);
    let raw_width = h * (2 * k + v);
    let glue = Gsa { heads: h, dk: k, dv: v, slots: m, normalizer: 8.0 };
    let run_gpu = |g: &Gpu, raw: &[f32], f: &[f32], state: &wgpu::Buffer, chunked: bool| {
        let t = f.len() / (h * m);
        let (rb, gk) = (g.upload_f32("raw", raw), g.upload_f32("gates", f));
        let (first, second) = (g.zeros("first", t * glue.first_width()), g.zeros("second", t * glue.second_width()));
        let (scores, out) = (g.zeros("scores", t * h * m), g.zeros("out", t * h * v));
        let scratch = ChunkScratch::new(g, t, h, k.max(m), m.max(v));
        let pass = |qkv, dk, dv, decay, q_scale, state_offset, out| Gla {
            heads: h,
            dk,
            dv,
            decay,
            q_scale,
            qkv,
            gk: &gk,
            state,
            state_offset,
            out,
        };
        let one = pass(&first, k, m, Decay::PerValue, d.scale, 0, &scores);
        let two = pass(&second, m, v, Decay::Log, 1.0, h * k * m, &out);
        let mut plan = Plan::new(g);
        glue.gates(g, &mut plan, &rb, &gk, (&first, &second)).unwrap();
        for (i, call) in [one, two].iter().enumerate() {
            if i == 1 {
                glue.softmax(g, &mut plan, &scores, &second).unwrap();
            }
            if chunked {
                gla::chunked(g, &mut plan, call, &scratch).unwrap();
            } else {
                gla::recurrent(g, &mut plan, call).unwrap();
            }
        }
        run_on(g, &plan, &tokens(0, t), &out, t * h * v)
    };
    for t in [1, 65, 150] {
        let raw = random(&mut rng, t * raw_width, 1.0);
        let f = random(&mut rng, t * h * m, 3.0);
        let cols = |off: usize, w: usize| -> Vec<f32> {
            raw.chunks_exact(raw_width).flat_map(|r| r[off..off + w].to_vec()).collect()
        };
        let silu = |x: Vec<f32>| x.into_iter().map(|v| v / (1.0 + (-v).exp())).collect::<Vec<f32>>();
        let (q, kk, vv) = (silu(cols(0, h * k)), silu(cols(h * k, h * k)), silu(cols(2 * h * k, h * v)));
        let mut want_state = vec![0.0; d.state_len()];
        let want = recurrent(&q, &kk, &vv, &log_decay(&f, 8.0), &mut want_state, &d);
        for (g, chunked) in [(gpu(), false), (gpu(), true), (gpu_without_broadcast(), true)] {
            let sb = g.zeros("state", want_state.len());
            let what = format!("gsa T={t} chunked={chunked} broadcast={}", g.tuning.broadcast);
            assert_close(&run_gpu(g, &raw, &f, &sb, chunked), &want, 2e-4, &what);
            let state = pollster::block_on(g.read_f32(&sb, 0, want_state.len())).unwrap();
            assert_close(&state, &want_state, 2e-4, &format!("state {what}"));
        }
        if t == 150 {
            let g = gpu();
            let sb = g.zeros("state", want_state.len());
            let mut got = run_gpu(g, &raw[..100 * raw_width], &f[..100 * h * m], &sb, true);
            for i in 100..t {
                got.extend(run_gpu(
                    g,
                    &raw[i * raw_width..(i + 1) * raw_width],
                    &f[i * h * m..(i + 1) * h * m],
                    &sb,
                    false,
                ));
            }
            assert_close(&got, &want, 2e-4, "gsa prefill 100 then 50 steps");
        }
    }
}

/// Ternary linear layers: int8 activation fake-quantisation, then 2-bit codes decoded in the matmul and matvec
/// kernels, with the layer's multiplier, across several row blocks. The last case takes the integer path's sums to
/// their extremes: every activation quantises to 127 (token 0) or -127 (token 1), every weight is 1 (even rows) or
/// -1 (odd rows).
#[test]
fn ternary_linear_matches_reference() {
    use ternlight_core::reference::ternary::act_quant;
    use ternlight_gpu::kernels::ternary;
    let g = gpu();
    let mut rng = Rng::new(20);
    for (rows, k, n) in [(1, 37, 23), (19, 64, 130), (70, 45, 40), (1, 2560, 37), (2, 6912, 40)] {
        let extreme = k == 6912;
        let mut x = random(&mut rng, rows * k, 3.0);
        let mut codes: Vec<i8> = (0..n * k).map(|_| (rng.next_f32() * 3.0).floor() as i8 - 1).collect();
        if extreme {
            x.iter_mut().enumerate().for_each(|(i, v)| *v = if i < k { 2.0 } else { -2.0 });
            codes.iter_mut().enumerate().for_each(|(i, c)| *c = if (i / k) % 2 == 0 { 1 } else { -1 });
        }
        let wf: Vec<f32> = codes.iter().map(|&c| c as f32).collect();
        let multiplier = 0.37;
        // Odd cases RMSNorm the input first (fla's BitLinear).
        let norm_w = random(&mut rng, k, 1.0);
        let (with_norm, unit_offset) = (rows % 2 == 1, k % 2 == 0);
        let input = match with_norm {
            true => reference::norm::rms_norm(&x, &norm_w, k, 1e-8, unit_offset),
            false => x.clone(),
        };
        let mut want = reference::linear::linear(&act_quant(&input, k), &wf, None, k, n);
        want.iter_mut().for_each(|v| *v *= multiplier);
        let nb = g.upload_f32("norm", &norm_w);
        // Blocks of about 20 rows (a multiple of the rows that fill whole 16-code words).
        let w = Weight::upload_ternary(g, "w", &codes, n, k, ((20 * k).div_ceil(4)) as u64).unwrap();
        assert!(w.blocks.len() > 1 && w.bytes() <= ((n * k).div_ceil(16) * 4 + 4 * w.blocks.len()) as u64);
        for shape in [MatmulShape::Tiled, MatmulShape::Vector] {
            let (xb, xq, yb) = (g.upload_f32("x", &x), g.zeros("xq", rows * k), g.zeros("y", rows * n));
            let mut plan = Plan::new(g);
            let norm = with_norm.then_some(InputNorm { weight: &nb, eps: 1e-8, unit_offset });
            ternary::act_quant(g, &mut plan, (&xb, ternary::Quantised::Float(&xq)), k, Rows::Tokens, norm).unwrap();
            let l = Linear { scale: multiplier, ..Linear::new(&xq, &w, &yb, shape) };
            linear(g, &mut plan, &l).unwrap();
            assert_close(
                &run(&plan, &tokens(0, rows), &yb, rows * n),
                &want,
                1e-5,
                &format!("ternary {rows}x{k}x{n} {shape:?}"),
            );
        }
        // The integer path (i8x4 activations, dot4I8Packed) where rows hold whole 16-code words.
        if ternary::dp4_ready(g, &w) {
            let (xb, yb) = (g.upload_f32("x", &x), g.upload_f32("y", &vec![0.5; rows * n]));
            let records = g.zeros("xq records", rows * ternary::packed_stride(k, 0));
            let mut plan = Plan::new(g);
            let norm = with_norm.then_some(InputNorm { weight: &nb, eps: 1e-8, unit_offset });
            let quantised = ternary::Quantised::Packed(&records);
            ternary::act_quant(g, &mut plan, (&xb, quantised), k, Rows::Tokens, norm).unwrap();
            let call =
                ternary::MatvecDp4 { accumulate: true, ..ternary::MatvecDp4::new(&records, &w, multiplier, &yb) };
            ternary::matvec_dp4(g, &mut plan, &call).unwrap();
            let plus_half: Vec<f32> = want.iter().map(|v| v + 0.5).collect();
            let got = run(&plan, &tokens(0, rows), &yb, rows * n);
            assert_close(&got, &plus_half, 1e-5, &format!("dp4 {rows}x{k}x{n}"));
        }
    }
}

/// Hybrid Gated Flow fused into the ternary kernels: `x A^T` computed by the activation quantiser from the
/// unquantised rows (raw, or through a folded pre-norm), `diag(g) B` applied in the integer matvec's epilogue,
/// across weight blocks.
#[test]
fn ternary_layers_with_fused_hgf_match_reference() {
    use ternlight_core::reference::ternary::act_quant;
    use ternlight_gpu::kernels::ternary::{self, HgfDown, HgfUp, MatvecDp4, Quantised};
    let g = gpu();
    let mut rng = Rng::new(23);
    // Rank 100 leaves the quantiser fewer invocations, so its reductions fit in workgroup memory.
    let cases = [
        (1, 64, 130, 5, false),
        (3, 48, 37, 8, false),
        (2, 80, 29, 3, true),
        (2, 48, 11, 100, true),
        (9, 32, 21, 4, true),
        (1, 576, 19, 6, false),
    ];
    for (rows, k, n, rank, normed) in cases {
        let raw = random(&mut rng, rows * k, 3.0);
        let norm = random(&mut rng, k, 1.0);
        let x = match normed {
            true => reference::norm::rms_norm(&raw, &norm, k, 1e-5, false),
            false => raw.clone(),
        };
        let codes: Vec<i8> = (0..n * k).map(|_| (rng.next_f32() * 3.0).floor() as i8 - 1).collect();
        let wf: Vec<f32> = codes.iter().map(|&c| c as f32).collect();
        let (a, bg) = (random(&mut rng, rank * k, 0.3), random(&mut rng, n * rank, 0.3));
        let mid_want = reference::linear::linear(&x, &a, None, k, rank);
        let mut want = reference::linear::linear(&act_quant(&x, k), &wf, None, k, n);
        let correction = reference::linear::linear(&mid_want, &bg, None, rank, n);
        want.iter_mut().zip(correction).for_each(|(v, c)| *v = *v * 0.37 + c);
        let w = Weight::upload_ternary(g, "w", &codes, n, k, ((20 * k).div_ceil(4)) as u64).unwrap();
        // The test devices (lavapipe, real GPUs through Vulkan) all have dot4I8Packed.
        assert!(ternary::dp4_ready(g, &w), "{} lacks packed integer dot products", g.info.name);
        let f32_weight = |name, v: &[f32], r, c| {
            let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            Weight::upload(g, name, DType::F32, r, c, &bytes, 1 << 20).unwrap()
        };
        let (aw, bw) = (f32_weight("A", &a, rank, k), f32_weight("B", &bg, n, rank));
        let (xb, yb) = (g.upload_f32("x", &raw), g.zeros("y", rows * n));
        let nb = g.upload_f32("norm", &norm);
        let records = g.zeros("xq records", rows * ternary::packed_stride(k, rank));
        // One token per workgroup (decode), and tiles of 4 that the rows fill or leave partial (prefill).
        for tile_rows in [1, 4] {
            let mut plan = Plan::new(g);
            let down = HgfDown { a: &[&aw], mid: None, normed_input: normed };
            let quantised = Quantised::Packed(&records);
            let folded = normed.then_some(InputNorm { weight: &nb, eps: 1e-5, unit_offset: false });
            ternary::act_quant_hgf(g, &mut plan, (&xb, quantised), (k, Rows::Tokens), folded, &down).unwrap();
            let call = MatvecDp4 {
                mid_width: rank,
                hgf: Some(HgfUp::new(&bw, 0)),
                tile_rows,
                ..MatvecDp4::new(&records, &w, 0.37, &yb)
            };
            ternary::matvec_dp4(g, &mut plan, &call).unwrap();
            let got = run(&plan, &tokens(0, rows), &yb, rows * n);
            let what = format!("fused hgf {rows}x{k}x{n} rank {rank} normed {normed} tile {tile_rows}");
            assert_close(&got, &want, 1e-4, &what);
        }
        // Each token's low-rank values sit in its record after the words and the factor.
        let stride = ternary::packed_stride(k, rank);
        let got_records = pollster::block_on(g.read_f32(&records, 0, rows * stride)).unwrap();
        let start = ternary::packed_mid(k);
        let got_mid: Vec<f32> = got_records.chunks(stride).flat_map(|r| r[start..start + rank].to_vec()).collect();
        assert_close(&got_mid, &mid_want, 1e-5, "hgf low-rank values");
    }
}

mod rwkv7 {
    use super::*;
    use ternlight_core::reference::rwkv7::{self as reference, Dims, Inputs};
    use ternlight_gpu::kernels::gated_deltanet::ChunkScratch;
    use ternlight_gpu::kernels::rwkv7::Rwkv7;

    /// Raw projections of `tokens` tokens and the layer's parameters.
    struct Case {
        d: Dims,
        r: Vec<f32>,
        w: Vec<f32>,
        k: Vec<f32>,
        a: Vec<f32>,
        v: Vec<f32>,
        v_first: Vec<f32>,
        v_mix: Vec<f32>,
        gate: Vec<f32>,
        params: [Vec<f32>; 5],
    }

    impl Case {
        fn new(rng: &mut Rng, d: Dims, t: usize) -> Case {
            let (hk, hv) = (t * d.heads * d.dk, t * d.heads * d.dv);
            let (kw, vw) = (d.heads * d.dk, d.heads * d.dv);
            let params = [
                random(rng, kw, 1.0),
                random(rng, kw, 1.0),
                random(rng, vw, 1.0),
                random(rng, vw, 0.5),
                random(rng, kw, 1.0),
            ];
            Case {
                d,
                r: random(rng, hk, 1.0),
                w: random(rng, hk, 2.0),
                k: random(rng, hk, 1.0),
                a: random(rng, hk, 2.0),
                v: random(rng, hv, 1.0),
                v_first: random(rng, hv, 1.0),
                v_mix: random(rng, hv, 2.0),
                gate: random(rng, hv, 1.0),
                params,
            }
        }

        /// The packed `[r | w | k | a | b | v]` rows of tokens `range`.
        fn packed(&self, range: std::ops::Range<usize>) -> Vec<f32> {
            let (kw, vw) = (self.d.heads * self.d.dk, self.d.heads * self.d.dv);
            let mut x = Vec::new();
            for t in range {
                for part in [&self.r, &self.w, &self.k, &self.a] {
                    x.extend_from_slice(&part[t * kw..(t + 1) * kw]);
                }
                x.extend(std::iter::repeat_n(0.0, kw));
                x.extend_from_slice(&self.v[t * vw..(t + 1) * vw]);
            }
            x
        }

        /// Reference output of tokens `range`, advancing `state`.
        fn reference(&self, range: std::ops::Range<usize>, state: &mut [f32], mixed: bool) -> Vec<f32> {
            let d = &self.d;
            let (kw, vw) = (d.heads * d.dk, d.heads * d.dv);
            let keys = |x: &[f32]| x[range.start * kw..range.end * kw].to_vec();
            let values = |x: &[f32]| x[range.start * vw..range.end * vw].to_vec();
            let (w, k, a, b) = reference::prepare(
                &keys(&self.w),
                &keys(&self.k),
                &keys(&self.a),
                [&self.params[0], &self.params[1]],
                d.dk,
            );
            let mut v = values(&self.v);
            if mixed {
                reference::mix_values(&mut v, &values(&self.v_first), &values(&self.v_mix));
            }
            let r = keys(&self.r);
            let o = reference::recurrent(&Inputs { r: &r, w: &w, k: &k, v: &v, a: &a, b: &b }, state, d);
            let norm = [&self.params[2][..], &self.params[3], &self.params[4]];
            reference::finish(&o, [&r, &k, &v, &values(&self.gate)], norm, d, 1e-4)
        }

        /// The output of tokens `range` on `g` (and the values it leaves in `v_first`), advancing `state`.
        fn gpu(
            &self,
            g: &Gpu,
            range: std::ops::Range<usize>,
            state: &wgpu::Buffer,
            chunked: bool,
            mixed: bool,
        ) -> (Vec<f32>, Vec<f32>) {
            let d = &self.d;
            let (t, vw) = (range.len(), d.heads * d.dv);
            let x = g.upload_f32("x", &self.packed(range.clone()));
            let values = |v: &[f32]| g.upload_f32("values", &v[range.start * vw..range.end * vw]);
            let (v_first, v_mix, gate) = (values(&self.v_first), values(&self.v_mix), values(&self.gate));
            let p: Vec<wgpu::Buffer> = self.params.iter().map(|p| g.upload_f32("param", p)).collect();
            let out = g.zeros("out", t * vw);
            let call = Rwkv7 { heads: d.heads, dk: d.dk, dv: d.dv, x: &x };
            let mut plan = Plan::new(g);
            call.prepare(g, &mut plan, [&p[0], &p[1]], &v_first, mixed.then_some(&v_mix)).unwrap();
            if chunked {
                call.chunked(g, &mut plan, state, &out, &ChunkScratch::new(g, t, d.heads, d.dk, d.dv)).unwrap();
            } else {
                call.recurrent(g, &mut plan, state, &out).unwrap();
            }
            call.finish(g, &mut plan, &out, &gate, [&p[2], &p[3], &p[4]], 1e-4).unwrap();
            let got = run_on(g, &plan, &tokens(0, t), &out, t * vw);
            (got, pollster::block_on(g.read_f32(&v_first, 0, t * vw)).unwrap())
        }
    }

    #[test]
    fn chunked_and_recurrent_kernels_match_reference_at_awkward_lengths() {
        let mut rng = Rng::new(21);
        // The 16 and 8 column blocks of the second and fourth shapes share keys across a subgroup where the device
        // has subgroups of 8; the fourth's 10 key channels end inside a tile of rows.
        let shapes = [
            Dims { heads: 2, dk: 16, dv: 24 },
            Dims { heads: 1, dk: 64, dv: 64 },
            Dims { heads: 2, dk: 10, dv: 18 },
            Dims { heads: 1, dk: 10, dv: 32 },
        ];
        for d in shapes {
            for t in [1, 63, 64, 65, 150] {
                let c = Case::new(&mut rng, d, t);
                let s0 = random(&mut rng, d.heads * d.dk * d.dv, 0.3);
                for mixed in [false, true] {
                    let mut want_state = s0.clone();
                    let want = c.reference(0..t, &mut want_state, mixed);
                    for (g, chunked) in [(gpu(), false), (gpu(), true), (gpu_without_broadcast(), true)] {
                        let sb = g.upload_f32("state", &s0);
                        let (got, v_first) = c.gpu(g, 0..t, &sb, chunked, mixed);
                        let broadcast = g.tuning.broadcast;
                        let what = format!("{d:?} T={t} chunked={chunked} mixed={mixed} broadcast={broadcast}");
                        assert_close(&got, &want, 2e-4, &what);
                        let state = pollster::block_on(g.read_f32(&sb, 0, s0.len())).unwrap();
                        assert_close(&state, &want_state, 2e-4, &format!("state {what}"));
                        let first = if mixed { c.v_first.clone() } else { c.v.clone() };
                        assert_close(&v_first, &first, 0.0, &format!("v_first {what}"));
                    }
                }
            }
        }
    }

    /// A chunked prefill hands its state to recurrent decode steps: the same outputs as one long prefill.
    #[test]
    fn prefill_state_hands_off_to_decode() {
        let g = gpu();
        let mut rng = Rng::new(22);
        let d = Dims { heads: 2, dk: 16, dv: 16 };
        let c = Case::new(&mut rng, d, 70);
        let mut want_state = vec![0.0; d.heads * d.dk * d.dv];
        let want = c.reference(0..70, &mut want_state, true);
        let sb = g.zeros("state", want_state.len());
        let (mut got, _) = c.gpu(g, 0..67, &sb, true, true);
        for t in 67..70 {
            got.extend(c.gpu(g, t..t + 1, &sb, false, true).0);
        }
        assert_close(&got, &want, 2e-4, "prefill 67 then 3 steps");
    }
}

/// InfLLM-V2 on the GPU: pooled keys, the per-(token, kv head) block lists and the block-sparse attention over
/// them equal the reference's selection and attention, for forwards mixing dense (short-context) and sparse
/// queries, continuing a context, and one-token decode; GQA groups of 3, head dim 20, blocks of 8.
#[test]
fn block_sparse_selection_and_attention_match_reference() {
    use ternlight_core::spec::BlockSparse;
    use ternlight_gpu::kernels::block_sparse::{self, Selection};
    let g = gpu();
    let mut rng = Rng::new(71);
    let cfg = BlockSparse { block: 8, init_blocks: 1, local_blocks: 2, topk: 3, dense_len: 24 };
    let (heads, kv, d) = (6, 2, 20);
    for (pos0, t) in [(0, 77), (53, 29), (130, 1)] {
        let ctx = pos0 + t;
        let q = random(&mut rng, t * heads * d, 1.0);
        let k = random(&mut rng, ctx * kv * d, 1.0);
        let v = random(&mut rng, ctx * kv * d, 1.0);
        let scale = 1.0 / (d as f32).sqrt();
        let mask = AttentionMask { sparse: Some(cfg), ..Default::default() };
        let want = reference::attention::attention(&q, &k, &v, heads, kv, d, pos0, &mask, scale);

        let (qb, kb, vb, ob) =
            (g.upload_f32("q", &q), g.upload_f32("k", &k), g.upload_f32("v", &v), g.zeros("o", q.len()));
        let max_blocks = cfg.blocks(ctx);
        let pooled = g.zeros("pooled", cfg.windows(ctx) * kv * d);
        let scores = g.zeros("block scores", t * kv * max_blocks);
        let lists = g.zeros("blocks", t * kv * cfg.max_selected());
        let counts = g.zeros("counts", t * kv);
        let sel = Selection { cfg, blocks: &lists, counts: &counts };
        // Windows completed before this forward were pooled by earlier ones.
        let mut pool = Plan::new(g);
        block_sparse::pool_keys(g, &mut pool, &cfg, &kb, &pooled, (kv, d)).unwrap();
        pool.submit(g, &tokens(0, ctx), &[], None);

        let mut plan = Plan::new(g);
        block_sparse::select(g, &mut plan, &sel, &qb, &pooled, &scores, (heads, kv, d), (scale, max_blocks)).unwrap();
        let a = Attention {
            sparse: Some(&sel),
            ..Attention::new((&qb, &ob), (&kb, &vb, ctx), (heads, kv, d), &mask, scale)
        };
        attention::prefill(g, &mut plan, &a).unwrap();
        let got = run(&plan, &tokens(pos0, t), &ob, q.len());

        let bits = |b: &wgpu::Buffer, n| -> Vec<u32> {
            pollster::block_on(g.read_f32(b, 0, n)).unwrap().into_iter().map(f32::to_bits).collect()
        };
        let (got_counts, got_lists) = (bits(&counts, t * kv), bits(&lists, t * kv * cfg.max_selected()));
        let mut sparse_rows = 0;
        for tt in 0..t {
            let p = pos0 + tt;
            for h in 0..kv {
                let row = tt * kv + h;
                let want_blocks = reference::block_sparse::select_blocks(
                    &cfg,
                    &q[tt * heads * d..][..heads * d],
                    &k,
                    (heads, kv, h),
                    p,
                    scale,
                );
                let n = got_counts[row] as usize;
                if cfg.dense(p) {
                    assert_eq!(n, 0, "dense query {p}");
                    continue;
                }
                sparse_rows += 1;
                let listed = &got_lists[row * cfg.max_selected()..][..n];
                assert_eq!(listed.iter().map(|&b| b as usize).collect::<Vec<_>>(), want_blocks, "blocks of {p}/{h}");
            }
        }
        assert!(sparse_rows > 0);
        assert_close(&got, &want, 1e-5, &format!("block-sparse prefill pos0 {pos0} t{t}"));

        check_decode(g, &a, (pos0, t, ctx), &want, &format!("block-sparse decode {pos0}"));
    }
}

/// Differential attention (two maps from the halves of q and k, the second subtracted with weight λ) on the
/// prefill and decode paths equals the reference, with GQA, a window, a continued context and odd half widths.
#[test]
fn differential_attention_matches_reference() {
    let g = gpu();
    let mut rng = Rng::new(81);
    for (heads, kv, d, pos0, t, window) in
        [(3, 3, 18, 0, 45, None), (4, 2, 26, 31, 17, Some(9)), (2, 2, 34, 60, 1, None)]
    {
        let ctx = pos0 + t;
        let q = random(&mut rng, t * heads * d, 1.0);
        let k = random(&mut rng, ctx * kv * d, 1.0);
        let v = random(&mut rng, ctx * kv * d, 1.0);
        let (scale, lambda) = ((d as f32 / 2.0).powf(-0.5), 0.37);
        let mask = AttentionMask::causal(window);
        let want = reference::attention::differential(&q, &k, &v, (heads, kv), d, pos0, &mask, (scale, lambda));
        let (qb, kb, vb) = (g.upload_f32("q", &q), g.upload_f32("k", &k), g.upload_f32("v", &v));
        let scores = g.zeros("scores", t * heads * ctx);
        for decode in [false, true] {
            let ob = g.zeros("o", q.len());
            let a = Attention {
                differential: Some(lambda),
                ..Attention::new((&qb, &ob), (&kb, &vb, ctx), (heads, kv, d), &mask, scale)
            };
            let mut plan = Plan::new(g);
            match decode {
                false => attention::prefill(g, &mut plan, &a).unwrap(),
                true => attention::decode(g, &mut plan, &a, &scores, ctx).unwrap(),
            }
            let got = run(&plan, &tokens(pos0, t), &ob, q.len());
            assert_close(&got, &want, 1e-5, &format!("differential h{heads}/{kv} d{d} t{t} decode {decode}"));
        }
    }
}

/// Mixture-of-Head routing and head scaling equal the reference for shared-head counts 0, 1 and 3 and odd sizes.
#[test]
fn mixture_of_head_weights_and_scaling_match_reference() {
    use ternlight_gpu::kernels::moh::Moh;
    let g = gpu();
    let mut rng = Rng::new(101);
    for (heads, shared, top_k, head_dim, t) in [(7, 0, 3, 5, 13), (6, 1, 2, 9, 70), (9, 3, 4, 3, 1)] {
        let width = reference::moh::logit_width(heads, shared);
        let logits = random(&mut rng, t * width, 3.0);
        let attn = random(&mut rng, t * heads * head_dim, 1.0);
        let want_w: Vec<f32> =
            logits.chunks(width).flat_map(|row| reference::moh::head_weights(row, heads, shared, top_k)).collect();
        let want_out: Vec<f32> = attn.iter().enumerate().map(|(i, x)| x * want_w[i / head_dim]).collect();
        let moh = Moh { heads, shared, top_k, head_dim };
        let (lb, ab) = (g.upload_f32("logits", &logits), g.upload_f32("attn", &attn));
        let (wb, ob) = (g.zeros("weights", t * heads), g.zeros("out", attn.len()));
        let mut plan = Plan::new(g);
        moh.route(g, &mut plan, &lb, &wb).unwrap();
        moh.scale(g, &mut plan, &ab, &wb, &ob).unwrap();
        let got = run(&plan, &tokens(0, t), &ob, attn.len());
        let got_w = pollster::block_on(g.read_f32(&wb, 0, t * heads)).unwrap();
        assert_close(&got_w, &want_w, 1e-5, &format!("moh weights h{heads} s{shared} k{top_k}"));
        assert_close(&got, &want_out, 1e-5, &format!("moh scaled h{heads} s{shared} k{top_k}"));
    }
}

#[test]
fn rat_recurrence_and_chunk_attention_match_reference_across_forwards() {
    use ternlight_core::reference::rat::{rat as reference_rat, RatDims, RatState};
    use ternlight_core::spec::{RopeScaling, RopeSpec};
    use ternlight_gpu::kernels::rat::{rat, Rat};
    use ternlight_gpu::kernels::rope::RopeTables;
    let g = gpu();
    let mut rng = Rng::new(29);
    // Partial rotary, a chunk of 5, forwards that start and end mid-chunk, then single tokens.
    let d = RatDims { hidden: 24, head_dim: 6, groups: 2, chunk: 5, rotary_dim: 4 };
    let in_width = 3 * d.hidden + 2 * d.groups * d.head_dim;
    let rope = RopeSpec { theta: 10000.0, rotary_dim: d.rotary_dim, scaling: RopeScaling::None };
    let chunks = 8;
    let (cos, sin) = rope.tables(chunks + 1);
    let tables = RopeTables::new(g, &rope, chunks + 1);
    let bias = random(&mut rng, d.hidden, 1.0);
    let bias_buffer = g.upload_f32("gate bias", &bias);
    let state = g.zeros("rat state", 2 * d.hidden * (1 + chunks));
    let mut reference_state = RatState::default();
    let mut pos = 0;
    for n in [13, 6, 1, 1, 1, 11] {
        let proj = random(&mut rng, n * in_width, 1.5);
        let want = reference_rat(&proj, &bias, &mut reference_state, pos, &d, (&cos, &sin));
        let (pb, scan, out) =
            (g.upload_f32("proj", &proj), g.zeros("scan", n * 2 * d.hidden), g.zeros("out", n * d.hidden));
        let call = Rat {
            hidden: d.hidden,
            head_dim: d.head_dim,
            groups: d.groups,
            chunk: d.chunk,
            proj: &pb,
            gate_bias: &bias_buffer,
            state: &state,
            chunks,
            scan: &scan,
            out: &out,
            rope: &tables,
        };
        let mut plan = Plan::new(g);
        rat(g, &mut plan, &call).unwrap();
        let got = run(&plan, &tokens(pos, n), &out, n * d.hidden);
        assert_close(&got, &want, 1e-4, &format!("RAT forward of {n} tokens at {pos}"));
        pos += n;
    }
}

/// The hybrid memory: forwards of varied sizes (prefill, and decode for single tokens) against the reference's
/// softmax in which every key past the window, sinks apart, weighs `1 + s + s²/2`; the absorb pass fills the Taylor
/// state after each forward from the ring cache, as a session does.
#[test]
fn absorbing_window_matches_reference_across_forwards() {
    let g = gpu();
    let mut rng = Rng::new(41);
    let (heads, kv, d, window, sinks, capacity) = (4, 2, 6, 7, 2, 13);
    let mask = AttentionMask { window: Some(window), sinks, absorb: true, ..Default::default() };
    let rows = mask.cache_rows(capacity, 1000);
    let forwards = [9, 1, 1, 13, 1, 4, 1];
    let ctx: usize = forwards.iter().sum();
    let (k, v) = (random(&mut rng, ctx * kv * d, 1.0), random(&mut rng, ctx * kv * d, 1.0));
    let memory = g.zeros("memory", attention::memory_len(kv, d));
    let (kb, vb) = (g.zeros("k", rows * kv * d), g.zeros("v", rows * kv * d));
    let scale = 1.0 / (d as f32).sqrt();
    let mut pos0 = 0;
    for n in forwards {
        let end = pos0 + n;
        // The cache as appending leaves it: sinks pinned, later positions in the ring.
        for j in pos0..end {
            let row = if j < sinks { j } else { sinks + (j - sinks) % (rows - sinks) };
            let bytes = (row * kv * d * 4) as u64;
            g.queue.write_buffer(&kb, bytes, bytemuck::cast_slice(&k[j * kv * d..][..kv * d]));
            g.queue.write_buffer(&vb, bytes, bytemuck::cast_slice(&v[j * kv * d..][..kv * d]));
        }
        let q = random(&mut rng, n * heads * d, 1.0);
        let want = reference::attention::attention_qk_v(
            &q,
            &k[..end * kv * d],
            &v[..end * kv * d],
            (heads, kv),
            (d, d),
            pos0,
            &mask,
            scale,
            None,
        );
        let (qb, ob, scores) = (g.upload_f32("q", &q), g.zeros("o", q.len()), g.zeros("scores", n * heads * end));
        let a = Attention {
            memory: Some(&memory),
            ..Attention::new((&qb, &ob), (&kb, &vb, rows), (heads, kv, d), &mask, scale)
        };
        let mut plan = Plan::new(g);
        match n {
            1 => attention::decode(g, &mut plan, &a, &scores, end).unwrap(),
            _ => attention::prefill(g, &mut plan, &a).unwrap(),
        }
        attention::absorb(g, &mut plan, &a).unwrap();
        let got = run(&plan, &tokens(pos0, n), &ob, q.len());
        assert_close(&got, &want, 1e-5, &format!("forward of {n} at {pos0}"));
        pos0 = end;
    }
    let plain = AttentionMask { absorb: false, ..mask.clone() };
    let q = random(&mut rng, heads * d, 1.0);
    let with = reference::attention::attention_qk_v(&q, &k, &v, (heads, kv), (d, d), ctx - 1, &mask, scale, None);
    let without = reference::attention::attention_qk_v(&q, &k, &v, (heads, kv), (d, d), ctx - 1, &plain, scale, None);
    let gap = with.iter().zip(&without).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(gap > 1e-3, "the memory changes the output: {gap}");
}

#[test]
fn gpu_sampling_draws_the_reference_token() {
    use ternlight_core::sampling::{sample_row, SamplingParams};
    use ternlight_gpu::kernels::sample::{Draw, TokenSampler};
    let g = gpu();
    let mut rng = Rng::new(11);
    let settings = [
        SamplingParams::default(),
        SamplingParams { repetition_penalty: 1.3, ..Default::default() },
        SamplingParams { temperature: 0.8, ..Default::default() },
        SamplingParams { temperature: 1.0, top_k: 50, ..Default::default() },
        SamplingParams { temperature: 1.0, top_p: 0.9, ..Default::default() },
        SamplingParams { temperature: 0.9, min_p: 0.05, ..Default::default() },
        SamplingParams { temperature: 1.2, top_k: 200, top_p: 0.8, min_p: 0.01, repetition_penalty: 1.2, seed: 0 },
    ];
    for vocab in [1, 300, 20_011] {
        // Two logit rows: the sampler reads the last. A context ring of 6 ids over 8 positions.
        let logits = random(&mut rng, 2 * vocab, 6.0);
        let first: Vec<u32> = (0..5).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
        let second: Vec<u32> = (0..3).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
        let sampler = TokenSampler::new(g, vocab, 6);
        let (ids, logits_buffer) = (g.zeros("ids", 5), g.upload_f32("logits", &logits));
        let mut plan = Plan::new(g);
        sampler.record(g, &mut plan, &ids, &logits_buffer).unwrap();
        let forward = |pos0: usize, batch: &[u32], draw: Option<&Draw>| {
            g.queue.write_buffer(&ids, 0, bytemuck::cast_slice(batch));
            sampler.set(g, draw);
            let step = Step { pos0: pos0 as u32, n_tokens: batch.len() as u32, logit_rows: vec![0, 1] };
            run(&plan, &step, &sampler.token, 1)[0].to_bits()
        };
        forward(0, &first, None);
        let context: Vec<u32> = first[2..].iter().chain(&second).copied().collect();
        for params in &settings {
            for u in [0.0, 0.37, 0.999, rng.next_f32(), rng.next_f32()] {
                let draw = Draw { params, uniform: u, context_start: 2 };
                let got = forward(5, &second, Some(&draw));
                let want = sample_row(&logits[vocab..], &context, params, u);
                assert_eq!(got, want, "vocab {vocab}, {params:?}, u {u}");
            }
        }
    }
}

/// Up to four ternary projections of the same int8 activations in one integer matvec (each with its scale and its
/// own output), and a gated MLP's two ternary products with the activation in one, against the separate
/// reference products, at sizes that are not multiples of the outputs per workgroup; each with and without Hybrid
/// Gated Flow corrections, whose down projections (distinct, and one shared by two projections) the quantiser
/// computes side by side.
#[test]
fn stacked_and_gated_ternary_matvecs_match_reference() {
    stacked_and_gated_ternary_products(gpu(), "default sizes");
}

/// [`stacked_and_gated_ternary_matvecs_match_reference`] on `g` with its tuning, described by `sizes`.
fn stacked_and_gated_ternary_products(g: &Gpu, sizes: &str) {
    // 80 inputs load code words one at a time, 576 four at a time on CPU adapters' tuning (9 quads a row).
    for k in [80, 576] {
        stacked_and_gated_ternary_products_at(g, &format!("{sizes} k {k}"), k);
    }
}

/// [`stacked_and_gated_ternary_products`] at input width `k`.
fn stacked_and_gated_ternary_products_at(g: &Gpu, sizes: &str, k: usize) {
    use ternlight_core::reference::ternary::act_quant;
    use ternlight_gpu::kernels::ternary::{self, Gated, HgfDown, HgfUp, MatvecDp4, Quantised, Stacked};
    let mut rng = Rng::new(29);
    let rows = 2;
    let x = random(&mut rng, rows * k, 3.0);
    let xq_ref = act_quant(&x, k);
    let f32_weight = |v: &[f32], r, c| {
        let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        Weight::upload(g, "f32", DType::F32, r, c, &bytes, g.info.max_binding).unwrap()
    };
    // A ternary projection with its scale, its reference product and a correction `diag(g) B` of `rank`.
    struct Part {
        w: Weight,
        scale: f32,
        product: Vec<f32>,
        bg: Vec<f32>,
        bw: Weight,
    }
    let mut part = |n: usize, scale: f32, rank: usize| {
        let codes: Vec<i8> = (0..n * k).map(|_| (rng.next_f32() * 3.0).floor() as i8 - 1).collect();
        let wf: Vec<f32> = codes.iter().map(|&c| c as f32 * scale).collect();
        let w = Weight::upload_ternary(g, "w", &codes, n, k, g.info.max_binding).unwrap();
        let bg = random(&mut rng, n * rank, 0.3);
        let bw = f32_weight(&bg, n, rank);
        Part { w, scale, product: reference::linear::linear(&xq_ref, &wf, None, k, n), bg, bw }
    };
    let parts = [part(37, 0.3, 3), part(13, 0.7, 5), part(22, 1.1, 2), part(13, 0.5, 3)];
    let up = part(37, 0.9, 5);
    // Down projections of ranks 3, 5 and 2.
    let downs: Vec<Vec<f32>> = [3, 5, 2].iter().map(|r| random(&mut rng, r * k, 0.3)).collect();
    if !ternary::dp4_ready(g, &parts[0].w) {
        return;
    }
    let down_weights: Vec<Weight> = downs.iter().map(|a| f32_weight(a, a.len() / k, k)).collect();
    let xb = g.upload_f32("x", &x);
    let records = g.zeros("xq records", rows * ternary::packed_stride(k, 10));
    // Quantises x, with the low-rank values of `downs` (side by side) when given.
    let quantise = |plan: &mut Plan, downs: Option<&[&Weight]>| {
        let io = (&xb, Quantised::Packed(&records));
        match downs {
            None => ternary::act_quant(g, plan, io, k, Rows::Tokens, None).unwrap(),
            Some(a) => {
                let down = HgfDown { a, mid: None, normed_input: false };
                ternary::act_quant_hgf(g, plan, io, (k, Rows::Tokens), None, &down).unwrap()
            }
        }
    };
    // A part's reference output: its product plus, with a down projection and where its values start, the
    // correction.
    let want = |p: &Part, down: Option<(usize, usize)>| {
        let mut y = p.product.clone();
        if let Some((d, _)) = down {
            let rank = downs[d].len() / k;
            let low = reference::linear::linear(&x, &downs[d], None, k, rank);
            let c = reference::linear::linear(&low, &p.bg, None, rank, p.w.rows);
            y.iter_mut().zip(c).for_each(|(v, c)| *v += c);
        }
        y
    };
    // Which down projection each part reads (and where its values start in a record): none, or its own but for
    // part 3, which shares part 0's (rank 3).
    let corrected = [Some((0, 0)), Some((1, 3)), Some((2, 8)), Some((0, 0))];
    // "shared": parts 0 and 3 (both rank 3) corrected, their diag(g) B stacked into one matrix, bound once.
    let shared = [Some((0, 0)), None, None, Some((0, 0))];
    for (layout, picks) in [("plain", [None; 4]), ("hgf", corrected), ("shared", shared)] {
        for count in [2, 3, 4] {
            let chosen: Vec<&Part> = parts[..count].iter().collect();
            let outs: Vec<wgpu::Buffer> = chosen.iter().map(|p| g.zeros("y", rows * p.w.rows)).collect();
            let with_bg: Vec<usize> = (0..count).filter(|&i| picks[i].is_some()).collect();
            let bgs: Vec<&Weight> = with_bg.iter().map(|&i| &chosen[i].bw).collect();
            let one_bg = (layout == "shared").then(|| Weight::stack_rows(g, "bg", &bgs).unwrap());
            let hgf = |i: usize| {
                picks[i].map(|(_, offset)| match &one_bg {
                    Some(bg) => {
                        let row0 = with_bg.iter().take_while(|&&j| j < i).map(|&j| chosen[j].w.rows).sum();
                        HgfUp { bg, row0, offset }
                    }
                    None => HgfUp::new(&chosen[i].bw, offset),
                })
            };
            let stacked: Vec<Stacked> = (1..count)
                .map(|i| Stacked { w: &chosen[i].w, scale: chosen[i].scale, y: &outs[i], hgf: hgf(i) })
                .collect();
            let distinct: Vec<&Weight> = match layout {
                "plain" => vec![],
                "shared" => vec![&down_weights[0]],
                _ => down_weights[..count.min(3)].iter().collect(),
            };
            let mut plan = Plan::new(g);
            quantise(&mut plan, (!distinct.is_empty()).then_some(&distinct[..]));
            let call = MatvecDp4 {
                stacked: &stacked,
                mid_width: distinct.iter().map(|a| a.rows).sum(),
                hgf: hgf(0),
                tile_rows: if count == 4 { 2 } else { 1 },
                ..MatvecDp4::new(&records, &chosen[0].w, chosen[0].scale, &outs[0])
            };
            if layout == "shared" && count == 4 {
                assert_eq!(ternary::dp4_bindings(&call), 10, "two corrections in one shared binding");
            }
            if ternary::dp4_bindings(&call) > g.info.max_storage_buffers {
                // A smaller device (SwiftShader binds 10) refuses the stack, naming the limit.
                let refused = ternary::matvec_dp4(g, &mut plan, &call).unwrap_err().to_string();
                assert!(refused.contains("storage buffers"), "{refused}");
                continue;
            }
            ternary::matvec_dp4(g, &mut plan, &call).unwrap();
            assert_eq!(plan.dispatch_count(), 2);
            plan.submit(g, &tokens(0, rows), &[], None);
            for (i, (p, y)) in chosen.iter().zip(&outs).enumerate() {
                let got = pollster::block_on(g.read_f32(y, 0, rows * p.w.rows)).unwrap();
                let what = format!("{sizes}: {layout} stacked {count}: part {i}");
                assert_close(&got, &want(p, picks[i]), 1e-5, &what);
            }
        }
    }
    for (act, corrected) in [(Activation::Relu2, false), (Activation::Silu, false), (Activation::Relu2, true)] {
        let y = g.zeros("act", rows * 37);
        let mut plan = Plan::new(g);
        let distinct = [&down_weights[0], &down_weights[1]];
        quantise(&mut plan, corrected.then_some(&distinct[..]));
        let (gate_down, up_down) = match corrected {
            true => (Some((0, 0)), Some((1, 3))),
            false => (None, None),
        };
        let call = MatvecDp4 {
            gated: Some(Gated {
                up: &up.w,
                scale: up.scale,
                act,
                hgf: up_down.map(|(_, offset)| HgfUp::new(&up.bw, offset)),
            }),
            mid_width: if corrected { 8 } else { 0 },
            hgf: gate_down.map(|(_, offset)| HgfUp::new(&parts[0].bw, offset)),
            tile_rows: if corrected { 2 } else { 1 },
            ..MatvecDp4::new(&records, &parts[0].w, parts[0].scale, &y)
        };
        ternary::matvec_dp4(g, &mut plan, &call).unwrap();
        let want = reference::mlp::gated(act, &want(&parts[0], gate_down), &want(&up, up_down));
        plan.submit(g, &tokens(0, rows), &[], None);
        let got = pollster::block_on(g.read_f32(&y, 0, rows * 37)).unwrap();
        assert_close(&got, &want, 1e-5, &format!("{sizes}: gated {act:?}, corrected {corrected}"));
    }
}

/// The bandwidth copy moves every float of a buffer that is no multiple of any workgroup's reach, at each workgroup
/// size the bench times, and refuses a length the kernel's four-float steps cannot cover.
#[test]
fn streaming_copy_moves_every_float() {
    use ternlight_gpu::kernels::copy::copy;
    let g = gpu();
    let mut rng = Rng::new(61);
    let src = random(&mut rng, 4 * 1237, 1.0);
    for wg in [8, 64, 256] {
        let (sb, db) = (g.upload_f32("src", &src), g.zeros("dst", src.len() + 4));
        let mut plan = Plan::new(g);
        copy(g, &mut plan, &sb, &db, wg).unwrap();
        let got = run(&plan, &tokens(0, 1), &db, src.len() + 4);
        assert_eq!(&got[..src.len()], &src[..], "workgroup {wg}");
        assert_eq!(&got[src.len()..], &[0.0; 4], "workgroup {wg} wrote past the source");
    }
    let (odd, db) = (g.upload_f32("odd", &src[..4 * 1237 - 1]), g.zeros("dst", src.len()));
    let err = copy(g, &mut Plan::new(g), &odd, &db, 64).unwrap_err().to_string();
    assert!(err.contains("multiples of 16"), "{err}");
}

/// A plan profiles dispatch by dispatch while one query set holds two timestamps for each (2048 dispatches), and
/// declines beyond that rather than failing on the GPU.
#[test]
fn profilers_cover_plans_one_query_set_can_time() {
    use ternlight_gpu::kernels::copy::copy;
    let g = gpu();
    if !g.info.timestamps {
        return;
    }
    let (src, dst) = (g.zeros("src", 4), g.zeros("dst", 4));
    let mut plan = Plan::new(g);
    for _ in 0..2048 {
        copy(g, &mut plan, &src, &dst, 64).unwrap();
    }
    assert!(plan.profiler(g).is_some());
    copy(g, &mut plan, &src, &dst, 64).unwrap();
    assert!(plan.profiler(g).is_none());
    g.check_errors("recording profilers").unwrap();
}
