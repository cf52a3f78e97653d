"""One `kvq generate` with a stats JSON, timing each generated token as it arrives on stdout (the
command flushes per token): prints prefill and decode tok/s (from the stats), the time of the
first 16 decode tokens (JIT warm-up), the median rate over the second half of the tokens, peak RSS.
  tt.py KVQ_TREE MODEL_DIR CONTEXT KV NEW_TOKENS THREADS [java options...]
MODEL_DIR holds prompt-CONTEXT.txt (eval/scripts/long-context-model.sh); JOPTS in the environment
replaces the default KVQ_JAVA_OPTS (-Xms64m -Xmx512m)."""
import subprocess, sys, time, os, json, statistics, tempfile
kvq, model, ctx, kv, new, thr = sys.argv[1:7]; opts = " ".join(sys.argv[7:])
st = os.path.join(tempfile.gettempdir(), f"tt-{os.getpid()}.json")
env = dict(os.environ, JAVA_HOME="/usr/lib/jvm/temurin-25-jdk-amd64", KVQ_JAVA_OPTS=os.environ.get("JOPTS", "-Xms64m -Xmx512m") + " " + opts)
p = subprocess.Popen([kvq + "/kvq", "generate", "--model", model, "--prompt-file", f"{model}/prompt-{ctx}.txt", "--kv", kv,
                      "--max-new-tokens", new, "--no-stop", "--threads", thr, "--stats-json", st], stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, env=env, bufsize=0)
ts = []
while True:
    b = p.stdout.read(4096)
    if not b: break
    ts.append(time.perf_counter())
p.wait()
s = json.load(open(st)); os.remove(st)
d = [b - a for a, b in zip(ts, ts[1:])]
n = len(d)
first = sum(d[:16]); tail = d[n // 2:]
print(f"{kv:8s} thr={thr} ctx={s['prompt_tokens']} new={new} pre={s['prefill_tokens_per_s']:.0f} dec={s['decode_tokens_per_s']:.1f} "
      f"first16={first*1000:.0f}ms steady_med={1/statistics.median(tail):.0f}tok/s rss={s['peak_rss_bytes']>>20} {os.path.basename(kvq)} {opts}", flush=True)
