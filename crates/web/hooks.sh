#!/usr/bin/env bash
# Trunk hooks (Trunk.toml). pre: build the engine package (web/pkg) the page's worker runs. post: copy it and the
# embedded default model into the staged site, and give the page its Content Security Policy (web/csp.mjs).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
case "$1" in
  pre) "$root/web/build-pkg.sh" ;;
  post)
    mkdir -p "$TRUNK_STAGING_DIR/pkg" "$TRUNK_STAGING_DIR/models/default"
    cp "$root"/web/pkg/*.js "$root"/web/pkg/*.wasm "$TRUNK_STAGING_DIR/pkg/"
    # The default is the demo model trained by tools/train (models/demo, about 1.5 MB).
    cp "$root"/models/demo/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json} \
      "$TRUNK_STAGING_DIR/models/default/"
    node "$root/web/csp.mjs" "$TRUNK_STAGING_DIR/index.html"
    ;;
esac
