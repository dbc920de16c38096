#!/usr/bin/env bash
# Builds the embeddable package into web/pkg: the runtime for wasm32 (release), bound by wasm-bindgen (the CLI
# scripts/setup.sh installs at the crate's version) into an ES module, plus the package's own JavaScript (web/package:
# the Engine API, its Web Worker, TypeScript declarations, README) and package.json. Nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --target wasm32-unknown-unknown -p ternlight-runtime
rm -rf web/pkg
wasm-bindgen --target web --out-dir web/pkg target/wasm32-unknown-unknown/release/ternlight_runtime.wasm
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
cat > web/pkg/package.json <<JSON
{
  "name": "ternlight",
  "version": "$version",
  "description": "Run efficient LLMs (hybrid linear attention, ternary weights) in the browser on WebGPU",
  "license": "Apache-2.0",
  "type": "module",
  "main": "index.js",
  "types": "index.d.ts",
  "files": ["index.js", "index.d.ts", "host.js", "worker.js", "ternlight_runtime.js", "ternlight_runtime.d.ts", "ternlight_runtime_bg.wasm", "README.md"]
}
JSON
cp web/package/{README.md,index.js,index.d.ts,host.js,worker.js} web/pkg/
echo "web/pkg: $(du -h web/pkg/ternlight_runtime_bg.wasm | cut -f1) wasm"
