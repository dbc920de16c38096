#!/usr/bin/env python3
"""Writes tests/fixtures/malformed: a tiny valid model (HF directory and GGUF file) and, beside it, malformed
variants of every file a model is made of, each with the words its error must contain.

Standard library only, deterministic: running it again rewrites the same bytes. `crates/cli/tests/malformed.rs`
runs `ternlight run` on every case and checks the one-line error, the exit code, the time and the memory.

Layout: base/ (config.json, tokenizer.json, model.safetensors), base.gguf, and cases/<name>/ holding the files
that replace base's (or a model.gguf run on its own) plus `expect` (a substring of the error).
"""
import json
import os
import shutil
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "malformed")
TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "llama", "tokenizer.json")

CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "num_hidden_layers": 1, "vocab_size": 256,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
}

SHAPES = [
    ("model.embed_tokens.weight", [256, 8]),
    ("model.layers.0.input_layernorm.weight", [8]),
    ("model.layers.0.self_attn.q_proj.weight", [8, 8]),
    ("model.layers.0.self_attn.k_proj.weight", [4, 8]),
    ("model.layers.0.self_attn.v_proj.weight", [4, 8]),
    ("model.layers.0.self_attn.o_proj.weight", [8, 8]),
    ("model.layers.0.post_attention_layernorm.weight", [8]),
    ("model.layers.0.mlp.gate_proj.weight", [16, 8]),
    ("model.layers.0.mlp.up_proj.weight", [16, 8]),
    ("model.layers.0.mlp.down_proj.weight", [8, 16]),
    ("model.norm.weight", [8]),
]


def bf16_values(n, seed):
    """n deterministic small bf16 values (an LCG), as bytes."""
    out, x = bytearray(), seed
    for _ in range(n):
        x = (x * 1103515245 + 12345) % (1 << 31)
        f = struct.unpack("<I", struct.pack("<f", (x / (1 << 31) - 0.5) * 0.2))[0]
        out += struct.pack("<H", f >> 16)
    return bytes(out)


def tensors():
    """(name, dtype, shape, bytes) of the base model."""
    out = []
    for i, (name, shape) in enumerate(SHAPES):
        n = 1
        for d in shape:
            n *= d
        data = bf16_values(n, i + 1) if len(shape) == 2 else struct.pack("<H", 0x3F80) * n
        out.append((name, "BF16", shape, data))
    return out


def safetensors(entries, header_extra=None):
    """A safetensors file of (name, dtype, shape, bytes); `header_extra` edits the header dict before writing."""
    header, offset, data = {}, 0, b""
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    if header_extra:
        header_extra(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(entries, metadata, alignment=32, tensor_count=None, offsets=None, last_offset=None):
    """A GGUF v3 file carrying `metadata` (key -> str) and BF16 tensors (dims innermost first, as ggml stores)."""
    head = b"GGUF" + struct.pack("<I", 3)
    head += struct.pack("<QQ", len(entries) if tensor_count is None else tensor_count, len(metadata))
    for key, value in metadata:
        head += gguf_string(key)
        if isinstance(value, str):
            head += struct.pack("<I", 8) + gguf_string(value)
        else:
            head += struct.pack("<I", 4) + struct.pack("<I", value)
    data, offset, infos = b"", 0, b""
    for i, (name, _, shape, raw) in enumerate(entries):
        at = offset if offsets is None else offsets[i]
        at = last_offset if last_offset is not None and i == len(entries) - 1 else at
        infos += gguf_string(name) + struct.pack("<I", len(shape))
        for d in reversed(shape):
            infos += struct.pack("<Q", d)
        infos += struct.pack("<I", 30) + struct.pack("<Q", at)
        padded = raw + b"\0" * (-len(raw) % alignment)
        data += padded
        offset += len(padded)
    header = head + infos
    return header + b"\0" * (-len(header) % alignment) + data


def gguf_metadata(config=CONFIG):
    return [("general.architecture", "llama"), ("ternlight.config", json.dumps(config)),
            ("ternlight.tokenizer", open(TOKENIZER).read())]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def case(name, expect, files):
    for file, data in files.items():
        write(os.path.join(ROOT, "cases", name, file), data)
    write(os.path.join(ROOT, "cases", name, "expect"), expect + "\n")


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    base = tensors()
    st = safetensors(base)
    write(os.path.join(ROOT, "base", "config.json"), json.dumps(CONFIG, indent=1))
    shutil.copy(TOKENIZER, os.path.join(ROOT, "base", "tokenizer.json"))
    write(os.path.join(ROOT, "base", "model.safetensors"), st)
    good_gguf = gguf(base, gguf_metadata())
    write(os.path.join(ROOT, "base.gguf"), good_gguf)

    # safetensors: truncated at every section boundary
    header_len = struct.unpack("<Q", st[:8])[0]
    data_start = 8 + header_len
    cuts = {"empty": 0, "in_length": 5, "after_length": 8, "in_header": 8 + header_len // 2, "after_header": data_start}
    offset = data_start
    for name, _, _, raw in base[:-1]:
        offset += len(raw)
        cuts["after_" + name.split(".")[-2] if "layers" in name else "after_" + name.split(".")[1]] = offset
    cuts["one_byte_short"] = len(st) - 1
    for label, at in cuts.items():
        expect = "shorter than the 8-byte" if at < 8 else ("runs past the end" if at < data_start else "truncated")
        case("safetensors_cut_" + label, expect, {"model.safetensors": st[:at]})
    case("safetensors_header_past_end", "runs past the end",
         {"model.safetensors": struct.pack("<Q", 1 << 40) + st[8:]})
    case("safetensors_header_not_json", "header", {"model.safetensors": struct.pack("<Q", 8) + b"{nope!!}" + st[data_start:]})

    def overlap(h):
        h["model.norm.weight"]["data_offsets"] = [0, 16]
    case("safetensors_offsets_overlap", "header", {"model.safetensors": safetensors(base, overlap)})

    def outside(h):
        h["model.norm.weight"]["data_offsets"][1] += 1 << 30
    case("safetensors_offsets_outside", "header", {"model.safetensors": safetensors(base, outside)})

    def overflow(h):
        h["model.norm.weight"]["shape"] = [1 << 62, 1 << 62, 16]
    case("safetensors_shape_overflows", "header", {"model.safetensors": safetensors(base, overflow)})
    q = "model.layers.0.self_attn.q_proj.weight"
    swap = lambda f: [f(e) if e[0] == q else e for e in base]
    case("safetensors_dtype_mismatch", q, {"model.safetensors": safetensors(swap(lambda e: (e[0], "U8", [8, 16], e[3])))})
    case("safetensors_unknown_dtype", q, {"model.safetensors": safetensors(swap(lambda e: (e[0], "F8_E4M3", [8, 16], e[3])))})
    case("safetensors_shape_mismatch", q, {"model.safetensors": safetensors(swap(lambda e: (e[0], "BF16", [16, 4], e[3])))})
    case("safetensors_missing_tensor", q, {"model.safetensors": safetensors([e for e in base if e[0] != q])})
    nan = lambda e: (e[0], "BF16", e[2], e[3][:10] + struct.pack("<H", 0x7FC0) + e[3][12:])
    case("safetensors_nan_weight", "NaN or infinity", {"model.safetensors": safetensors(swap(nan))})
    inf = lambda e: (e[0], "BF16", e[2], e[3][:10] + struct.pack("<H", 0xFF80) + e[3][12:])
    case("safetensors_inf_weight", "NaN or infinity", {"model.safetensors": safetensors(swap(inf))})

    # config.json
    def config(name, expect, **edits):
        c = dict(CONFIG)
        for k, v in edits.items():
            if v is None:
                c.pop(k)
            else:
                c[k] = v
        case("config_" + name, expect, {"config.json": json.dumps(c)})
    case("config_not_json", "invalid JSON", {"config.json": '{"model_type": "llama",'})
    config("unknown_architecture", "unsupported model_type `gpt-9000`", model_type="gpt-9000")
    config("unknown_layer_type", "quantum_attention", layer_types=["quantum_attention"])
    config("absurd_hidden_size", "hidden_size", hidden_size=1 << 50)
    config("absurd_layer_count", "num_hidden_layers", num_hidden_layers=10**9)
    config("negative_size", "intermediate_size", intermediate_size=-16)
    config("missing_field", "hidden_size", hidden_size=None)
    config("tensor_over_cap", "element cap", vocab_size=1 << 26, hidden_size=1 << 26, head_dim=1 << 25)
    config("vocab_mismatch", "embedding has only 200 rows", vocab_size=200)

    # tokenizer.json
    tok = json.load(open(TOKENIZER))
    case("tokenizer_not_json", "tokenizer.json", {"tokenizer.json": '{"model": '})
    tok_big = json.loads(json.dumps(tok))
    tok_big["added_tokens"] = [{"id": 300, "content": "<|extra|>", "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": True}]
    case("tokenizer_vocab_mismatch", "embedding has only 256 rows", {"tokenizer.json": json.dumps(tok_big)})
    tok_kind = json.loads(json.dumps(tok))
    tok_kind["model"]["type"] = "Quantum"
    case("tokenizer_unknown_model", "tokenizer.json", {"tokenizer.json": json.dumps(tok_kind)})

    # GGUF: truncated at every section boundary, then lying headers
    meta = gguf_metadata()
    after_counts = 24
    after_meta = after_counts + sum(len(gguf_string(k)) + 4 + len(gguf_string(v)) for k, v in meta)
    infos = sum(len(gguf_string(n)) + 4 + 8 * len(s) + 4 + 8 for n, _, s, _ in base)
    data_start = after_meta + infos + (-(after_meta + infos) % 32)
    cuts = {"in_magic": 2, "after_magic": 4, "after_version": 8, "after_tensor_count": 16,
            "after_metadata_count": after_counts, "in_metadata": after_counts + 40, "after_metadata": after_meta,
            "in_tensor_infos": after_meta + infos // 2, "after_tensor_infos": after_meta + infos,
            "at_data": data_start, "in_data": data_start + 100, "in_last_tensor": len(good_gguf) - 32 + 8}
    for label, at in cuts.items():
        expect = "outside" if at >= after_meta + infos else "runs past the end"
        case("gguf_cut_" + label, expect, {"model.gguf": good_gguf[:at]})
    case("gguf_bad_magic", "bad magic", {"model.gguf": b"GGML" + good_gguf[4:]})
    case("gguf_tensor_count_absurd", "exceed the caps", {"model.gguf": gguf(base, meta, tensor_count=1 << 40)})
    case("gguf_tensors_overlap", "overlap", {"model.gguf": gguf(base, meta, offsets=[0] * len(base))})
    case("gguf_tensor_outside", "outside", {"model.gguf": gguf(base, meta, last_offset=1 << 40)})
    huge = good_gguf[:after_counts] + struct.pack("<Q", 1 << 60) + good_gguf[after_counts + 8:]
    case("gguf_string_absurd", "cap", {"model.gguf": huge})
    case("gguf_bad_alignment", "alignment", {"model.gguf": gguf(base, meta + [("general.alignment", 3)])})
    overflow_dims = gguf([(n, d, [1 << 40, 1 << 40] if n == q else s, r) for n, d, s, r in base], meta)
    case("gguf_dims_overflow", "overflow", {"model.gguf": overflow_dims})
    case("gguf_nan_weight", "NaN or infinity", {"model.gguf": gguf(swap(nan), meta)})
    unknown = gguf(base, gguf_metadata(dict(CONFIG, model_type="gpt-9000")))
    case("gguf_unknown_architecture", "gpt-9000", {"model.gguf": unknown})


if __name__ == "__main__":
    main()
