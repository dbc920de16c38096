#!/usr/bin/env bash
# Sets up, builds and runs Ternlight on the default model (the bundled Gemma 3 fixture until the web app and a
# trained demo model land). Extra arguments go to `ternlight run`, e.g. --prompt "..." --max-tokens 32.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export NODEVICE_SELECT=1
cargo build --release --locked -p ternlight-cli
model="${TERNLIGHT_MODEL:-tests/fixtures/gemma3}"
if [ $# -eq 0 ]; then
    set -- --prompt "Ternlight runs efficient LLMs on WebGPU." --max-tokens 32
fi
exec target/release/ternlight run --model "$model" "$@"
