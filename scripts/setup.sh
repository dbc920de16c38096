#!/usr/bin/env bash
# Installs what building and testing Ternlight needs on Debian, skipping whatever is already present:
# Mesa lavapipe (software Vulkan, so wgpu has an adapter without a GPU), Chromium and ChromeDriver (the browser
# tests' WebGPU), Node.js when absent (page tests), the wasm32 Rust target, wasm-bindgen-cli at the wasm-bindgen
# crate's version (its test runner drives the browser) and trunk (builds the web app); both built from crates.io,
# nothing downloaded prebuilt.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (rustup, toolchain >= 1.87) first" >&2
    exit 1
fi

missing=()
for pkg in mesa-vulkan-drivers libvulkan1 chromium chromium-driver; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Node.js runs the page tests (any recent version; Debian's packages when none is installed).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "setup: adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi

# The wasm-bindgen version Cargo.lock pins; the CLI must match it exactly.
bindgen=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/"/, "", $3); print $3}' Cargo.lock)
if [ "$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}')" != "$bindgen" ]; then
    echo "setup: installing wasm-bindgen-cli $bindgen (a few minutes, once)"
    cargo install wasm-bindgen-cli --version "$bindgen"
fi

# trunk builds the web app (crates/web); 0.21 is the newest release this toolchain builds.
if [ "$(trunk --version 2>/dev/null)" != "trunk 0.21.14" ]; then
    echo "setup: installing trunk 0.21.14 (a few minutes, once)"
    cargo install trunk --version 0.21.14 --locked
fi
