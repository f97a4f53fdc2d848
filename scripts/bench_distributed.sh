#!/usr/bin/env bash
# Data-parallel scaling on this machine: `posekd train` as 1 process (all cores) against
# `posekd launch --nproc N` (cores split between the processes), same global batch, same data.
# Prints img/s (mean of results.csv rows after the first 20 batches) for each.
# Usage: scripts/bench_distributed.sh [BATCHES=60] [NPROC=2] [ARCH=ai85pose]; POSEKD=path/to/posekd
set -euo pipefail
BATCHES=${1:-60}
NPROC=${2:-2}
ARCH=${3:-ai85pose}
POSEKD=${POSEKD:-build/posekd}
WORK=$(mktemp -d /tmp/posekd-bench-dist.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$POSEKD" synth --out "$WORK/data" --train 400 --val 8 --seed 5 >/dev/null
COMMON=(train --data "$WORK/data" --split train --arch "$ARCH" --batch-size 16 --total-batches "$BATCHES"
        --save-every 100000 --no-qat --no-plot --quiet --workers 1)
img_s() {  # mean img/s of the logged rows after batch 20
  awk -F, 'NR > 1 && $1 > 20 { s += $5; n++ } END { if (n) printf "%.1f", s / n; else print "n/a" }' "$1/results.csv"
}
"$POSEKD" "${COMMON[@]}" --output "$WORK/one" --threads "$(nproc)"
"$POSEKD" launch --nproc "$NPROC" -- "${COMMON[@]}" --output "$WORK/many" 2>/dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "1 process x $(nproc) threads: $(img_s "$WORK/one") img/s"
echo "$NPROC processes x $(( $(nproc) / NPROC )) thread(s): $(img_s "$WORK/many") img/s"
