#!/usr/bin/env bash
# Sets up, builds and runs Ternlight natively on the built-in demo model (models/demo), or on TERNLIGHT_MODEL (a
# directory, .gguf file, URL or hub id). Extra arguments go to `ternlight run`, e.g. --prompt "..." --max-tokens 32.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export NODEVICE_SELECT=1
cargo build --release --locked -p ternlight-cli
model=()
if [ -n "${TERNLIGHT_MODEL:-}" ]; then
    model=(--model "$TERNLIGHT_MODEL")
fi
if [ $# -eq 0 ]; then
    set -- --prompt "lighthouse (noun):" --max-tokens 32
fi
exec target/release/ternlight run "${model[@]}" "$@"
