#!/bin/bash
# A/B of kvq generate between two builds, alternating runs, medians.
#   BEFORE=<eval/target of build A> AFTER=<eval/target of build B> results/engine/ab.sh PROMPT_FILE NEW_TOKENS RUNS
# (a build's eval/target holds classes/ and lib/; copy it aside before switching commits)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
J=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}/bin/java
OUT=${OUT:-/tmp/kvq-ab}; mkdir -p "$OUT"; rm -f "$OUT"/ab-*.json
run() { $J --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Dai.djl.offline=true -Dkvq.home=$ROOT -Xmx256m \
   -cp "$1/classes:$1/lib/*" io.kvquant.cli.Kvq generate --model $ROOT/models/kvq-llama --prompt-file "$2" --kv turbo3.5 \
   --max-new-tokens $3 --no-stop --threads 2 --stats-json $4 >/dev/null 2>&1; }
for i in $(seq 1 "$3"); do
  run "$BEFORE" "$1" "$2" "$OUT/ab-before-$i.json"
  run "$AFTER" "$1" "$2" "$OUT/ab-after-$i.json"
done
OUT="$OUT" python3 - <<'PY'
import json,glob,statistics,os
for k in ("before","after"):
    d=[json.load(open(f)) for f in sorted(glob.glob(os.environ["OUT"]+f"/ab-{k}-*.json"))]
    dec=[x["decode_tokens_per_s"] for x in d]; pre=[x["prefill_tokens_per_s"] for x in d]
    print(k, "decode tok/s median %.1f %s; prefill median %.1f"%(statistics.median(dec), [round(v,1) for v in dec], statistics.median(pre)))
PY
