#!/usr/bin/env bash
# Runs each fuzz target for a number of executions (default two million), each growing its corpus under
# fuzz/corpus/<target>; a crash leaves its input under fuzz/artifacts/<target>. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). Usage: fuzz/run.sh [RUNS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-2000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config safetensors gguf tokenizer chat_template)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -runs="$runs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 2>&1 | grep -E "^(Done|stat::number_of_executed_units|==|SUMMARY|.*panicked)" || true
done
