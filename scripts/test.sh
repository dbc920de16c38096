#!/usr/bin/env bash
# Every test: setup (skipped when done), the whole workspace's tests on the native GPU path (lavapipe when
# there is no GPU), the check that the GPU and runtime crates build for the browser, the runtime's browser
# tests in headless Chromium's WebGPU, the npm package (built, embedded by the example page, its API, the browser
# bench against the native one), and the web app built by trunk, all there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export NODEVICE_SELECT=1
cargo test --workspace --locked
cargo check --locked --target wasm32-unknown-unknown -p ternlight-gpu -p ternlight-runtime
WASM_BINDGEN_TEST_TIMEOUT=600 CHROMEDRIVER=/usr/bin/chromedriver cargo test --locked --target wasm32-unknown-unknown -p ternlight-runtime --test browser
web/build-pkg.sh
(cd web/e2e && npm ci --silent --no-audit --no-fund)
node web/e2e/example.test.mjs
node web/e2e/package.test.mjs
node web/e2e/bench.mjs
(cd crates/web && trunk build --release)
node web/e2e/app.test.mjs
