#!/usr/bin/env bash
# Makes a folder for measuring beyond the bundled model's 2,048-token context: the bundled model
# (linked, not copied) with a config.json that declares 65,536 positions, and prompt-<n>.txt
# files of about n tokens cut from the held-out text repeated. Rotary positions extrapolate
# badly in quality, so this is for memory and speed only. Then prepares it for java-attention.
#   eval/scripts/long-context-model.sh OUT_DIR "1024 2048 8192 16384"
set -euo pipefail
out=$1; lengths=${2:-"1024 2048 8192 16384"}
root=$(cd "$(dirname "$0")/../.." && pwd)
src="$root/models/kvq-llama"
mkdir -p "$out"
ln -sf "$src/model.onnx" "$out/model.onnx"
ln -sf "$src/tokenizer.json" "$out/tokenizer.json"
sed 's/"max_position_embeddings": *[0-9]*/"max_position_embeddings": 65536/' "$src/config.json" > "$out/config.json"
held="$root/models/data/heldout.txt"
for n in $lengths; do
  # about 3.6 characters per token on this text with this tokenizer
  chars=$(( n * 36 / 10 ))
  { while :; do cat "$held" || break; done; } | head -c "$chars" > "$out/prompt-$n.txt" || true
done
"$root/kvq" prepare --model "$out" >/dev/null
echo "$out"
