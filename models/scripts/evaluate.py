#!/usr/bin/env python3
"""Model-card figures at full precision in PyTorch: held-out perplexity and needle accuracy.

  /usr/bin/python3 evaluate.py --ckpt ../work/ckpt.pt [--json out.json]

Needle: the same template as training (a pass code stated at a depth of held-out filler text,
asked for at the end); the greedy continuation must reproduce the code's digits.
"""
import argparse
import json
import math
import os
import random
import sys

import torch
import torch.nn.functional as F

import bpe
import model as M
from train import NEEDLE, QUESTION

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)


def perplexity(net, ids, ctx):
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, ctx):
            x = torch.tensor([ids[s:s + ctx + 1]])
            if x.shape[1] < 2:
                break
            logits, _ = net(x[:, :-1])
            loss = F.cross_entropy(logits[0], x[0, 1:], reduction="sum")
            nll += loss.item()
            n += x.shape[1] - 1
    return math.exp(nll / n), n


def needle(net, enc, filler, length, depth, code):
    needle_ids = enc.encode(" " + NEEDLE.format(code=code) + " ")
    q = QUESTION.format(code=code)
    prompt_q = q[: q.rindex(code)]
    q_ids = enc.encode(prompt_q)
    n_fill = length - len(needle_ids) - len(q_ids)
    fill = filler[:n_fill]
    at = int(round(depth * n_fill))
    ids = fill[:at] + needle_ids + fill[at:] + q_ids
    with torch.no_grad():
        logits, past = net(torch.tensor([ids]))
        out = []
        nxt = int(logits[0, -1].argmax())
        for i in range(len(code) + 1):
            out.append(nxt)
            pos = torch.tensor([[len(ids) + i]])
            logits, past = net(torch.tensor([[nxt]]), torch.ones(1, len(ids) + i + 1, dtype=torch.long), pos, past)
            nxt = int(logits[0, -1].argmax())
    answer = enc.decode(out)
    return code in answer, answer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=os.path.join(MODELS, "work", "ckpt.pt"))
    ap.add_argument("--lengths", default="256,512,1024,2048")
    ap.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--ppl-context", type=int, default=1024)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    d = torch.load(args.ckpt, map_location="cpu")
    cfg = M.Config(**d["config"])
    net = M.build(cfg)
    net.load_state_dict(d["state"])
    net.eval()
    enc = bpe.Encoder(os.path.join(MODELS, "kvq-llama", "tokenizer.json"))
    held = open(os.path.join(MODELS, "data", "heldout.txt"), encoding="utf-8").read()
    ids = enc.encode(held)
    ppl, n = perplexity(net, ids, args.ppl_context)
    print(f"held-out perplexity {ppl:.2f} over {n} tokens (context {args.ppl_context})", flush=True)
    rng = random.Random(7)
    cells = []
    for L in [int(x) for x in args.lengths.split(",")]:
        for dp in [float(x) for x in args.depths.split(",")]:
            ok = 0
            for t in range(args.trials):
                start = rng.randint(0, len(ids) - L - 1)
                code = str(rng.randint(10 ** 4, 10 ** 5 - 1))
                good, ans = needle(net, enc, ids[start:], L, dp, code)
                ok += good
            cells.append({"length": L, "depth": dp, "correct": ok, "trials": args.trials})
            print(f"needle length {L} depth {dp:.2f}: {ok}/{args.trials}", flush=True)
    acc = sum(c["correct"] for c in cells) / sum(c["trials"] for c in cells)
    print(f"needle accuracy {acc:.3f}")
    res = {"perplexity": ppl, "perplexity_tokens": n, "ppl_context": args.ppl_context, "needle_accuracy": acc,
           "needle": cells, "tokens_seen": d.get("tokens_seen"), "steps": d.get("step")}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
