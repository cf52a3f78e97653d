"""JFR summary: execution and native samples by thread and frame, allocation by class and site.
  jfrsum.py RECORDING.jfr"""
import json, subprocess, sys, collections
f = sys.argv[1]; jfr = "/usr/lib/jvm/temurin-25-jdk-amd64/bin/jfr"
def ev(name, depth=12):
    out = subprocess.run([jfr, "print", "--json", "--stack-depth", str(depth), "--events", name, f], capture_output=True, text=True).stdout
    return json.loads(out)["recording"]["events"]
def fr(x):
    m = x["method"]; return m["type"]["name"].split(".")[-1] + "." + m["name"]
for name in ["jdk.ExecutionSample", "jdk.NativeMethodSample"]:
    evs = ev(name)
    top = collections.Counter(); thr = collections.Counter(); incl = collections.Counter()
    for e in evs:
        st = e["values"]["stackTrace"]
        if not st: continue
        frames = st["frames"]
        t = e["values"].get("sampledThread") or e["values"].get("eventThread") or {}
        thr[t.get("javaName")] += 1
        top[fr(frames[0])] += 1
        for m in set(fr(x) for x in frames): incl[m] += 1
    print("==", name, len(evs)); print(" threads", thr.most_common(8))
    print(" top:"); [print("  ", c, k) for k, c in top.most_common(25)]
    print(" inclusive:"); [print("  ", c, k) for k, c in incl.most_common(30)]
evs = ev("jdk.ObjectAllocationSample", 8)
w = collections.Counter(); wt = collections.Counter()
for e in evs:
    v = e["values"]; st = v["stackTrace"]
    key = " < ".join(fr(x) for x in st["frames"][:4]) if st else "?"
    w[key] += v["weight"]; wt[v["objectClass"]["name"]] += v["weight"]
print("== alloc by type"); [print("  ", c >> 20, "MiB", k) for k, c in wt.most_common(12)]
print("== alloc by site"); [print("  ", c >> 20, "MiB", k) for k, c in w.most_common(25)]
