#!/usr/bin/env python3
"""Trains the bundled Llama-architecture model on Debian-packaged English text, with a
synthetic pass-code retrieval task mixed in, under a wall-clock budget.

  /usr/bin/python3 train.py --minutes 55 --out ../work/ckpt.pt
A GPU run (larger configuration) : --device cuda --preset gpu --minutes 30
"""
import argparse
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

import bpe
import model as M

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(os.path.dirname(HERE), "work")

NEEDLE = "The pass code is {code}."
QUESTION = "\nWhat is the pass code? The pass code is {code}."


def encode_corpus(enc, path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    ids = []
    for para in text.split("\n\n"):
        ids.extend(enc.encode(para + "\n\n"))
    return torch.tensor(ids, dtype=torch.long)


def random_code(rng):
    return str(rng.randint(10 ** 4, 10 ** 7 - 1))


def needle_sample(enc, data, length, rng, far=False):
    """Returns (ids, weights) of `length + 1` tokens: filler with a pass code at a random depth
    (within the first quarter when `far`) and the question at the end; the answer digits get a
    larger loss weight."""
    code = random_code(rng)
    needle = enc.encode(" " + NEEDLE.format(code=code) + " ")
    question = enc.encode(QUESTION.format(code=code))
    answer_len = len(enc.encode(code + "."))
    n_fill = length + 1 - len(needle) - len(question)
    start = rng.randint(0, len(data) - n_fill - 1)
    filler = data[start:start + n_fill].tolist()
    depth = rng.randint(0, n_fill // 4 if far else n_fill)
    ids = filler[:depth] + needle + filler[depth:] + question
    w = [1.0] * len(ids)
    for i in range(len(ids) - answer_len, len(ids)):
        w[i] = 5.0
    return ids, w


def copy_row(vocab, seq, rng):
    """A random token sequence repeated to fill seq+1 tokens: from its second occurrence on, each
    token is predictable only by looking back (an induction head), the mechanism retrieval needs."""
    m = rng.randint(8, max(8, seq // 3))
    r = [rng.randrange(vocab) for _ in range(m)]
    ids = (r * (seq // m + 2))[:seq + 1]
    return ids


def batch(enc, data, bs, seq, needle_frac, rng, min_len=64, copy_frac=0.0, vocab=4096,
          far_frac=0.0, needle_min=None):
    """Returns (x, y, w, answers): answers lists, per retrieval row, the positions in y of the
    code's digits (empty for other rows). A share far_frac of retrieval rows are long (3/4 of seq
    or more) with the needle in their first quarter: the far-from-the-question case that
    uniform depths rarely train. Other retrieval rows are needle_min (default seq/4) to seq long."""
    xs, ws, answers = [], [], []
    for _ in range(bs):
        u = rng.random()
        if u < copy_frac:
            ids = copy_row(vocab, seq, rng)
            w = [1.0] * (seq + 1)
            answers.append([])
        elif u < copy_frac + needle_frac:
            far = rng.random() < far_frac
            lo = seq * 3 // 4 if far else (needle_min if needle_min else seq // 4)
            length = rng.randint(min(seq, max(min_len, lo)), seq)
            ids, w = needle_sample(enc, data, length, rng, far)
            pad = seq + 1 - len(ids)
            # left-fill with ordinary text so every row has seq+1 tokens
            start = rng.randint(0, len(data) - pad - 1)
            ids = data[start:start + pad].tolist() + ids
            w = [1.0] * pad + w
            n_ans = sum(1 for v in w if v > 1.0)
            # y = ids[1:], so the answer tokens are the last n_ans positions of y; drop the "."
            answers.append(list(range(seq - n_ans, seq - 1)))
        else:
            start = rng.randint(0, len(data) - seq - 2)
            ids = data[start:start + seq + 1].tolist()
            w = [1.0] * (seq + 1)
            answers.append([])
        xs.append(ids)
        ws.append(w)
    x = torch.tensor(xs, dtype=torch.long)
    w = torch.tensor(ws, dtype=torch.float32)
    return x[:, :-1], x[:, 1:], w[:, 1:], answers


def probe(net, enc, data, seq, rng, n, device, far_frac=0.0):
    """Needle accuracy at lengths up to `seq`: teacher-forced argmax over the code's digits, which
    equals greedy decoding's answer (each digit is right iff all before it are). far_frac=1 probes
    only long haystacks with the needle in their first quarter."""
    net.eval()
    ok = 0
    with torch.no_grad():
        for _ in range(n):
            x, y, _, ans = batch(enc, data, 1, seq, 1.0, rng, far_frac=far_frac)
            logits, _ = net(x.to(device))
            pred = logits[0].argmax(-1).cpu()
            ok += int(all(pred[i] == y[0, i] for i in ans[0]))
    net.train()
    return ok / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=55)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--arch", default="llama", choices=["llama", "gpt2"],
                    help="architecture of a new model (a resumed one keeps its own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(HERE), "kvq-llama", "tokenizer.json"))
    ap.add_argument("--text", default=os.path.join(WORK, "train.txt"))
    ap.add_argument("--out", default=os.path.join(WORK, "ckpt.pt"))
    ap.add_argument("--resume", help="continue from this checkpoint (weights; a fresh optimizer with warm-up)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--needle-frac", type=float, default=0.3,
                    help="share of retrieval (pass code) sequences; +0.1 in the long phase")
    ap.add_argument("--short-seq", type=int, default=512, help="sequence length of the first phase")
    ap.add_argument("--long-from", type=float, default=0.6,
                    help="fraction of the budget after which sequences are 2048 tokens long")
    ap.add_argument("--curriculum",
                    help="retrieval curriculum, e.g. 128,256,512,1024,2048: sequence lengths in turn, "
                         "moving on when the probe finds the needle in >= --advance-at of cases "
                         "(or at --long-from of the budget, straight to the last); replaces --short-seq")
    ap.add_argument("--advance-at", type=float, default=0.9)
    ap.add_argument("--probe-every", type=int, default=50, help="steps between needle probes")
    ap.add_argument("--probe-n", type=int, default=24, help="needles per probe")
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--warmup", type=int, default=100, help="learning-rate warm-up steps")
    ap.add_argument("--copy-frac", type=float, default=0.0,
                    help="share of repeated random-token rows in the first curriculum stage, halved at each later one: "
                         "dense signal for the copy mechanism that retrieval needs")
    ap.add_argument("--far-frac", type=float, default=0.0,
                    help="share of retrieval rows in the last stage that are long with the needle in their "
                         "first quarter (far from the question)")
    ap.add_argument("--needle-min", type=int, default=None,
                    help="shortest haystack of the other retrieval rows in the last stage (default: a quarter "
                         "of the sequence length)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    enc = bpe.Encoder(args.tokenizer)
    cache = os.path.join(WORK, "train_ids.pt")
    if os.path.exists(cache):
        data = torch.load(cache)
    else:
        data = encode_corpus(enc, args.text)
        torch.save(data, cache)
    print(f"training tokens: {len(data)}", flush=True)
    if args.arch == "gpt2":
        cfg = M.gpt2_config()
        if args.preset == "gpu":
            cfg = M.gpt2_config(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                                num_key_value_heads=8, intermediate_size=2048)
    else:
        cfg = M.Config()
        if args.preset == "gpu":
            cfg = M.Config(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                           num_key_value_heads=2, intermediate_size=1408)
    net = M.build(cfg)
    seen0 = 0
    if args.resume:
        d = torch.load(args.resume, map_location="cpu")
        cfg = M.Config(**d["config"])
        net = M.build(cfg)
        net.load_state_dict(d["state"])
        seen0 = d.get("tokens_seen", 0)
        print(f"resumed from {args.resume} ({seen0} tokens seen)", flush=True)
    net = net.to(args.device)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"params: {n_params}", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    budget = args.minutes * 60
    t0 = time.time()
    last_ckpt = t0
    step, seen = 0, seen0
    # Without --curriculum: short sequences (fast), then the full 2048 context for RoPE range
    # and retrieval. With it: lengths in turn, moving on once retrieval works at the current one.
    stages = [int(v) for v in args.curriculum.split(",")] if args.curriculum else [args.short_seq, 2048]
    if max(stages) > cfg.max_position_embeddings:
        sys.exit(f"train.py: sequences of {max(stages)} tokens exceed the model's {cfg.max_position_embeddings} "
                 f"positions; pass --curriculum with lengths up to {cfg.max_position_embeddings}")
    stage = 0
    probe_rng = random.Random(args.seed + 1)
    ans_loss_sum, ans_n = 0.0, 0
    while True:
        frac = (time.time() - t0) / budget
        if frac >= 1:
            break
        if frac >= args.long_from and stage < len(stages) - 1:
            stage = len(stages) - 1
            print(f"time share reached: moving to {stages[stage]} tokens", flush=True)
        seq = stages[stage]
        bs = max(1, args.batch_tokens // seq)
        last = stage == len(stages) - 1
        nf = args.needle_frac if not last else min(1.0, args.needle_frac + 0.1)
        cf = args.copy_frac / 2 ** stage
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, w, answers = batch(enc, data, bs, seq, nf, rng, copy_frac=cf, vocab=cfg.vocab_size,
                                 far_frac=args.far_frac if last else 0.0,
                                 needle_min=args.needle_min if last else None)
        x, y, w = x.to(args.device), y.to(args.device), w.to(args.device)
        logits, _ = net(x)
        loss_tok = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1), reduction="none")
        loss = (loss_tok * w.reshape(-1)).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        seen += x.numel()
        lt = loss_tok.detach().reshape(bs, seq)
        for r, pos in enumerate(answers):
            for p in pos:
                ans_loss_sum += lt[r, p].item()
                ans_n += 1
        if step % 20 == 0:
            el = time.time() - t0
            al = ans_loss_sum / max(1, ans_n)
            ans_loss_sum, ans_n = 0.0, 0
            print(f"step {step} seq {seq} loss {loss_tok.mean().item():.3f} answer-digit loss {al:.3f} "
                  f"lr {lr:.2e} tokens {seen} {(seen - seen0) / el:.0f} tok/s elapsed {el / 60:.1f} min",
                  flush=True)
        if step % args.probe_every == 0:
            acc = probe(net, enc, data, seq, probe_rng, args.probe_n, args.device)
            far = ""
            if args.far_frac > 0 and stage == len(stages) - 1:
                far = f", far {probe(net, enc, data, seq, probe_rng, args.probe_n // 2, args.device, 1.0):.2f}"
            print(f"probe step {step} seq {seq} needle accuracy {acc:.2f}{far}", flush=True)
            if acc >= args.advance_at and stage < len(stages) - 1:
                stage += 1
                print(f"retrieval works at {seq}: moving to {stages[stage]} tokens", flush=True)
        if time.time() - last_ckpt > 300:
            torch.save({"config": cfg.to_dict(), "state": net.state_dict(), "step": step,
                        "tokens_seen": seen}, args.out)
            last_ckpt = time.time()
    torch.save({"config": cfg.to_dict(), "state": net.state_dict(), "step": step,
                "tokens_seen": seen}, args.out)
    print(f"done: {step} steps, {seen} tokens, {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    sys.exit(main())
