#!/usr/bin/env bash
# The main job: set up (scripts/setup.sh), build the web app with trunk (crates/web: the page, the engine package
# its worker runs, and the embedded default model), and serve it on http://127.0.0.1:${PORT:-8080}/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
(cd crates/web && trunk build --release)
exec node web/serve.mjs crates/web/dist "${PORT:-8080}"
