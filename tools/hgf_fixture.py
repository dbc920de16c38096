"""Writes tests/fixtures/bitnet_hgf: a tiny random BitNet b1.58 model (transformers `bitlinear` packing) whose
ternary projections carry Ternlight's Hybrid Gated Flow correction (`lora_A`, `lora_B`, `hgf_gate` next to each
`weight`: y = ternary(x) + g * B(A x)), with logits from an independent float32 numpy forward.

Usage: python3 tools/hgf_fixture.py [OUT_DIR]   (needs numpy; seeded, so the output is reproducible)
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, INTER, VOCAB, RANK = 64, 2, 4, 2, 16, 128, 256, 8
THETA, EPS, SEQ, NEW = 500000.0, 1e-5, 48, 4
# Relative noise the conditioning check puts on every norm's output, and the logit change it may cause.
NOISE, MAX_NOISE_EFFECT = 1e-7, 1e-4
f32 = np.float32


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        dtype = {np.dtype("float32"): "F32", np.dtype("uint8"): "U8", np.dtype("int64"): "I64"}[arr.dtype]
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def pack_rows(codes):
    """transformers bitlinear: byte row r holds output rows r, r+R, r+2R, r+3R in bit pairs, code = t + 1."""
    out, inp = codes.shape
    r = out // 4
    packed = np.zeros((r, inp), np.uint8)
    for part in range(4):
        packed |= ((codes[part * r:(part + 1) * r] + 1).astype(np.uint8) << (2 * part))
    return packed


def rms_norm(x, w, noise=None):
    mean_square = np.cumsum(x * x, axis=-1, dtype=f32)[..., -1:] / f32(x.shape[-1])
    y = x * (f32(1.0) / np.sqrt(mean_square + f32(EPS))) * w
    if noise is not None:
        y = y * (1 + noise.standard_normal(y.shape) * NOISE)
    return y.astype(f32)


def act_quant(x):
    s = f32(127.0) / np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), f32(1e-5))
    return (np.clip(np.round(x * s), -128, 127) / s).astype(f32)


def matmul(x, w):
    """x @ w.T summed sequentially in float32, as Ternlight's CPU reference sums (BLAS orders sums differently, and a
    last-bit difference can flip an int8 activation rounding downstream)."""
    return np.cumsum(x[:, None, :] * w[None, :, :], axis=-1, dtype=f32)[..., -1]


def bitlinear(x, p):
    y = matmul(act_quant(x), p["codes"].astype(f32)) / p["scale"]
    return (y + p["gate"] * matmul(matmul(x, p["A"]), p["B"])).astype(f32)


def rope(x, positions):
    inv = f32(1.0) / (f32(THETA) ** (np.arange(0, HEAD_DIM, 2, dtype=f32) / f32(HEAD_DIM)))
    ang = positions[:, None].astype(f32) * inv[None, :]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)
    half = HEAD_DIM // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return (x * cos[:, None, :] + rotated * sin[:, None, :]).astype(f32)


def forward(ids, w, noise=None):
    t = len(ids)
    x = w["model.embed_tokens.weight"][ids]
    pos = np.arange(t)
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        h = rms_norm(x, w[f"{p}.input_layernorm.weight"], noise)
        q = bitlinear(h, w[f"{p}.self_attn.q_proj"]).reshape(t, HEADS, HEAD_DIM)
        k = bitlinear(h, w[f"{p}.self_attn.k_proj"]).reshape(t, KV_HEADS, HEAD_DIM)
        v = bitlinear(h, w[f"{p}.self_attn.v_proj"]).reshape(t, KV_HEADS, HEAD_DIM)
        q, k = rope(q, pos), rope(k, pos)
        out = np.zeros((t, HEADS, HEAD_DIM), f32)
        for hd in range(HEADS):
            kv = hd // (HEADS // KV_HEADS)
            scores = (q[:, hd] @ k[:, kv].T) / f32(np.sqrt(HEAD_DIM))
            scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            out[:, hd] = (probs / probs.sum(-1, keepdims=True)) @ v[:, kv]
        o = rms_norm(out.reshape(t, -1), w[f"{p}.self_attn.attn_sub_norm.weight"], noise)
        x = x + bitlinear(o, w[f"{p}.self_attn.o_proj"])
        h = rms_norm(x, w[f"{p}.post_attention_layernorm.weight"], noise)
        a = np.maximum(bitlinear(h, w[f"{p}.mlp.gate_proj"]), 0) ** 2 * bitlinear(h, w[f"{p}.mlp.up_proj"])
        a = rms_norm(a.astype(f32), w[f"{p}.mlp.ffn_sub_norm.weight"], noise)
        x = x + bitlinear(a, w[f"{p}.mlp.down_proj"])
    x = rms_norm(x, w["model.norm.weight"])
    return (x @ w["model.embed_tokens.weight"].T).astype(f32)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../tests/fixtures/bitnet_hgf")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(1234)
    rand = lambda *shape, s=0.1: (rng.standard_normal(shape) * s).astype(f32)
    w = {"model.embed_tokens.weight": rand(VOCAB, HIDDEN, s=0.02), "model.norm.weight": 1 + rand(HIDDEN)}
    tensors = {}
    shapes = {"self_attn.q_proj": (HEADS * HEAD_DIM, HIDDEN), "self_attn.k_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
              "self_attn.v_proj": (KV_HEADS * HEAD_DIM, HIDDEN), "self_attn.o_proj": (HIDDEN, HEADS * HEAD_DIM),
              "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        for norm, dim in [("input_layernorm", HIDDEN), ("post_attention_layernorm", HIDDEN),
                          ("self_attn.attn_sub_norm", HIDDEN), ("mlp.ffn_sub_norm", INTER)]:
            w[f"{p}.{norm}.weight"] = 1 + rand(dim)
        for name, (out, inp) in shapes.items():
            codes = rng.integers(-1, 2, size=(out, inp)).astype(np.int8)
            layer = {"codes": codes, "scale": f32(rng.uniform(2, 6)), "A": rand(RANK, inp), "B": rand(out, RANK),
                     "gate": rand(out, s=0.5)}
            w[f"{p}.{name}"] = layer
            tensors[f"{p}.{name}.weight"] = pack_rows(codes)
            tensors[f"{p}.{name}.weight_scale"] = np.array([layer["scale"]], f32)
            tensors[f"{p}.{name}.lora_A"] = layer["A"]
            tensors[f"{p}.{name}.lora_B"] = layer["B"]
            tensors[f"{p}.{name}.hgf_gate"] = layer["gate"]
    tensors.update({k: v for k, v in w.items() if isinstance(v, np.ndarray)})
    save_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    config = {"model_type": "bitnet", "architectures": ["BitNetForCausalLM"], "hidden_size": HIDDEN,
              "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
              "intermediate_size": INTER, "vocab_size": VOCAB, "hidden_act": "relu2", "rms_norm_eps": EPS,
              "max_position_embeddings": 512, "tie_word_embeddings": True,
              "rope_parameters": {"rope_theta": THETA, "rope_type": "default"},
              "quantization_config": {"quant_method": "bitnet", "linear_class": "bitlinear",
                                      "quantization_mode": "offline", "hgf": {"rank": RANK, "gate": "channel"}}}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    ids = rng.integers(0, VOCAB, size=SEQ)
    logits = forward(ids, w)
    # Int8 activations make a logit jump wherever a value sits on a rounding boundary. A fixture whose logits move
    # under float-order-sized noise would test summation order rather than the implementation, so refuse one.
    effect = max(np.abs(forward(ids, w, np.random.default_rng(trial)) - logits).max() for trial in range(4))
    if effect > MAX_NOISE_EFFECT:
        sys.exit(f"ill-conditioned fixture: {NOISE:g} relative noise moves the logits by {effect:.2e}")
    gen, gen_logits = list(ids), []
    for _ in range(NEW):
        step = forward(np.array(gen), w)[-1]
        gen_logits.append(step)
        gen.append(int(np.argmax(step)))
    save_safetensors(os.path.join(out_dir, "oracle.safetensors"), {
        "input_ids": np.array([ids], np.int64), "logits": logits[None], "gen_ids": np.array([gen[:-1]], np.int64),
        "gen_logits": np.array(gen_logits, f32)})
    tokenizer = os.path.join(os.path.dirname(out_dir.rstrip("/")), "llama", "tokenizer.json")
    if os.path.exists(tokenizer):
        shutil.copy(tokenizer, os.path.join(out_dir, "tokenizer.json"))
    print(f"wrote {out_dir}: {len(tensors)} tensors, logits absmax {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    main()
