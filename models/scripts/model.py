"""The bundled decoders: a small Llama-architecture model (RMSNorm, RoPE, SwiGLU, GQA) and a small
GPT-2-architecture one (LayerNorm, learned positions, GELU MLP, multi-head attention).

Written for torch 1.13 (Debian's python3-torch) and its ONNX exporter: attention uses plain
MatMul/Softmax with an explicit mask, so the exported graph has no fused attention operators.
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 4096
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 512
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    arch: str = "llama"  # or "gpt2": then num_key_value_heads == num_attention_heads, rms_norm_eps is LayerNorm's eps

    def to_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * self.weight


def rope_cos_sin(position_ids, head_dim, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = position_ids.to(torch.float32).unsqueeze(-1) * inv_freq  # [b, s, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [b, s, hd]
    return emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)  # [b, 1, s, hd]


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        h, nh, nkv, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(h, nh * hd, bias=False)
        self.k_proj = nn.Linear(h, nkv * hd, bias=False)
        self.v_proj = nn.Linear(h, nkv * hd, bias=False)
        self.o_proj = nn.Linear(nh * hd, h, bias=False)

    def forward(self, x, cos, sin, mask, past_k=None, past_v=None):
        cfg = self.cfg
        b, s, _ = x.shape
        nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q = self.q_proj(x).view(b, s, nh, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, nkv, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        present_k, present_v = k, v
        group = nh // nkv
        t = k.shape[2]
        k = k.unsqueeze(2).expand(b, nkv, group, t, hd).reshape(b, nh, t, hd)
        v = v.unsqueeze(2).expand(b, nkv, group, t, hd).reshape(b, nh, t, hd)
        scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(hd))
        scores = scores + mask
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, nh * hd)
        return self.o_proj(out), present_k, present_v


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, past_k=None, past_v=None):
        a, pk, pv = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_k, past_v)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, pk, pv


class LlamaTiny(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past=None):
        """past: list of (k, v) per layer or None. Returns logits and the list of presents."""
        b, s = input_ids.shape
        past_len = 0 if past is None else past[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + s, dtype=torch.long).unsqueeze(0).expand(b, s)
        total = past_len + s
        if attention_mask is None:
            attention_mask = torch.ones(b, total, dtype=torch.long)
        mask = build_mask(attention_mask, s)
        cos, sin = rope_cos_sin(position_ids, self.cfg.head_dim, self.cfg.rope_theta)
        x = self.embed_tokens(input_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            pk, pv = (None, None) if past is None else past[i]
            x, k, v = layer(x, cos, sin, mask, pk, pv)
            presents.append((k, v))
        x = self.norm(x)
        logits = torch.matmul(x, self.embed_tokens.weight.t())
        return logits, presents


class Gpt2Block(nn.Module):
    """GPT-2's block as Hugging Face writes it: pre-LayerNorm, fused q/k/v projection with bias,
    scores divided by sqrt(head_dim), the causal mask applied with Where, tanh-GELU MLP."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.ln_1 = nn.LayerNorm(h, eps=cfg.rms_norm_eps)
        self.c_attn = nn.Linear(h, 3 * cfg.num_attention_heads * cfg.head_dim)
        self.c_proj = nn.Linear(cfg.num_attention_heads * cfg.head_dim, h)
        self.ln_2 = nn.LayerNorm(h, eps=cfg.rms_norm_eps)
        self.c_fc = nn.Linear(h, cfg.intermediate_size)
        self.mlp_proj = nn.Linear(cfg.intermediate_size, h)

    def forward(self, x, pad_mask, past_k=None, past_v=None):
        b, s, _ = x.shape
        nh, hd = self.cfg.num_attention_heads, self.cfg.head_dim
        q, k, v = self.c_attn(self.ln_1(x)).split(nh * hd, dim=2)
        q = q.view(b, s, nh, hd).transpose(1, 2)
        k = k.view(b, s, nh, hd).transpose(1, 2)
        v = v.view(b, s, nh, hd).transpose(1, 2)
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        t = k.shape[2]
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)
        causal = torch.ones(t, t, dtype=torch.bool).tril()[t - s:, :]
        w = torch.where(causal, w, torch.tensor(-1e4))
        w = w + pad_mask
        a = torch.matmul(torch.softmax(w, dim=-1), v).transpose(1, 2).reshape(b, s, nh * hd)
        x = x + self.c_proj(a)
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x, k, v


class Gpt2Tiny(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        assert cfg.num_key_value_heads == cfg.num_attention_heads, "GPT-2 has one KV head per query head"
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.wpe = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.h = nn.ModuleList([Gpt2Block(cfg) for _ in range(cfg.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.apply(LlamaTiny._init)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past=None):
        b, s = input_ids.shape
        past_len = 0 if past is None else past[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + s, dtype=torch.long).unsqueeze(0).expand(b, s)
        if attention_mask is None:
            attention_mask = torch.ones(b, past_len + s, dtype=torch.long)
        pad_mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4
        x = self.wte(input_ids) + self.wpe(position_ids)
        presents = []
        for i, blk in enumerate(self.h):
            pk, pv = (None, None) if past is None else past[i]
            x, k, v = blk(x, pad_mask, pk, pv)
            presents.append((k, v))
        return torch.matmul(self.ln_f(x), self.wte.weight.t()), presents


def build(cfg: Config):
    """The network of a config: LlamaTiny or Gpt2Tiny."""
    return Gpt2Tiny(cfg) if cfg.arch == "gpt2" else LlamaTiny(cfg)


def gpt2_config(**kw):
    """The CPU-sized GPT-2: 4 layers, hidden 256, 4 heads of dim 64, MLP 1024, 1,024 positions."""
    base = dict(arch="gpt2", num_key_value_heads=4, intermediate_size=1024, max_position_embeddings=1024,
                rms_norm_eps=1e-5)
    base.update(kw)
    return Config(**base)


def build_mask(attention_mask, s):
    """Additive mask [b, 1, s, total]: causal over the last s positions plus padding."""
    total = attention_mask.shape[1]
    q_pos = torch.arange(s, dtype=torch.long).unsqueeze(1) + (total - s)
    k_pos = torch.arange(total, dtype=torch.long).unsqueeze(0)
    causal = (k_pos <= q_pos).unsqueeze(0).unsqueeze(0)  # [1,1,s,total]
    keep = causal & (attention_mask.unsqueeze(1).unsqueeze(2) > 0)
    zero = torch.zeros((), dtype=torch.float32)
    neg = torch.full((), -1e9, dtype=torch.float32)
    return torch.where(keep, zero, neg)
