#!/usr/bin/env bash
# The same benchmarks on two checkouts of beam_ml, alternating (so both see the same load).
#   git worktree add /tmp/before <commit>
#   benchmarks/before_after.sh /tmp/before [OUT]      # logs and a summary in OUT (/tmp/before_after)
# Each benchmark's own figures are in OUT/<name>.{before,after}.log.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=$(cd "$1" && pwd); AFTER=$here; OUT=${2:-/tmp/before_after}
PY=${PY:-$here/.venv/bin/python}
mkdir -p "$OUT"
cmds=(
  "pca|benchmarks/bench_pca.py --rows 1000000"
  "kmeans|benchmarks/bench_kmeans.py --rows 1000000 --skip-kmeans-full --skip-partial-fit --repeat 2"
  "ll_dense|benchmarks/bench_linear_learner.py --no-peers --repeat 2"
  "ll_sparse|benchmarks/bench_linear_learner.py --sparse --no-peers --repeat 2"
  "fm|benchmarks/bench_fm_ratings.py --epochs 10 --skip-mxnet"
  "predict|benchmarks/bench_predict_large_model.py"
  "cli|benchmarks/bench_cli.py --repeat 3"
)
for c in "${cmds[@]}"; do
  name=${c%%|*}; cmd=${c#*|}
  for tree in before after; do
    dir=$BEFORE; [ "$tree" = after ] && dir=$AFTER
    start=$(date +%s.%N)
    (cd "$dir" && PYTHONPATH="$dir" timeout 900 "$PY" $cmd) > "$OUT/$name.$tree.log" 2>&1
    rc=$?
    printf "%-10s %-6s %7.1f s rc=%s\n" "$name" "$tree" "$(echo "$(date +%s.%N) - $start" | bc)" "$rc" \
      | tee -a "$OUT/summary.txt"
  done
done
