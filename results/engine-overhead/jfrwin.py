"""JFR samples in the last part of a recording (steady state): jfrwin.py RECORDING.jfr FRACTION_START"""
import json, subprocess, sys, collections
# jfrwin.py REC FRACTION_START : samples in the last part of the recording, by thread and top frames (Java + native)
f = sys.argv[1]; frac = float(sys.argv[2]); jfr = "/usr/lib/jvm/temurin-25-jdk-amd64/bin/jfr"
def ev(name):
    out = subprocess.run([jfr, "print", "--json", "--stack-depth", "30", "--events", name, f], capture_output=True, text=True).stdout
    return json.loads(out)["recording"]["events"]
def fr(x):
    m = x["method"]; return m["type"]["name"].split("/")[-1] + "." + m["name"]
allev = [(n, e) for n in ("jdk.ExecutionSample", "jdk.NativeMethodSample") for e in ev(n)]
ts = sorted(e["values"]["startTime"] for _, e in allev); t0 = ts[int(len(ts) * frac)]
thr = collections.Counter(); top = collections.Counter(); incl = collections.Counter()
for n, e in allev:
    v = e["values"]
    if v["startTime"] < t0 or not v["stackTrace"]: continue
    t = (v.get("sampledThread") or {}).get("javaName")
    fs = v["stackTrace"]["frames"]
    thr[(n[4:10], t)] += 1; top[(t, n[4:10], fr(fs[0]))] += 1
    for m in set(fr(x) for x in fs): incl[(t, m)] += 1
print(thr.most_common(10))
for k, c in top.most_common(30): print(c, k)
print("-- inclusive main")
for k, c in incl.most_common(60):
    if k[0] == "main": print(c, k[1])
