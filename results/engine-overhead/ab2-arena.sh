#!/usr/bin/env bash
# Peak RSS at 8K of two builds alternated (here: ONNX Runtime arena on vs off + MALLOC_ARENA_MAX=2).
#   results/engine-overhead/ab2-arena.sh TREE_A TREE_B LONG_MODEL_DIR   (see ab.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for kv in turbo3.5 full; do
  for b in "$1" "$2"; do
    JOPTS="-Xms64m -Xmx512m" /usr/bin/python3 "$here/tt.py" "$b" "$3" 8192 $kv 64 2
  done
done
