#!/usr/bin/env bash
# Peak resident memory and decode speed of kvq generate per execution mode and KV setting, one
# process per run (so peak RSS is that run's), on prompts of several lengths.
#   eval/scripts/bench-modes.sh MODEL_DIR OUT_DIR "1024 2048 8192" [NEW_TOKENS]
# MODEL_DIR must hold prompt-<n>.txt files of about n tokens each and, for graph:<kv> configs, be
# prepared for graph mode (./kvq prepare --model MODEL_DIR --mode graph --kv <kv>); the engine
# prepares itself on first use (into the prepared-model cache, see docs/engine.md). Writes OUT_DIR/<mode>-<kv>-<n>.json (kvq
# generate --stats-json) and prints a TSV summary. Heap: -Xms64m -Xmx${HEAP:-256m}, no pre-touch, so the
# round-trip mode's on-heap dense mirror shows in RSS while the heap cannot balloon with garbage.
set -euo pipefail
model=$1; out=$2; lengths=$3; new=${4:-64}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
configs=${CONFIGS:-"roundtrip:full roundtrip:turbo3.5 engine:full engine:turbo3.5 engine:turbo2.5"}
printf "mode\tkv\tprompt_tokens\tdecode_tok_s\tprefill_tok_s\tpeak_rss_mib\tkv_bytes\tpast_bytes_per_step\n"
for n in $lengths; do
  for c in $configs; do
    mode=${c%%:*}; kv=${c#*:}
    f="$out/$mode-$kv-$n.json"
    KVQ_JAVA_OPTS="-Xms64m -Xmx${HEAP:-256m}" "$root/kvq" generate --model "$model" --prompt-file "$model/prompt-$n.txt" \
      --kv "$kv" --mode "$mode" --max-new-tokens "$new" --no-stop --threads 2 --stats-json "$f" >/dev/null 2>&1 \
      || { echo "failed: $mode $kv $n" >&2; continue; }
    get() { grep -o "\"$1\": *[0-9.eE+-]*" "$f" | head -1 | sed 's/.*: *//'; }
    printf "%s\t%s\t%s\t%.1f\t%.1f\t%.0f\t%s\t%s\n" "$mode" "$kv" "$(get prompt_tokens)" "$(get decode_tokens_per_s)" \
      "$(get prefill_tokens_per_s)" "$(echo "$(get peak_rss_bytes) / 1048576" | bc -l)" "$(get kv_bytes)" \
      "$(get past_bytes_per_decode_step)"
  done
done
