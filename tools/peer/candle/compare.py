"""Ternlight beside candle (CPU) on the same random Llama checkpoints, natively, in one run (docs/perf.md).

    cargo build --release -p ternlight-cli
    cargo build --release --manifest-path tools/peer/candle/Cargo.toml
    python3 tools/peer/candle/compare.py > docs/bench_peer_candle.json

For each shape (the browser peer's llama-6x256, SmolLM2-135M's sizes) the candle peer writes the checkpoint once
(target/peer/candle-SHAPE), prefills the ids `ternlight bench` uses and decodes greedily; Ternlight's logits over
the same ids must pick the same tokens, then `ternlight bench` times it at the same context. Standard library only.
"""
import array
import json
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PEER = ROOT / "tools/peer/candle/target/release/ternlight-candle-peer"
TERNLIGHT = ROOT / "target/release/ternlight"
PROMPT, DECODE = 64, 16


def run(*args: str) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout


def greedy_tokens(model: Path, ids: list[int]) -> list[int]:
    """Ternlight's argmax after each of the last DECODE + 1 positions of `ids` (one prefill)."""
    out = model / "ternlight-logits.safetensors"
    run(TERNLIGHT, "--quiet", "logits", "--model", model, "--ids", ",".join(map(str, ids)), "--out", out)
    data = out.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    info = json.loads(data[8 : 8 + n])["logits"]
    t, v = info["shape"]
    start, end = info["data_offsets"]
    logits = array.array("f")
    logits.frombytes(data[8 + n + start : 8 + n + end])
    out.unlink()
    return [max(range(v), key=lambda j: logits[p * v + j]) for p in range(t - DECODE - 1, t)]


def compare(shape: str) -> dict:
    model = ROOT / "target/peer" / f"candle-{shape}"
    if not (model / "model.safetensors").exists():
        run(PEER, "write", model, shape)
    candle = json.loads(run(PEER, "run", model, str(PROMPT), str(DECODE)))
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    prompt = [(i * 7919 + 13) % vocab for i in range(PROMPT)]
    ours = greedy_tokens(model, prompt + candle["tokens"][:-1])
    if ours != candle["tokens"]:
        sys.exit(f"{shape}: greedy tokens differ: ternlight {ours}, candle {candle['tokens']}")
    bench = json.loads(
        run(TERNLIGHT, "--quiet", "bench", "--model", model, "--contexts", str(PROMPT), "--decode-steps", str(DECODE),
            "--compare-tokens", "8", "--reps", "1", "--json")
    )
    at = bench["contexts"][0]
    return {
        "shape": shape,
        "same_greedy_tokens": True,
        "candle": candle,
        "ternlight": {"device": bench["device"]["name"], "decode_ms_per_token": at["decode_ms_per_token"],
                      "prefill_tok_s": at["prefill_tok_s"], "dispatches_per_token": bench["decode_dispatches_per_token"]},
        "decode_ratio_ternlight_over_candle": candle["decode_ms_per_token"] / at["decode_ms_per_token"],
        "prefill_ratio_ternlight_over_candle": at["prefill_tok_s"] / candle["prefill_tok_s"],
    }


if __name__ == "__main__":
    print(json.dumps([compare(shape) for shape in ["llama-6x256", "smollm2-135m"]], indent=2))
