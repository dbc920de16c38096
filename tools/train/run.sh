#!/usr/bin/env bash
# Reproduces the demo model (models/demo) and its HGF table (docs/demo-model.md) from Debian and PyPI packages only:
# builds the corpus, trains the tokenizer, trains the full-precision, ternary and ternary + HGF variants at the same
# size and steps (TABLE_STEPS, in parallel, one thread each), prints the table, then trains the shipped model (the HGF
# variant for SHIP_STEPS) and exports it with its oracle logits. Under two hours on 2 cores (here: 35 minutes for the
# table's runs, 75 for the shipped one).
# Usage: tools/train/run.sh [WORK_DIR]   (WORK_DIR defaults to tools/train/work)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$here/work}"
table_steps="${TABLE_STEPS:-3000}"
ship_steps="${SHIP_STEPS:-8000}"
mkdir -p "$work"
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
  # PyPI's torch wheel carries CUDA libraries (~5 GB); it runs on the CPU.
  "$work/venv/bin/pip" install -q torch==2.15.0 tokenizers==0.23.3 safetensors==0.8.0 numpy==2.4.6
fi
py() { PYTHONPATH="$here" "$work/venv/bin/python" "$@"; }
py "$here/corpus.py" "$work/data"
py "$here/tokenizer.py" "$work/data" "$work/tokenizer.json"
train=(--data "$work/data" --tokenizer "$work/tokenizer.json")
for mode in float ternary hgf; do
  py "$here/train.py" --mode "$mode" "${train[@]}" --out "$work/$mode" --steps "$table_steps" --threads 1 &
done
wait
py "$here/report.py" "$work"
py "$here/train.py" --mode hgf "${train[@]}" --out "$work/ship" --steps "$ship_steps" --threads 1 \
  --export "$here/../../models/demo"
