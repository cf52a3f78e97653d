#!/usr/bin/env python3
"""Exports a trained checkpoint to ONNX in the Hugging Face / optimum "decoder with past" layout,
writes config.json and golden.json (reference logits for the Java tests), and checks the graph.

  /usr/bin/python3 export.py --ckpt ../work/ckpt.pt --out ../kvq-llama [--fp16 DIR]

Inputs:  input_ids int64 [b,s], attention_mask int64 [b,past+s], position_ids int64 [b,s],
         past_key_values.{i}.key / .value float32 [b, kv_heads, past, head_dim]
Outputs: logits float32 [b,s,vocab], present.{i}.key / .value [b, kv_heads, past+s, head_dim]
"""
import argparse
import hashlib
import json
import os
import sys

import onnx
import torch

import bpe
import model as M

HERE = os.path.dirname(os.path.abspath(__file__))


class Wrapper(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, input_ids, attention_mask, position_ids, *past):
        n = self.net.cfg.num_hidden_layers
        pk = [(past[2 * i], past[2 * i + 1]) for i in range(n)]
        logits, presents = self.net(input_ids, attention_mask, position_ids, pk)
        out = [logits]
        for k, v in presents:
            out += [k, v]
        return tuple(out)


def load(ckpt):
    d = torch.load(ckpt, map_location="cpu")
    cfg = M.Config(**d["config"])
    net = M.build(cfg)
    net.load_state_dict(d["state"])
    net.eval()
    return net, cfg, d


def export(net, cfg, path):
    n = cfg.num_hidden_layers
    b, s, p = 1, 2, 3
    ids = torch.randint(0, cfg.vocab_size, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.long)
    pos = torch.arange(p, p + s).unsqueeze(0)
    past = []
    for _ in range(n):
        past += [torch.randn(b, cfg.num_key_value_heads, p, cfg.head_dim),
                 torch.randn(b, cfg.num_key_value_heads, p, cfg.head_dim)]
    in_names = ["input_ids", "attention_mask", "position_ids"]
    out_names = ["logits"]
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"},
           "logits": {0: "batch_size", 1: "sequence_length"}}
    for i in range(n):
        for kv in ("key", "value"):
            nm = f"past_key_values.{i}.{kv}"
            in_names.append(nm)
            dyn[nm] = {0: "batch_size", 2: "past_sequence_length"}
            on = f"present.{i}.{kv}"
            out_names.append(on)
            dyn[on] = {0: "batch_size", 2: "total_sequence_length"}
    with torch.no_grad():
        torch.onnx.export(Wrapper(net), (ids, mask, pos, *past), path, input_names=in_names,
                          output_names=out_names, dynamic_axes=dyn, opset_version=17,
                          do_constant_folding=True)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({node.op_type for node in m.graph.node})
    return ops


def to_fp16(src, dst):
    """Rewrites an fp32 export as fp16 throughout: weights, constants, casts, inputs and outputs.
    Integer shape arithmetic is left alone. Returns the operators of the result."""
    from onnx import TensorProto, helper, numpy_helper
    m = onnx.load(src)
    g = m.graph

    def half(t):
        if t.data_type != TensorProto.FLOAT:
            return t
        a = numpy_helper.to_array(t).astype("float16")
        return numpy_helper.from_array(a, t.name)

    for i, t in enumerate(g.initializer):
        g.initializer[i].CopyFrom(half(t))
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                a.t.CopyFrom(half(a.t))
            elif node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.save(m, dst)
    onnx.checker.check_model(onnx.load(dst), full_check=True)
    return sorted({node.op_type for node in g.node})


def golden(net, cfg, enc, text):
    sample = "The pass code is 48213.\nIn the beginning, God's word (verse 3:16) was — \"light\"; naïve café."
    ids = enc.encode(text)[:48]
    with torch.no_grad():
        x = torch.tensor([ids])
        logits, _ = net(x)
        last = logits[0, -1].tolist()
        prefix = len(ids) - 3
        _, presents = net(x[:, :prefix])
        steps = []
        for t in range(prefix, len(ids)):
            lg, presents = net(x[:, t:t + 1], torch.ones(1, t + 1, dtype=torch.long),
                               torch.tensor([[t]]), presents)
            steps.append({"token": ids[t], "logits": [round(v, 5) for v in lg[0, -1].tolist()]})
    return {
        "tokenizer": {"text": sample, "token_ids": enc.encode(sample)},
        "forward": {"input_ids": ids, "last_logits": [round(v, 5) for v in last]},
        "incremental": {"prefix_len": prefix, "steps": steps},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=os.path.join(os.path.dirname(HERE), "work", "ckpt.pt"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "kvq-llama"))
    ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(HERE), "kvq-llama", "tokenizer.json"),
                    help="copied into --out when that has no tokenizer.json")
    ap.add_argument("--trained", action="store_true", help="mark config.json as the trained release")
    ap.add_argument("--fp16", metavar="DIR",
                    help="also write an fp16 copy of the model (weights, activations, past and logits) to DIR, "
                         "with the tokenizer and config")
    args = ap.parse_args()
    net, cfg, d = load(args.ckpt)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.onnx")
    ops = export(net, cfg, path)
    tok = os.path.join(args.out, "tokenizer.json")
    if not os.path.exists(tok):
        with open(args.tokenizer, "rb") as f, open(tok, "wb") as o:
            o.write(f.read())
    enc = bpe.Encoder(tok)
    with open(os.path.join(os.path.dirname(HERE), "data", "heldout.txt"), encoding="utf-8") as f:
        held = f.read()
    if cfg.arch == "gpt2":
        # Hugging Face's GPT-2 names, plus the generic ones that kvquant's tests read
        conf = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": cfg.vocab_size,
                "n_embd": cfg.hidden_size, "n_layer": cfg.num_hidden_layers, "n_head": cfg.num_attention_heads,
                "n_inner": cfg.intermediate_size, "n_positions": cfg.max_position_embeddings,
                "activation_function": "gelu_new", "layer_norm_epsilon": cfg.rms_norm_eps,
                "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
                "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
                "head_dim": cfg.head_dim, "max_position_embeddings": cfg.max_position_embeddings}
    else:
        conf = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
                "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
                "head_dim": cfg.head_dim, "intermediate_size": cfg.intermediate_size,
                "max_position_embeddings": cfg.max_position_embeddings, "rope_theta": cfg.rope_theta,
                "rms_norm_eps": cfg.rms_norm_eps}
    conf.update({"tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32",
                 "kvq_trained": bool(args.trained), "kvq_training_steps": d.get("step"),
                 "kvq_tokens_seen": d.get("tokens_seen")})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    with open(os.path.join(args.out, "golden.json"), "w") as f:
        json.dump(golden(net, cfg, enc, held), f)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    print(f"exported {path} ({os.path.getsize(path)} bytes, sha256 {sha}); operators: {', '.join(ops)}")
    if args.fp16:
        os.makedirs(args.fp16, exist_ok=True)
        p16 = os.path.join(args.fp16, "model.onnx")
        to_fp16(path, p16)
        with open(tok, "rb") as f, open(os.path.join(args.fp16, "tokenizer.json"), "wb") as o:
            o.write(f.read())
        with open(os.path.join(args.fp16, "config.json"), "w") as f:
            json.dump(dict(conf, torch_dtype="float16"), f, indent=2)
        sha = hashlib.sha256(open(p16, "rb").read()).hexdigest()
        print(f"exported {p16} ({os.path.getsize(p16)} bytes, sha256 {sha})")


if __name__ == "__main__":
    sys.exit(main())
