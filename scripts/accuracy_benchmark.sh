#!/usr/bin/env bash
# Accuracy benchmark anyone can rerun: `posekd demo --hard-data` (posekd synth's default, hard
# people: every direction, 0-4 people from small to frame-filling, clutter, occluders, crowds) with
# its fixed budget, once per seed, then the mean and spread of every row (ground-truth ceiling,
# teacher, distilled student float/QAT/int8, student without teacher) over the seeds.
#
#   scripts/accuracy_benchmark.sh                 # seeds 1 and 2, build/posekd, into accuracy-out/
#   SEEDS="1 2 3" OUT=/tmp/acc scripts/accuracy_benchmark.sh --threads 2
#
# Extra arguments go to every `posekd demo` call. Each run's own table, timing and pictures stay in
# OUT/seedN/; the summary is OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
POSEKD=${POSEKD:-build/posekd}
OUT=${OUT:-accuracy-out}
SEEDS=${SEEDS:-"1 2"}
[ -x "$POSEKD" ] || { echo "accuracy_benchmark: $POSEKD not found (run make build, or set POSEKD)" >&2; exit 1; }
mkdir -p "$OUT"
dirs=()
for s in $SEEDS; do
  echo "== seed $s"
  start=$(date +%s)
  "$POSEKD" demo --hard-data --seed "$s" --out "$OUT/seed$s" --quiet "$@"
  echo "seed $s: $(( $(date +%s) - start )) s wall" | tee "$OUT/seed$s/wall.txt"
  dirs+=("$OUT/seed$s")
done
{
  echo "posekd demo --hard-data, seeds: $SEEDS ($(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores)"
  echo
  python3 scripts/accuracy_table.py "${dirs[@]}"
  echo
  for d in "${dirs[@]}"; do echo "$d: $(cat "$d/wall.txt")"; grep -h '^Budget\|^Time' "$d/table.md"; done
} | tee "$OUT/summary.md"
