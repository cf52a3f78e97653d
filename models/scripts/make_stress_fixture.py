#!/usr/bin/env python3
"""Writes the outlier-key stress fixture: the bundled model (models/kvq-llama) with a large constant
bias added to each layer's key projection on the lowest-frequency rotary pair of every KV head, the
way real models (Qwen2/2.5) carry huge constant components in some key channels.

  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/lapack:/usr/lib/x86_64-linux-gnu/blas \
  /usr/bin/python3 make_stress_fixture.py [--factor 30] [--out ../kvq-llama-outlier]

What it does, and checks:
  * rebuilds the PyTorch model (model.py) from the ONNX file's initializers and checks that it
    reproduces golden.json's logits (so the measurements below are of the shipped weights);
  * measures each layer's median key norm over held-out text, and sets the bias of layer l to
    factor x that median on channel hd/2 - 1 of each KV head (rotate_half pairs channel i with
    i + hd/2 at frequency theta^(-2i/hd): i = hd/2 - 1 is the lowest frequency, so the biased
    component turns by only 2047 * theta^(-(hd-2)/hd) = 0.27 rad over the model's 2,048
    positions). A bias on a key shifts every score of a query by <q, R_p b>, nearly the same for
    all keys p, which softmax ignores: full-precision perplexity barely moves, while key norms
    grow about `factor` times;
  * writes model.onnx (an Add after each k_proj MatMul), config.json, tokenizer.json and
    stress.json (the bias, norms and perplexities before and after) to --out, and prints the
    model's sha256.
"""
import argparse
import hashlib
import json
import math
import os
import shutil

import onnx
from onnx import helper, numpy_helper
import torch

import bpe
import model as M

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "kvq-llama")


def torch_model(m, cfg):
    """model.py's LlamaTiny with the ONNX initializers as weights."""
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in m.graph.initializer}
    net = M.LlamaTiny(cfg)
    state = {}
    for n in m.graph.node:
        if n.op_type == "MatMul" and n.name.startswith("/net/") and n.name.endswith("/MatMul") and n.input[1] in inits \
                and n.name.count("/") > 3:
            path = n.name[len("/net/"):-len("/MatMul")].replace("/", ".")
            state[path + ".weight"] = inits[n.input[1]].t().contiguous()
    for name, t in inits.items():
        if name.startswith("net."):
            state[name[len("net."):]] = t
    missing = set(net.state_dict()) - set(state)
    if missing:
        raise SystemExit("could not map ONNX initializers to: " + ", ".join(sorted(missing)))
    net.load_state_dict(state)
    net.eval()
    return net


def keys_and_ppl(net, ids, window):
    """Per-layer key norms (post-RoPE, [layer] -> tensor) and perplexity over disjoint windows."""
    norms = [[] for _ in net.layers]
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - window + 1, window):
            x = torch.tensor(ids[s:s + window]).unsqueeze(0)
            logits, presents = net(x)
            for l, (k, _) in enumerate(presents):
                norms[l].append(k.norm(dim=-1).flatten())
            lp = torch.log_softmax(logits[0, :-1], dim=-1)
            nll -= lp.gather(1, x[0, 1:].unsqueeze(1)).sum().item()
            count += window - 1
    return [torch.cat(n) for n in norms], math.exp(nll / count)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--factor", type=float, default=30.0, help="bias = factor x the layer's median key norm")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "kvq-llama-outlier"))
    ap.add_argument("--tokens", type=int, default=8192, help="held-out tokens for the norm and perplexity checks")
    a = ap.parse_args()

    with open(os.path.join(SRC, "config.json")) as f:
        config = json.load(f)
    cfg = M.Config(**{k: config[k] for k in M.Config.__dataclass_fields__ if k in config})
    m = onnx.load(os.path.join(SRC, "model.onnx"))
    net = torch_model(m, cfg)

    with open(os.path.join(SRC, "golden.json")) as f:
        golden = json.load(f)["forward"]
    with torch.no_grad():
        logits, _ = net(torch.tensor(golden["input_ids"]).unsqueeze(0))
    err = (logits[0, -1] - torch.tensor(golden["last_logits"])).abs().max().item()
    if err > 1e-3:
        raise SystemExit(f"the rebuilt PyTorch model does not reproduce golden.json (max |diff| {err})")

    enc = bpe.Encoder(os.path.join(SRC, "tokenizer.json"))
    with open(os.path.join(HERE, "..", "data", "heldout.txt"), encoding="utf-8") as f:
        ids = enc.encode(f.read())[:a.tokens]
    norms, ppl = keys_and_ppl(net, ids, 1024)

    hd, nkv = cfg.head_dim, cfg.num_key_value_heads
    ch = hd // 2 - 1
    biases = []
    for l, layer in enumerate(net.layers):
        c = a.factor * norms[l].median().item()
        b = torch.zeros(nkv * hd)
        for h in range(nkv):
            b[h * hd + ch] = c
        biases.append(b)
        kp = layer.self_attn.k_proj
        new = torch.nn.Linear(kp.in_features, kp.out_features, bias=True)
        new.weight.data.copy_(kp.weight.data)
        new.bias.data.copy_(b)
        layer.self_attn.k_proj = new
    norms2, ppl2 = keys_and_ppl(net, ids, 1024)

    # the ONNX model: k_proj's MatMul now writes to <out>_nobias, an Add restores <out>
    added = 0
    nodes = []
    for n in m.graph.node:
        nodes.append(n)
        if n.op_type == "MatMul" and n.name.endswith("/self_attn/k_proj/MatMul"):
            l = int(n.name.split("/layers.")[1].split("/")[0])
            out = n.output[0]
            raw = out + "_nobias"
            n.output[0] = raw
            bname = f"kvq_stress.layers.{l}.k_bias"
            m.graph.initializer.append(numpy_helper.from_array(biases[l].numpy(), bname))
            nodes.append(helper.make_node("Add", [raw, bname], [out], name=n.name[:-len("MatMul")] + "StressBias"))
            added += 1
    if added != cfg.num_hidden_layers:
        raise SystemExit(f"found {added} k_proj MatMul nodes, expected {cfg.num_hidden_layers}")
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.checker.check_model(m)

    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "model.onnx")
    onnx.save(m, path)
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(os.path.join(SRC, f), os.path.join(a.out, f))
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    report = {
        "source_model": "models/kvq-llama",
        "factor": a.factor,
        "channel": ch,
        "bias_per_layer": [round(b.abs().max().item(), 4) for b in biases],
        "median_key_norm_before": [round(n.median().item(), 4) for n in norms],
        "median_key_norm_after": [round(n.median().item(), 4) for n in norms2],
        "norm_growth": [round(n2.median().item() / n.median().item(), 2) for n, n2 in zip(norms, norms2)],
        "pytorch_perplexity_before": round(ppl, 4),
        "pytorch_perplexity_after": round(ppl2, 4),
        "perplexity_tokens": len(ids),
        "perplexity_window": 1024,
        "model_sha256": sha,
    }
    with open(os.path.join(a.out, "stress.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
