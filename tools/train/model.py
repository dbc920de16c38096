"""The demo model in plain PyTorch: Qwen3.5's text architecture (Gated DeltaNet layers and gated softmax attention on a
`layer_types` schedule, (1 + w) RMSNorms, SwiGLU MLPs, tied embeddings) with BitNet b1.58 projections and, optionally,
the Hybrid Gated Flow correction y = ternary(x) + g * B(A x).

Written to compute exactly what Ternlight computes for the exported checkpoint: ternary weights are absmean-quantised
per stored tensor (T = clamp(round(W / mean|W|), -1, 1), multiplier mean|W|) and activations are fake-quantised per
token to int8 (s = 127 / max|x|); training passes gradients straight through both roundings. The per-head a / b
projections of the Gated DeltaNet layers (one scalar per head each) stay full precision.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

QUANT_MODES = ("float", "ternary", "hgf")


def ternarise(w):
    """(codes, multiplier) of a weight by absmean."""
    m = w.abs().mean().clamp(min=1e-5)
    return (w / m).round().clamp(-1, 1), m


# Relative noise put on every quantised activation when set: the oracle's check that rounding noise of another
# implementation's summation order cannot move an int8 rounding (see train.py, `robust`).
ACT_NOISE = None


def act_quant(x):
    if ACT_NOISE is not None:
        x = x * (1 + torch.randn_like(x) * ACT_NOISE)
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return (x * s).round().clamp(-128, 127) / s


class Linear(nn.Module):
    """A bias-free projection: full precision, BitNet ternary, or ternary plus the HGF low-rank correction."""

    def __init__(self, inp, out, mode, rank):
        super().__init__()
        self.mode = mode
        self.weight = nn.Parameter(torch.randn(out, inp) * inp ** -0.5)
        if mode == "hgf":
            self.lora_A = nn.Parameter(torch.randn(rank, inp) * inp ** -0.5)
            self.lora_B = nn.Parameter(torch.zeros(out, rank))
            self.hgf_gate = nn.Parameter(torch.full((1,), 0.1))

    def forward(self, x):
        if self.mode == "float":
            return x @ self.weight.t()
        if hasattr(self, "frozen"):
            codes, multiplier = self.frozen
            y = (act_quant(x) @ codes.t()) * multiplier
        else:
            codes, m = ternarise(self.weight)
            w = self.weight + (codes * m - self.weight).detach()
            y = (x + (act_quant(x) - x).detach()) @ w.t()
        if self.mode == "hgf":
            y = y + self.hgf_gate * ((x @ self.lora_A.t()) @ self.lora_B.t())
        return y


class RMSNorm(nn.Module):
    """x / rms(x) * (1 + w) (Qwen3.5's model norms), or * w when `offset` is false (its gated output norm)."""

    def __init__(self, dim, eps, offset=True):
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))

    def forward(self, x):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * (1 + self.weight if self.offset else self.weight)


def l2norm(x):
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6)


def gated_delta_chunked(q, k, v, beta, g, chunk=32):
    """The gated delta rule over [B, H, T, d] inputs (q, k L2-normed; g log decays), chunk by chunk:
    S_t = exp(g_t) (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T, o_t = S_t^T q_t / sqrt(dk)."""
    b, h, t, dk = k.shape
    dv = v.shape[-1]
    q = q * dk ** -0.5
    pad = (-t) % chunk
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        beta, g = F.pad(beta, (0, pad)), F.pad(g, (0, pad))
    n = (t + pad) // chunk
    q, k, v = (x.reshape(b, h, n, chunk, -1) for x in (q, k, v))
    beta, g = beta.reshape(b, h, n, chunk), g.reshape(b, h, n, chunk)
    G = g.cumsum(-1)
    lower = torch.tril(torch.ones(chunk, chunk, dtype=torch.bool))
    gam = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~lower, -math.inf))
    strict = torch.tril(torch.ones(chunk, chunk), -1)
    a = (beta[..., :, None] * (k @ k.transpose(-1, -2)) * gam) * strict + torch.eye(chunk)
    eye = torch.eye(chunk).expand_as(a)
    tinv = torch.linalg.solve_triangular(a, eye, upper=False, unitriangular=True)
    u = tinv @ (v * beta[..., None])
    w = tinv @ (k * beta[..., None] * G.exp()[..., None])
    qk = (q @ k.transpose(-1, -2)) * gam
    state = q.new_zeros(b, h, dk, dv)
    outs = []
    for c in range(n):
        vn = u[:, :, c] - w[:, :, c] @ state
        outs.append((q[:, :, c] * G[:, :, c].exp()[..., None]) @ state + qk[:, :, c] @ vn)
        last = G[:, :, c, -1:]
        state = last.exp()[..., None] * state + (k[:, :, c] * (last - G[:, :, c]).exp()[..., None]).transpose(-1, -2) @ vn
    return torch.stack(outs, 2).reshape(b, h, n * chunk, dv)[:, :, :t]


def gated_delta_recurrent(q, k, v, beta, g):
    """The same rule token by token (the oracle for the chunked form)."""
    b, h, t, dk = k.shape
    q = q * dk ** -0.5
    state = q.new_zeros(b, h, dk, v.shape[-1])
    outs = []
    for i in range(t):
        state = state * g[:, :, i].exp()[..., None, None]
        kv = (state * k[:, :, i, :, None]).sum(-2)
        delta = beta[:, :, i, None] * (v[:, :, i] - kv)
        state = state + k[:, :, i, :, None] * delta[..., None, :]
        outs.append((state * q[:, :, i, :, None]).sum(-2))
    return torch.stack(outs, 2)


class GatedDeltaNet(nn.Module):
    def __init__(self, c, mode):
        super().__init__()
        self.hk, self.hv, self.dk, self.dv = c["linear_num_key_heads"], c["linear_num_value_heads"], \
            c["linear_key_head_dim"], c["linear_value_head_dim"]
        hidden, rank = c["hidden_size"], c["hgf_rank"]
        self.key, self.value = self.hk * self.dk, self.hv * self.dv
        self.in_proj_qkv = Linear(hidden, 2 * self.key + self.value, mode, rank)
        self.in_proj_z = Linear(hidden, self.value, mode, rank)
        self.in_proj_b = nn.Linear(hidden, self.hv, bias=False)
        self.in_proj_a = nn.Linear(hidden, self.hv, bias=False)
        channels = 2 * self.key + self.value
        self.kernel = c["linear_conv_kernel_dim"]
        self.conv1d = nn.Conv1d(channels, channels, self.kernel, groups=channels, bias=False)
        self.dt_bias = nn.Parameter(torch.ones(self.hv))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.hv).uniform_(1, 16)))
        self.norm = RMSNorm(self.dv, c["rms_norm_eps"], offset=False)
        self.out_proj = Linear(self.value, hidden, mode, rank)
        self.chunked = True

    def forward(self, x):
        bsz, t, _ = x.shape
        mixed = self.in_proj_qkv(x).transpose(1, 2)
        mixed = F.silu(self.conv1d(F.pad(mixed, (self.kernel - 1, 0)))).transpose(1, 2)
        q, k, v = mixed.split([self.key, self.key, self.value], -1)
        heads = lambda x, n: x.reshape(bsz, t, n, -1).transpose(1, 2)
        r = self.hv // self.hk
        q = l2norm(heads(q, self.hk)).repeat_interleave(r, 1)
        k = l2norm(heads(k, self.hk)).repeat_interleave(r, 1)
        v = heads(v, self.hv)
        beta = torch.sigmoid(self.in_proj_b(x)).transpose(1, 2)
        g = (-self.A_log.exp() * F.softplus(self.in_proj_a(x) + self.dt_bias)).transpose(1, 2)
        rule = gated_delta_chunked if self.chunked else gated_delta_recurrent
        o = rule(q, k, v, beta, g).transpose(1, 2)
        z = self.in_proj_z(x).reshape(bsz, t, self.hv, self.dv)
        o = self.norm(o) * F.silu(z)
        return self.out_proj(o.reshape(bsz, t, self.value))


class GatedAttention(nn.Module):
    def __init__(self, c, mode):
        super().__init__()
        hidden, rank = c["hidden_size"], c["hgf_rank"]
        self.h, self.kv, self.hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.q_proj = Linear(hidden, 2 * self.h * self.hd, mode, rank)
        self.k_proj = Linear(hidden, self.kv * self.hd, mode, rank)
        self.v_proj = Linear(hidden, self.kv * self.hd, mode, rank)
        self.o_proj = Linear(self.h * self.hd, hidden, mode, rank)
        self.q_norm = RMSNorm(self.hd, c["rms_norm_eps"])
        self.k_norm = RMSNorm(self.hd, c["rms_norm_eps"])
        rope = c["rope_parameters"]
        self.rot = int(self.hd * rope["partial_rotary_factor"])
        self.theta = rope["rope_theta"]

    def rope(self, x):
        t = x.shape[2]
        inv = 1.0 / (self.theta ** (torch.arange(0, self.rot, 2, dtype=torch.float32) / self.rot))
        ang = torch.arange(t, dtype=torch.float32)[:, None] * inv[None]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        xr, rest = x[..., :self.rot], x[..., self.rot:]
        half = self.rot // 2
        rotated = torch.cat([-xr[..., half:], xr[..., :half]], -1)
        return torch.cat([xr * cos + rotated * sin, rest], -1)

    def forward(self, x):
        bsz, t, _ = x.shape
        qg = self.q_proj(x).reshape(bsz, t, self.h, 2 * self.hd)
        q, gate = qg[..., :self.hd], qg[..., self.hd:]
        k = self.k_proj(x).reshape(bsz, t, self.kv, self.hd)
        v = self.v_proj(x).reshape(bsz, t, self.kv, self.hd).transpose(1, 2)
        q = self.rope(self.q_norm(q).transpose(1, 2))
        k = self.rope(self.k_norm(k).transpose(1, 2))
        rep = self.h // self.kv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.hd ** -0.5)
        o = o.transpose(1, 2) * torch.sigmoid(gate)
        return self.o_proj(o.reshape(bsz, t, self.h * self.hd))


class Mlp(nn.Module):
    def __init__(self, c, mode):
        super().__init__()
        hidden, inter, rank = c["hidden_size"], c["intermediate_size"], c["hgf_rank"]
        self.gate_proj = Linear(hidden, inter, mode, rank)
        self.up_proj = Linear(hidden, inter, mode, rank)
        self.down_proj = Linear(inter, hidden, mode, rank)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c, kind, mode):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        if kind == "linear_attention":
            self.linear_attn = GatedDeltaNet(c, mode)
        else:
            self.self_attn = GatedAttention(c, mode)
        self.mlp = Mlp(c, mode)

    def forward(self, x):
        mixer = self.linear_attn if hasattr(self, "linear_attn") else self.self_attn
        x = x + mixer(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Model(nn.Module):
    """Named as transformers names Qwen3.5's tensors, so `state_dict()` keys are the checkpoint's."""

    def __init__(self, c, mode):
        super().__init__()
        assert mode in QUANT_MODES
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.layers = nn.ModuleList(Layer(c, kind, mode) for kind in c["layer_types"])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x) @ self.embed_tokens.weight.t()
