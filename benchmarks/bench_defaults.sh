#!/usr/bin/env bash
# Wall time, CPU time and peak memory of the default commands a new user runs: `train` on ML-100K and ML-1M
# (one after another, so their ratio is measured in one run) and `evaluate` of the ML-1M run (every K, every baseline).
# Usage: bash benchmarks/bench_defaults.sh [OUT_DIR]   (needs GNU time at /usr/bin/time; quote the load it prints)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
echo "start $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), load: $(cut -d' ' -f1-3 /proc/loadavg)"
for ds in movielens-100k movielens-1m; do
  /usr/bin/time -f "$ds train: %e s wall, %U s user, %M KB peak RSS" \
    python -m metarec_core train --dataset "$ds" --out "$out/$ds" --quiet > "$out/$ds.log" 2>&1
  tail -1 "$out/$ds.log"; grep -E "finished after|test_mae|test_ndcg" "$out/$ds.log" | sed 's/^/  /'
  echo "  load after: $(cut -d' ' -f1-3 /proc/loadavg)"
done
/usr/bin/time -f "movielens-1m evaluate: %e s wall, %U s user, %M KB peak RSS" \
  python -m metarec_core evaluate --run "$out/movielens-1m" --json > "$out/evaluate-1m.json" 2> "$out/evaluate-1m.err"
tail -1 "$out/evaluate-1m.err"; echo "  load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "end $(date -u +%FT%TZ)"
