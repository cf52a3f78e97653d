#!/usr/bin/env python3
"""Writes a random-weight Llama-architecture decoder whose weights (> 2.1 GB) are in ONNX external
data (model.onnx + model.onnx.data), in the Hugging Face "decoder with past" layout of export.py.
Used once to check that kvquant prepares and decodes a model of that size without holding its
weights twice (issue #16). The output is large: write it under /tmp, never commit it.

  /usr/bin/python3 make_big_model.py --out /tmp/kvq-big
"""
import argparse
import glob
import json
import os
import shutil
import sys

import onnx
import torch

import export
import model as M

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=9)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = M.Config(vocab_size=4096, hidden_size=2048, num_hidden_layers=args.layers, num_attention_heads=16,
                   num_key_value_heads=4, head_dim=128, intermediate_size=8192, max_position_embeddings=4096)
    net = M.build(cfg).eval()
    os.makedirs(args.out, exist_ok=True)
    raw = os.path.join(args.out, "raw")
    os.makedirs(raw, exist_ok=True)
    path = os.path.join(raw, "model.onnx")
    n = cfg.num_hidden_layers
    b, s, p = 1, 2, 3
    ids = torch.randint(0, cfg.vocab_size, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.long)
    pos = torch.arange(p, p + s).unsqueeze(0)
    past = []
    in_names = ["input_ids", "attention_mask", "position_ids"]
    out_names = ["logits"]
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"},
           "logits": {0: "batch_size", 1: "sequence_length"}}
    for i in range(n):
        past += [torch.randn(b, cfg.num_key_value_heads, p, cfg.head_dim),
                 torch.randn(b, cfg.num_key_value_heads, p, cfg.head_dim)]
        for kv in ("key", "value"):
            in_names.append(f"past_key_values.{i}.{kv}")
            dyn[in_names[-1]] = {0: "batch_size", 2: "past_sequence_length"}
            out_names.append(f"present.{i}.{kv}")
            dyn[out_names[-1]] = {0: "batch_size", 2: "total_sequence_length"}
    with torch.no_grad():
        torch.onnx.export(export.Wrapper(net), (ids, mask, pos, *past), path, input_names=in_names,
                          output_names=out_names, dynamic_axes=dyn, opset_version=17, do_constant_folding=True)
    del net
    m = onnx.load(path)  # loads the per-tensor files torch wrote next to it
    dst = os.path.join(args.out, "model.onnx")
    onnx.save_model(m, dst, save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data",
                    size_threshold=1024)
    shutil.rmtree(raw)
    conf = {"model_type": "llama", "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
            "num_hidden_layers": n, "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
            "intermediate_size": cfg.intermediate_size, "max_position_embeddings": cfg.max_position_embeddings,
            "eos_token_id": 0, "torch_dtype": "float32"}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    shutil.copy(os.path.join(os.path.dirname(HERE), "kvq-llama", "tokenizer.json"), args.out)
    print(f"wrote {dst} ({os.path.getsize(dst)} bytes) + model.onnx.data "
          f"({os.path.getsize(os.path.join(args.out, 'model.onnx.data'))} bytes)")


if __name__ == "__main__":
    sys.exit(main())
