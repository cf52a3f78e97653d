#!/usr/bin/env bash
# Engine vs round-trip on the bundled model and prompt, one process per row, fixed heap.
#   results/engine/run.sh   (from the repository root; writes results/engine/<mode>-<kv>.json)
set -euo pipefail
cd "$(dirname "$0")/../.."
for kv in full turbo3.5 turbo2.5; do
  for mode in engine roundtrip; do
    KVQ_JAVA_OPTS="-Xms64m -Xmx256m" ./kvq generate --prompt-file models/prompts/long.txt --kv "$kv" --mode "$mode" \
      --max-new-tokens 64 --no-stop --threads 2 --stats-json "results/engine/$mode-$kv.json" >/dev/null
  done
done
python3 - <<'PY'
import json
print("| mode | kv | prefill tok/s | decode tok/s | kv_bytes (all held) | of which decoder copies | fp16 equivalent | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for kv in ("full","turbo3.5","turbo2.5"):
    for mode in ("engine","roundtrip"):
        j=json.load(open(f"results/engine/{mode}-{kv}.json"))
        print(f"| {j['mode']} | {kv} | {j['prefill_tokens_per_s']:.0f} | {j['decode_tokens_per_s']:.1f} | {j['kv_bytes']:,} | {j['kv_bytes_decoder']:,} | {j['kv_bytes_fp16_equivalent']:,} | {j['peak_rss_bytes']/1048576:.0f} |")
PY
