#!/usr/bin/env bash
# Peak RSS and decode speed of two kvquant builds, alternated row by row in one run, with the
# flags and prompts of eval/scripts/llama_compare.py's kvq rows (-Xms64m -Xmx512m, 64 new tokens,
# 2 threads, the bundled weights with 65,536 declared positions), plus a row with no JVM options.
#   results/engine-overhead/ab.sh BASE_TREE NEW_TREE [LONG_MODEL_DIR]
# BASE_TREE / NEW_TREE: checkouts with ./kvq built (e.g. `git worktree add /tmp/base main && /tmp/base/kvq --help`).
# LONG_MODEL_DIR: made by eval/scripts/long-context-model.sh DIR "1024 8192" when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=$1; new=$2; long=${3:-/tmp/kvq-long}
[ -f "$long/prompt-8192.txt" ] || "$here/../../eval/scripts/long-context-model.sh" "$long" "1024 8192" >/dev/null
for rep in 1 2; do
  for ctx in 1024 8192; do
    [ $ctx = 8192 ] && [ $rep = 2 ] && continue
    for kv in turbo3.5 full; do
      for b in "$base" "$new"; do
        JOPTS="-Xms64m -Xmx512m" /usr/bin/python3 "$here/tt.py" "$b" "$long" $ctx $kv 64 2
      done
    done
  done
  for b in "$base" "$new"; do  # no JVM options at all: what a plain ./kvq generate gets
    JOPTS=" " /usr/bin/python3 "$here/tt.py" "$b" "$long" 1024 turbo3.5 64 2
  done
done
