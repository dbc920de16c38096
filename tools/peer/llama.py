"""A random-init Llama for the browser peer comparison (docs/perf.md): written as a Hugging Face directory that
Ternlight loads (config.json, model.safetensors, tokenizer.json) and, beside it, exported to ONNX with optimum in the
layout transformers.js reads (onnx/model.onnx with past key values). Both runtimes then run the same weights.

    /work/venv-train/bin/python tools/peer/llama.py target/peer/llama-6x256

The venv needs torch, optimum-onnx (which picks its transformers), onnx and onnxruntime (PyPI). The tokenizer is
the demo model's BPE.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[2]


def main(out: Path) -> None:
    torch.manual_seed(0)
    demo = ROOT / "models/demo"
    vocab = len(json.loads((demo / "tokenizer.json").read_text())["model"]["vocab"])
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(demo / name, out / name)
    onnx = out / "onnx-export"
    subprocess.run(
        ["optimum-cli", "export", "onnx", "--model", str(out), "--task", "text-generation-with-past", str(onnx)],
        check=True,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    (out / "onnx").mkdir(exist_ok=True)
    for f in onnx.glob("*.onnx*"):
        shutil.move(str(f), out / "onnx" / f.name)
    shutil.rmtree(onnx)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
