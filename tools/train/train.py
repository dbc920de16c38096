"""Trains one variant of the demo model on the corpus and, with --export, writes it as an HF-format checkpoint that
Ternlight loads like any other (config.json, model.safetensors, tokenizer.json) plus oracle.safetensors: the logits
this PyTorch model gives for a validation prompt and for its own greedy continuation, which Ternlight's tests compare.

Usage: python train.py --mode float|ternary|hgf --data DATA_DIR --tokenizer TOKENIZER_JSON --out RUN_DIR
                       [--steps N] [--threads N] [--export MODEL_DIR]
Seeded: the same arguments and thread count give the same model.
"""
import argparse
import copy
import json
import math
import os
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer

import model as M

CONFIG = {
    "architectures": ["Qwen3_5ForCausalLM"],
    "model_type": "qwen3_5_text",
    "vocab_size": 2048,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 32,
    "linear_value_head_dim": 32,
    "linear_conv_kernel_dim": 4,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "max_position_embeddings": 2048,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "attention_bias": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
# The model never saw chats: its chat template only joins the messages' text.
TOKENIZER_CONFIG = {
    "eos_token": "<|endoftext|>",
    "bos_token": "<|endoftext|>",
    "chat_template": "{% for message in messages %}{{ message['content'] }}{% if not loop.last %}\n{% endif %}{% endfor %}",
}
HGF_RANK = 8
SEQ, BATCH, WARMUP, LR, MIN_LR_FRACTION, WEIGHT_DECAY, SEED = 128, 16, 100, 2e-3, 0.1, 0.01, 1234
ORACLE_PROMPT_TOKENS, ORACLE_NEW_TOKENS, ORACLE_CANDIDATES = 48, 8, 400


def encode(tok, path):
    """The split as one id stream, each document preceded by <|endoftext|> (id 0)."""
    with open(path) as f:
        docs = f.read().split("\n")[:-1]
    ids = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)  # the post-processor already put id 0 first
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step, steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def validation_loss(model, valid):
    """Mean next-token loss over every whole SEQ-token window of the validation stream."""
    n = (len(valid) - 1) // SEQ
    x = valid[:n * SEQ].reshape(n, SEQ)
    y = valid[1:n * SEQ + 1].reshape(n, SEQ)
    total = 0.0
    for i in range(0, n, 64):
        logits = model(x[i:i + 64])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i:i + 64].reshape(-1), reduction="sum").item()
    return total / (n * SEQ)


def pack_rows(codes):
    """transformers `bitlinear` packing: byte row r holds output rows r, r+R, r+2R, r+3R (R = out/4), code t + 1."""
    out = codes.shape[0]
    r = out // 4
    packed = torch.zeros(r, codes.shape[1], dtype=torch.uint8)
    for part in range(4):
        packed |= ((codes[part * r:(part + 1) * r] + 1).to(torch.uint8) << (2 * part))
    return packed


def freeze(model):
    """Makes the model compute what the checkpoint stores: ternary codes with the multiplier 1 / f32(1 / m) (Ternlight
    divides by the stored weight_scale) and f16-rounded HGF factors. Returns the checkpoint's tensors."""
    tensors, ternary = {}, set()
    for name, module in model.named_modules():
        if isinstance(module, M.Linear) and module.mode != "float":
            codes, m = M.ternarise(module.weight.detach())
            scale = (1.0 / m).to(torch.float32).reshape(1)
            tensors[f"model.{name}.weight"] = pack_rows(codes.to(torch.int8))
            tensors[f"model.{name}.weight_scale"] = scale
            module.frozen = (codes, 1.0 / scale)
            ternary.add(f"{name}.weight")
            if module.mode == "hgf":
                for part in ["lora_A", "lora_B"]:
                    p = getattr(module, part)
                    p.data = p.data.half().float()
                    tensors[f"model.{name}.{part}"] = p.data.half()
                    ternary.add(f"{name}.{part}")
    for name, p in model.named_parameters():
        if name not in ternary:
            tensors[f"model.{name}"] = p.data.clone()
    return {k: v.contiguous() for k, v in tensors.items()}


@torch.no_grad()
def greedy(model, prompt, new):
    """Logits over `prompt`, then `new` greedy steps (each a full forward): (ids, prompt logits, step logits)."""
    logits = model(prompt[None])[0]
    ids, steps = prompt.tolist(), [logits[-1]]
    for _ in range(new - 1):
        ids.append(int(steps[-1].argmax()))
        steps.append(model(torch.tensor(ids)[None])[0, -1])
    ids.append(int(steps[-1].argmax()))
    return ids, logits, torch.stack(steps)


@torch.no_grad()
def robust(model, prompt):
    """Whether int8 activation rounding makes this prompt's logits depend on float rounding: another implementation
    sums in another order, and a value on a rounding boundary then lands on the other side and moves the logits by
    far more than 1e-3. A prompt is robust when float64, and float32 with 1e-7 relative noise on every quantised
    activation (two draws), all stay within 1e-4 of the float32 logits and give the same greedy tokens."""
    ids, logits, steps = greedy(model, prompt, ORACLE_NEW_TOKENS)
    want = torch.cat([logits, steps]).double()
    runs = []
    wide = copy.deepcopy(model).double()
    for module in wide.modules():
        if hasattr(module, "frozen"):
            module.frozen = tuple(t.double() for t in module.frozen)
    runs.append(greedy(wide, prompt.clone(), ORACLE_NEW_TOKENS))
    M.ACT_NOISE = 1e-7
    try:
        for draw in range(2):
            torch.manual_seed(draw)
            runs.append(greedy(model, prompt, ORACLE_NEW_TOKENS))
    finally:
        M.ACT_NOISE = None
    return all(r[0] == ids and (torch.cat([r[1], r[2]]).double() - want).abs().max() < 1e-4 for r in runs)


@torch.no_grad()
def oracle(model, valid):
    """Logits of the first robust validation prompt (a window starting at a document) and of its greedy
    continuation, in the format of the fixtures' oracle.safetensors."""
    starts = (valid[:-ORACLE_PROMPT_TOKENS] == 0).nonzero().flatten().tolist()
    tried = 0
    for start in starts[:ORACLE_CANDIDATES]:
        prompt = valid[start:start + ORACLE_PROMPT_TOKENS].clone()
        tried += 1
        if robust(model, prompt):
            break
    else:
        raise SystemExit(f"no robust {ORACLE_PROMPT_TOKENS}-token prompt among {tried} candidates")
    ids, logits, steps = greedy(model, prompt, ORACLE_NEW_TOKENS)
    print(f"oracle prompt: validation token {start}, candidate {tried}")
    return {
        "input_ids": prompt[None].to(torch.int64),
        "logits": logits[None].float().contiguous(),
        "gen_ids": torch.tensor(ids, dtype=torch.int64)[None],
        "gen_logits": steps.float().contiguous(),
    }


def export(model, mode, tokenizer_path, valid, out):
    os.makedirs(out, exist_ok=True)
    model.eval()
    tensors = freeze(model) if mode != "float" else {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    config = dict(CONFIG)
    if mode != "float":
        config["quantization_config"] = {"quant_method": "bitnet", "linear_class": "bitlinear",
                                         "quantization_mode": "offline"}
        if mode == "hgf":
            config["quantization_config"]["hgf"] = {"rank": HGF_RANK, "gate": "scalar"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file(tensors, os.path.join(out, "model.safetensors"))
    shutil.copy(tokenizer_path, os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
        f.write("\n")
    save_file(oracle(model, valid), os.path.join(out, "oracle.safetensors"))


def train_model(model, train, valid, args):
    """Trains in place; returns the run's record (validation loss over the whole validation split)."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.95))
    batches = np.random.default_rng(SEED)
    log = open(os.path.join(args.out, "log.txt"), "w")
    start = time.time()
    for step in range(args.steps):
        starts = torch.from_numpy(batches.integers(0, len(train) - SEQ - 1, BATCH))
        x = torch.stack([train[s:s + SEQ] for s in starts])
        y = torch.stack([train[s + 1:s + SEQ + 1] for s in starts])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            line = f"step {step} loss {loss.item():.4f} lr {lr_at(step, args.steps):.2e} {time.time() - start:.0f}s"
            print(line, file=log, flush=True)
    model.eval()
    result = {
        "mode": args.mode, "parameters": sum(p.numel() for p in model.parameters()), "steps": args.steps,
        "batch": BATCH, "seq": SEQ, "train_tokens_seen": args.steps * BATCH * SEQ, "train_stream_tokens": len(train),
        "valid_tokens": len(valid), "valid_loss": validation_loss(model, valid),
        "train_seconds": round(time.time() - start), "threads": args.threads, "seed": SEED,
    }
    print(json.dumps(result), file=log, flush=True)
    torch.save(model.state_dict(), os.path.join(args.out, "model.pt"))
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=M.QUANT_MODES, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export", help="write the trained model here as an HF-format checkpoint with its oracle")
    ap.add_argument("--reuse", action="store_true", help="export the model.pt an earlier run left in --out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    os.makedirs(args.out, exist_ok=True)
    tok = Tokenizer.from_file(args.tokenizer)
    train, valid = encode(tok, f"{args.data}/train.txt"), encode(tok, f"{args.data}/valid.txt")
    model = M.Model({**CONFIG, "hgf_rank": HGF_RANK}, args.mode)
    record = os.path.join(args.out, "result.json")
    if args.reuse:
        model.load_state_dict(torch.load(os.path.join(args.out, "model.pt")))
        model.eval()
        with open(record) as f:
            result = json.load(f)
    else:
        result = train_model(model, train, valid, args)
    if args.export:
        export(model, args.mode, args.tokenizer, valid, args.export)
        result["valid_loss_as_exported"] = validation_loss(model, valid)
    with open(record, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
