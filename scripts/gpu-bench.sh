#!/usr/bin/env bash
# Issue 8's real-GPU run, prepared for a session that the `device` tool lends a GPU: one call of its `run` with
# `carry: ["target/release/ternlight", ".gl"]` (the x86-64 release binary built here, and the Vulkan loader
# packages fetched as /work/.library/device/README.md says) and the command `bash scripts/gpu-bench.sh`.
# It tunes the kernels, then writes each benchmark's JSON report under $OUT, each bounded so the whole run fits
# one call; record the figures in docs/perf.md beside the lavapipe ones.
set -u
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
bin=target/release/ternlight
out=${OUT:-/tmp/gpu-bench}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
timeout 90 "$bin" tune --reps 10 --json > "$out/tune.json" 2> "$out/tune.err"
timeout 50 "$bin" bench-linear --reps 50 --json > "$out/bench_linear.json" 2> "$out/bench_linear.err"
timeout 15 "$bin" bench-state --reps 20 --json > "$out/bench_state.json" 2> "$out/bench_state.err"
timeout 30 "$bin" bench-linear --tokens 64 --reps 20 --json > "$out/bench_linear_prefill.json" \
    2> "$out/bench_linear_prefill.err"
timeout 60 "$bin" bench-attention --contexts 1024,4096,16384 --reps 20 --json > "$out/bench_attention.json" \
    2> "$out/bench_attention.err"
for model in smollm2-135m gemma3-270m qwen3.5-0.8b bitnet-b1.58-2b4t fla-gdn-340m-hybrid fla-gla-340m rwkv7-0.4b; do
    timeout 47 "$bin" --quiet bench --synthetic "$model" --contexts 64,1024,4096 --decode-steps 16 \
        --compare-tokens 1024 --reps 2 --json > "$out/bench_$model.json" 2> "$out/bench_$model.err"
done
ls -l "$out"
