"""ONNX Runtime profile of the engine pieces (kvq.engine.ortProfile=PREFIX): per decode run (after the
first PREFILL_RUNS runs of each piece), model_run time, node kernel time and time per operator.
  ortprof.py PREFIX [PREFILL_RUNS]"""
import json, glob, collections, sys, statistics
files = sorted(glob.glob(sys.argv[1] + "*.json"))
tot_run = tot_node = 0; allops = collections.Counter(); nruns = 0
for f in files:
    ev = json.load(open(f))
    runs = [e for e in ev if e.get("cat") == "Session" and e["name"] == "model_run"]
    nodes = [e for e in ev if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    runs.sort(key=lambda e: e["ts"])
    dec = runs[int(sys.argv[2]) if len(sys.argv) > 2 else 4:]  # after the prefill chunks
    if not dec: continue
    t0 = dec[0]["ts"]
    rd = [e["dur"] for e in dec]
    nd = [e for e in nodes if e["ts"] >= t0]
    ops = collections.Counter(); 
    for e in nd: ops[e["args"].get("op_name", "?")] += e["dur"]
    per_run_nodes = sum(e["dur"] for e in nd) / len(dec)
    print(f"{f.split('/')[-1]}: decode runs {len(dec)}, model_run median {statistics.median(rd)} us, mean {sum(rd)/len(rd):.0f}; "
          f"kernels per run {per_run_nodes:.0f} us over {len(nd)/len(dec):.0f} nodes; top ops (us/run): "
          + ", ".join(f"{k} {v/len(dec):.0f}" for k, v in ops.most_common(6)))
    tot_run += sum(rd) / len(dec); tot_node += per_run_nodes
    for k, v in ops.items(): allops[k] += v / len(dec)
print(f"per token: model_run sum of means {tot_run:.0f} us, kernels {tot_node:.0f} us")
print("per token by op:", ", ".join(f"{k} {v:.0f}" for k, v in allops.most_common(12)))
