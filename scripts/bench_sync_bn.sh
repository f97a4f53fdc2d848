#!/usr/bin/env bash
# The cost of SyncBN: `posekd launch --nproc N -- train` in the float phase (BatchNorm training,
# --no-qat) with --sync-bn against --no-sync-bn, same global batch, same data. The two settings
# alternate REPEAT times, so a change in the machine's load hits both. Prints img/s (mean of the
# results.csv rows after batch 10) and CPU milliseconds per image of every run.
# ARCH=teacher runs `train-teacher` instead (the teacher always trains its BatchNorms), at
# --input-size 128, and adds a 1-process run to each round.
# Usage: scripts/bench_sync_bn.sh [BATCHES=40] [NPROC=2] [REPEAT=2] [ARCH=ai85pose|teacher]; POSEKD=path/to/posekd
set -euo pipefail
BATCHES=${1:-40}
NPROC=${2:-2}
REPEAT=${3:-2}
ARCH=${4:-ai85pose}
POSEKD=${POSEKD:-build/posekd}
TIMEFORMAT='%U %S'
WORK=$(mktemp -d /tmp/posekd-bench-syncbn.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$POSEKD" synth --out "$WORK/data" --train 400 --val 8 --seed 5 >/dev/null
if [ "$ARCH" = teacher ]; then
  COMMON=(train-teacher --data "$WORK/data" --split train --input-size 128 --batch-size 16 --total-batches "$BATCHES"
          --save-every 100000 --quiet --workers 1)
  MODES=(sync-bn no-sync-bn one-process)
else
  COMMON=(train --data "$WORK/data" --split train --arch "$ARCH" --batch-size 16 --total-batches "$BATCHES"
          --save-every 100000 --no-qat --no-plot --quiet --workers 1)
  MODES=(sync-bn no-sync-bn)
fi
img_s() {  # mean img/s of the logged rows after batch 10
  awk -F, 'NR > 1 && $1 > 10 { s += $5; n++ } END { if (n) printf "%.1f", s / n; else print "n/a" }' "$1/results.csv"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$REPEAT"); do
  for mode in "${MODES[@]}"; do
    # CPU seconds of all ranks (user + sys, start-up included): steadier than img/s when other
    # programs share the cores.
    if [ "$mode" = one-process ]; then
      what="1 process"
      cpu=$( { time "$POSEKD" "${COMMON[@]}" --output "$WORK/$mode-$i" >/dev/null 2>&1; } 2>&1 )
    else
      what="$NPROC processes, --$mode"
      cpu=$( { time "$POSEKD" launch --nproc "$NPROC" -- "${COMMON[@]}" "--$mode" --output "$WORK/$mode-$i" \
               >/dev/null 2>&1; } 2>&1 )
    fi
    echo "$what (run $i): $(img_s "$WORK/$mode-$i") img/s," \
         "$(echo "$cpu" | awk -v n=$((BATCHES * 16)) '{ printf "%.1f", ($1 + $2) * 1000 / n }') CPU ms/img"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
