#!/usr/bin/env python3
"""kvquant against llama.cpp on the same weights: decode and prefill tokens/s, peak RSS, bits per
element, and quality (perplexity, KL to the full-precision cache) per KV setting, in one run.

  /usr/bin/python3 eval/scripts/llama_compare.py --llama LLAMA_CPP_DIR --out OUT_DIR \
      [--contexts 1024,2048,8192,16384] [--threads 2] [--windows 4]

LLAMA_CPP_DIR is a llama.cpp source tree built with
  cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build build --target llama-bench llama-perplexity llama-simple
This script builds nothing. It converts the bundled model to GGUF (models/scripts/onnx_to_gguf.py,
with the gguf package of that tree), checks the conversion (perplexity within 0.1% of kvq `full`
on the same windows, same first greedy tokens), then runs llama-bench / llama-perplexity for each
llama.cpp KV type beside `kvq generate` / `kvq eval perplexity` for each kvq setting, and writes
OUT_DIR/compare.json and compare.md. Tooling only: the product and its tests never need Python.

Protocols, so the numbers are comparable:
- speed: a prompt of CONTEXT tokens, then 64 generated tokens. llama.cpp: llama-bench `-p CONTEXT -n 0`
  (prefill) and `-p 0 -n 64 -d CONTEXT` (decode at that depth), flash attention on, one process per
  row under /usr/bin/time for peak RSS; kvq: `kvq generate` with a CONTEXT-token prompt, 64 new
  tokens, `--no-stop`, `--warmup full`, stats JSON (peak RSS is the process's VmHWM), `-Xmx` fixed.
  llama-bench leaves a warm-up run out of its figure; kvq's full warm-up compiles the attention
  kernels before the prompt (its wait is in the stats, not in the rates); kvq's decode tok/s is
  the whole decode, any JIT work left included, so kvq rows also report `decode_tokens_per_s_steady` (the second half of the decode
  steps), and the ratios are given for both.
- quality: windows of 2,048 tokens of models/data/heldout.txt; the first half is context, the second
  half is scored: llama-perplexity -c 2048 scores tokens [1025, 2048) of each window (the logits at
  positions 1024..2046), so kvq eval perplexity runs with --context 2048 --prefix 1025, which scores
  exactly the same tokens. KL is against each tool's own full-precision cache (llama.cpp: f32
  KV through --kl-divergence-base; kvq: `full`).
- 8K and 16K need more than the model's 2,048 trained positions: both tools get the same weights
  with 65,536 declared positions (eval/scripts/long-context-model.sh; GGUF --context 65536);
  text quality there is meaningless, speed and memory are what is measured.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLAMA_TYPES = {"f16": 16.0, "q8_0": 8.5, "q4_0": 4.5, "iq4_nl": 4.5}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, env=None, timeout=3600):
    """Runs cmd under /usr/bin/time; returns (stdout+stderr, peak RSS bytes)."""
    full = ["/usr/bin/time", "-f", "KVQ_MAXRSS_KB=%M"] + cmd
    p = subprocess.run(full, capture_output=True, text=True, env=env, timeout=timeout)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... exited {p.returncode}:\n{out[-2000:]}")
    m = re.search(r"KVQ_MAXRSS_KB=(\d+)", out)
    return out, (int(m.group(1)) * 1024 if m else None)


def convert(llama, out, context):
    path = os.path.join(out, f"kvq-llama-ctx{context}.gguf")
    if not os.path.exists(path):
        env = dict(os.environ, PYTHONPATH=os.path.join(llama, "gguf-py"))
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "models/scripts/onnx_to_gguf.py"), "--model",
                        os.path.join(ROOT, "models/kvq-llama"), "--out", path, "--context", str(context)],
                       check=True, env=env, capture_output=True)
    return path


def llama_ppl(bin_dir, gguf, text, windows, ctk, threads, kl_base=None, kl=False):
    cmd = [os.path.join(bin_dir, "llama-perplexity"), "-m", gguf, "-f", text, "-c", "2048", "-b", "2048",
           "--chunks", str(windows), "-t", str(threads), "-ctk", ctk, "-ctv", ctk, "-fa", "on"]
    if kl_base:
        cmd += ["--kl-divergence-base", kl_base] + (["--kl-divergence"] if kl else [])
    out, _ = run(cmd)
    r = {}
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", out) or re.search(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", out)
    if m:
        r["perplexity"] = float(m.group(1))
    m = re.search(r"Mean\s+KLD:\s+([0-9.]+)", out)
    if m:
        r["kl"] = float(m.group(1))
    m = re.search(r"Mean PPL\(base\)\s*:\s*([0-9.]+)", out)
    if m:
        r["base_perplexity"] = float(m.group(1))
    return r


def kvq_ppl(settings, windows, threads):
    out = subprocess.run([os.path.join(ROOT, "kvq"), "eval", "perplexity", "--kv", ";".join(settings), "--windows",
                          str(windows), "--context", "2048", "--prefix", "1025", "--threads", str(threads), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def llama_speed(bin_dir, gguf, ctx, ctk, threads, new):
    bench = os.path.join(bin_dir, "llama-bench")
    common = ["-m", gguf, "-t", str(threads), "-ctk", ctk, "-ctv", ctk, "-fa", "1", "-r", "2", "-o", "json"]
    out, _ = run([bench, "-p", str(ctx), "-n", "0"] + common)
    pp = json.loads(out[out.index("["): out.rindex("]") + 1])[0]["avg_ts"]
    out, rss = run([bench, "-p", "0", "-n", str(new), "-d", str(ctx)] + common)
    tg = json.loads(out[out.index("["): out.rindex("]") + 1])[0]["avg_ts"]
    return {"prefill_tokens_per_s": pp, "decode_tokens_per_s": tg, "peak_rss_bytes": rss}


def kvq_speed(model_dir, ctx, kv, threads, new, heap, mode):
    stats = os.path.join(model_dir, f"stats-{kv}-{ctx}.json")
    cmd = [os.path.join(ROOT, "kvq"), "generate", "--model", model_dir, "--prompt-file",
           os.path.join(model_dir, f"prompt-{ctx}.txt"), "--kv", kv, "--max-new-tokens", str(new), "--no-stop",
           "--threads", str(threads), "--stats-json", stats, "--warmup", "full"]
    if mode:
        cmd += ["--mode", mode]
    run(cmd, env=dict(os.environ, KVQ_JAVA_OPTS=f"-Xms64m -Xmx{heap}"))
    s = json.load(open(stats))
    d = s["config"]["model_shape"]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    # K and V: tokens x layers x KV heads x head dim
    elems = 2 * s["kv_tokens"] * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"]
    return {"prefill_tokens_per_s": s["prefill_tokens_per_s"], "decode_tokens_per_s": s["decode_tokens_per_s"],
            "decode_tokens_per_s_steady": s.get("decode_tokens_per_s_steady"), "jvm_gc": s.get("run", {}).get("jvm_gc"),
            "peak_rss_bytes": s["peak_rss_bytes"], "kv_bytes": s["kv_bytes"], "prompt_tokens": s["prompt_tokens"],
            "bits_per_element": 8.0 * s["kv_bytes"] / elems, "mode": s.get("mode"), "model_shape": d}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama", required=True, help="llama.cpp source tree with a build/ folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--contexts", default="1024,2048,8192,16384")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=4, help="2,048-token windows of held-out text for quality")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--llama-types", default="f16,q8_0,q4_0,iq4_nl")
    ap.add_argument("--kvq", default="full;turbo3.5;turbo2.5", help="kvq --kv settings for quality (;-separated)")
    ap.add_argument("--speed-types", default="f16,q4_0", help="llama.cpp KV types in the speed rows")
    ap.add_argument("--kvq-speed", default="turbo3.5;full", help="kvq --kv settings in the speed rows")
    ap.add_argument("--kvq-mode", default="", help="kvq --mode (default: kvq's own default)")
    ap.add_argument("--heap", default="512m", help="kvq -Xmx")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    a = ap.parse_args()
    bin_dir = os.path.join(a.llama, "build", "bin")
    for b in ("llama-bench", "llama-perplexity", "llama-simple"):
        if not os.access(os.path.join(bin_dir, b), os.X_OK):
            sys.exit(f"llama_compare: {bin_dir}/{b} not found; build llama.cpp first (see this script's help)")
    os.makedirs(a.out, exist_ok=True)
    contexts = [int(c) for c in a.contexts.split(",")]
    ltypes = a.llama_types.split(",")
    ksets = [s for s in a.kvq.split(";") if s]
    text = os.path.join(ROOT, "models/data/heldout.txt")
    res = {"meta": {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threads": a.threads,
                    "git": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                          text=True).stdout.strip(),
                    "llama_cpp": subprocess.run(["git", "-C", a.llama, "log", "-1", "--format=%h %cd"],
                                                capture_output=True, text=True).stdout.strip(),
                    "new_tokens": a.new_tokens, "windows": a.windows},
           "check": {}, "quality": [], "speed": []}

    def save():
        json.dump(res, open(os.path.join(a.out, "compare.json"), "w"), indent=1)
        open(os.path.join(a.out, "compare.md"), "w").write(markdown(res))

    g2k = convert(a.llama, a.out, 2048)
    glong = convert(a.llama, a.out, 65536)
    log(f"converted: {g2k}, {glong}")

    # conversion check: greedy tokens and perplexity against kvq full
    prompt = open(os.path.join(ROOT, "models/prompts/long.txt")).read()[:600]
    sim = subprocess.run([os.path.join(bin_dir, "llama-simple"), "-m", g2k, "-n", "16", prompt], capture_output=True,
                         text=True)
    kv_gen = subprocess.run([os.path.join(ROOT, "kvq"), "generate", "--prompt", prompt, "--kv", "full",
                             "--max-new-tokens", "16", "--no-stop"], capture_output=True, text=True)
    llama_text = sim.stdout[sim.stdout.find(prompt) + len(prompt):] if prompt in sim.stdout else sim.stdout
    res["check"]["llama_greedy"] = llama_text.strip()
    res["check"]["kvq_greedy"] = kv_gen.stdout.strip()
    res["check"]["same_greedy_text"] = llama_text.strip().startswith(kv_gen.stdout.strip()[:40])
    log(f"greedy: llama {llama_text.strip()[:60]!r} | kvq {kv_gen.stdout.strip()[:60]!r}")

    if not a.skip_quality:
        base = os.path.join(a.out, "kl-base.bin")
        f32 = llama_ppl(bin_dir, g2k, text, a.windows, "f32", a.threads, kl_base=base)
        res["quality"].append({"tool": "llama.cpp", "kv": "f32", "bits_per_element": 32.0, **f32})
        for t in ltypes:
            r = llama_ppl(bin_dir, g2k, text, a.windows, t, a.threads, kl_base=base, kl=True)
            res["quality"].append({"tool": "llama.cpp", "kv": t, "bits_per_element": LLAMA_TYPES.get(t), **r})
            log(f"llama.cpp {t}: {r}")
        if "perplexity" not in f32:  # the base run's figure, as the KL runs report it
            f32["perplexity"] = next((q["base_perplexity"] for q in res["quality"] if "base_perplexity" in q), None)
            res["quality"][0]["perplexity"] = f32["perplexity"]
        save()
        kq = kvq_ppl(ksets, a.windows, a.threads)
        for r in kq["results"]:
            res["quality"].append({"tool": "kvq", "kv": r["kv"], "bits_per_element": r.get("bits_per_element"),
                                   "perplexity": r.get("perplexity"), "kl": r.get("kl_mean")})
        log("kvq quality done")
        kfull = next((q for q in res["quality"] if q["tool"] == "kvq" and q["kv"] == "full"), None)
        if kfull and f32.get("perplexity"):
            res["check"]["perplexity_llama_f32"] = f32["perplexity"]
            res["check"]["perplexity_kvq_full"] = kfull["perplexity"]
            res["check"]["perplexity_rel_diff"] = abs(f32["perplexity"] / kfull["perplexity"] - 1)
        save()

    if a.skip_speed:
        save()
        print(os.path.join(a.out, "compare.md"))
        return
    longdir = os.path.join(a.out, "kvq-long")
    subprocess.run([os.path.join(ROOT, "eval/scripts/long-context-model.sh"), longdir,
                    " ".join(str(c) for c in contexts)], check=True, capture_output=True)
    for ctx in contexts:
        for t in a.speed_types.split(","):
            try:
                r = llama_speed(bin_dir, glong, ctx, t, a.threads, a.new_tokens)
            except Exception as e:  # keep the other rows
                r = {"error": str(e)[-300:]}
            res["speed"].append({"tool": "llama.cpp", "kv": t, "context": ctx, "bits_per_element": LLAMA_TYPES.get(t), **r})
            log(f"llama.cpp {t} @ {ctx}: {r}")
            save()
        for kv in [k for k in a.kvq_speed.split(";") if k]:
            try:
                r = kvq_speed(longdir, ctx, kv, a.threads, a.new_tokens, a.heap, a.kvq_mode)
            except Exception as e:
                r = {"error": str(e)[-300:]}
            res["speed"].append({"tool": "kvq", "kv": kv, "context": ctx, **r})
            log(f"kvq {kv} @ {ctx}: {r}")
            save()
    save()
    print(os.path.join(a.out, "compare.md"))


def markdown(res):
    b = [f"# kvquant vs llama.cpp (same weights), {res['meta']['date']}, {res['meta']['threads']} threads, "
         f"kvq {res['meta']['git']}, llama.cpp {res['meta']['llama_cpp']}", ""]
    c = res["check"]
    if c:
        b.append(f"Conversion check: perplexity llama.cpp f32 {c.get('perplexity_llama_f32')} vs kvq full "
                 f"{c.get('perplexity_kvq_full')} (relative difference {c.get('perplexity_rel_diff')}); "
                 f"same greedy text: {c.get('same_greedy_text')}")
        b.append("")
    if res["quality"]:
        b += [f"Quality ({res['meta']['windows']} windows of 2,048 held-out tokens, second half scored):", "",
              "| tool | kv | bits/elem | perplexity | Δ ppl vs own full | KL vs own full |", "|---|---|---:|---:|---:|---:|"]
        ref = {"llama.cpp": next((q.get("perplexity") for q in res["quality"] if q["kv"] == "f32"), None),
               "kvq": next((q.get("perplexity") for q in res["quality"] if q["tool"] == "kvq" and q["kv"] == "full"), None)}
        for q in res["quality"]:
            p, r = q.get("perplexity"), ref.get(q["tool"])
            d = f"{(p / r - 1) * 100:+.2f}%" if p and r else ""
            bits = q.get("bits_per_element")
            b.append(f"| {q['tool']} | {q['kv']} | {bits if bits is None else round(bits, 2)} | {p} | {d} | {q.get('kl')} |")
        b.append("")
    if res["speed"]:
        b += [f"Speed and memory (prompt of CONTEXT tokens, then {res['meta']['new_tokens']} generated):", "",
              "kvq decode: whole decode (JIT warm-up included) / steady (second half of the steps; llama-bench "
              "also leaves its warm-up out).", "",
              "| context | tool | kv | decode tok/s | prefill tok/s | peak RSS MiB | decode vs llama f16 | decode vs llama q4_0 |",
              "|---:|---|---|---:|---:|---:|---:|---:|"]
        for s in res["speed"]:
            def ref(kv):
                return next((x.get("decode_tokens_per_s") for x in res["speed"]
                             if x["tool"] == "llama.cpp" and x["kv"] == kv and x["context"] == s["context"]), None)
            d = s.get("decode_tokens_per_s")
            ds = s.get("decode_tokens_per_s_steady")
            f16, q4 = ref("f16"), ref("q4_0")
            rss = s.get("peak_rss_bytes")

            def vs(r):
                x = f"{fmt(d / r if d and r else None, 2)}x"
                return x + (f" / {fmt(ds / r, 2)}x" if ds and r else "")
            b.append(f"| {s['context']} | {s['tool']} | {s['kv']} | {fmt(d)}{' / ' + fmt(ds) if ds else ''} | "
                     f"{fmt(s.get('prefill_tokens_per_s'))} | {fmt(rss / 2**20 if rss else None)} | {vs(f16)} | {vs(q4)} |"
                     + (f" error: {s['error'][:80]}" if "error" in s else ""))
    return "\n".join(b) + "\n"


def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


if __name__ == "__main__":
    main()
