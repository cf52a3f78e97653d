#!/usr/bin/env python3
"""Writes a tiny random-weight GPT-2-architecture decoder (learned positions, LayerNorm, multi-head
attention without GQA, GELU MLP, causal mask applied with Where, scores divided by sqrt(d)) in the
Hugging Face/optimum "decoder with past" ONNX layout, as a test fixture: kvquant's graph analysis
and both execution modes must work on a second architecture, not only on the bundled Llama.

  /usr/bin/python3 make_gpt2_fixture.py   # -> inference-demo/src/test/resources/tiny-gpt2/
"""
import json
import math
import os

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "inference-demo", "src", "test", "resources", "tiny-gpt2")
VOCAB, POS, HID, HEADS, LAYERS = 256, 256, 32, 2, 2
HD = HID // HEADS


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(HID)
        self.c_attn = nn.Linear(HID, 3 * HID)
        self.c_proj = nn.Linear(HID, HID)
        self.ln_2 = nn.LayerNorm(HID)
        self.fc = nn.Linear(HID, 4 * HID)
        self.proj = nn.Linear(4 * HID, HID)

    def forward(self, x, mask, pk, pv):
        b, s, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(HID, dim=2)
        q = q.view(b, s, HEADS, HD).transpose(1, 2)
        k = torch.cat([pk, k.view(b, s, HEADS, HD).transpose(1, 2)], dim=2)
        v = torch.cat([pv, v.view(b, s, HEADS, HD).transpose(1, 2)], dim=2)
        t = k.shape[2]
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HD)
        causal = torch.ones(t, t, dtype=torch.bool).tril()[t - s:, :]
        w = torch.where(causal, w, torch.tensor(-1e4))
        w = w + mask
        a = torch.matmul(torch.softmax(w, dim=-1), v).transpose(1, 2).reshape(b, s, HID)
        x = x + self.c_proj(a)
        x = x + self.proj(F.gelu(self.fc(self.ln_2(x))))
        return x, k, v


class Gpt2Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, HID)
        self.wpe = nn.Embedding(POS, HID)
        self.h = nn.ModuleList([Block() for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(HID)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        x = self.wte(input_ids) + self.wpe(position_ids)
        mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4
        out = []
        for i, blk in enumerate(self.h):
            x, k, v = blk(x, mask, past[2 * i], past[2 * i + 1])
            out += [k, v]
        return (torch.matmul(self.ln_f(x), self.wte.weight.t()), *out)


def main():
    torch.manual_seed(5)
    net = Gpt2Tiny().eval()
    os.makedirs(OUT, exist_ok=True)
    b, s, p = 1, 2, 3
    args = [torch.randint(0, VOCAB, (b, s)), torch.ones(b, p + s, dtype=torch.long), torch.arange(p, p + s)[None]]
    ins, outs = ["input_ids", "attention_mask", "position_ids"], ["logits"]
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"}, "logits": {0: "batch_size", 1: "sequence_length"}}
    for i in range(LAYERS):
        for kv in ("key", "value"):
            args.append(torch.randn(b, HEADS, p, HD))
            ins.append(f"past_key_values.{i}.{kv}")
            outs.append(f"present.{i}.{kv}")
            dyn[ins[-1]] = {0: "batch_size", 2: "past_sequence_length"}
            dyn[outs[-1]] = {0: "batch_size", 2: "total_sequence_length"}
    path = os.path.join(OUT, "model.onnx")
    with torch.no_grad():
        torch.onnx.export(net, tuple(args), path, input_names=ins, output_names=outs, dynamic_axes=dyn,
                          opset_version=17, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    conf = {"model_type": "gpt2", "vocab_size": VOCAB, "n_positions": POS, "n_embd": HID, "n_layer": LAYERS,
            "n_head": HEADS, "num_attention_heads": HEADS, "hidden_size": HID, "eos_token_id": 0}
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(conf, f, indent=1)
    print(path, os.path.getsize(path))


if __name__ == "__main__":
    main()
