#!/usr/bin/env bash
# Reproduces the demo model (models/demo) and its HGF table (docs/demo-model.md) from Debian and PyPI packages only:
# builds the corpus, trains the tokenizer, trains the float, ternary and ternary + HGF variants at the same size and
# steps (in parallel, one thread each), exports the HGF one with its oracle logits, and prints the table.
# Usage: tools/train/run.sh [WORK_DIR]   (WORK_DIR defaults to tools/train/work; STEPS=3000 by default)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$here/work}"
steps="${STEPS:-3000}"
mkdir -p "$work"
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
  # PyPI's torch wheel carries CUDA libraries (~5 GB); it runs on the CPU.
  "$work/venv/bin/pip" install -q torch==2.15.0 tokenizers==0.23.3 safetensors==0.8.0 numpy==2.4.6
fi
py() { PYTHONPATH="$here" "$work/venv/bin/python" "$@"; }
py "$here/corpus.py" "$work/data"
py "$here/tokenizer.py" "$work/data" "$work/tokenizer.json"
for mode in float ternary hgf; do
  export_args=()
  [ "$mode" = hgf ] && export_args=(--export "$here/../../models/demo")
  py "$here/train.py" --mode "$mode" --data "$work/data" --tokenizer "$work/tokenizer.json" --out "$work/$mode" \
    --steps "$steps" --threads 1 "${export_args[@]}" &
done
wait
py "$here/report.py" "$work"
