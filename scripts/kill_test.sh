#!/usr/bin/env bash
# SIGKILL / resume test for `posekd train` (docs/robustness.md).
#
#   scripts/kill_test.sh [N]        N = number of SIGKILLs (default 20)
#
# Builds nothing. Uses $POSEKD (default build/posekd). Trains the ai85pose student on the COCO
# sample (--deterministic --threads 2 --workers 2 --save-every 1, 12 batches, QAT switch at batch 7)
# once uninterrupted, then runs the same training in another folder, SIGKILLing it N times:
# even kills after a random delay, odd kills the moment the (1..3)-th checkpoint temp file (*.tmp.<pid>)
# of the run appears, i.e. during a checkpoint write. After every kill the folder's latest.pth, best.pth and newest
# batch_*.pth must load (`posekd inspect`). The run is restarted until it completes, then the
# final latest.pth model (and optimizer) tensors must be bit-identical to the uninterrupted run's.
#
# Environment: POSEKD (program), COCO (default tests/fixtures/coco-sample,
# relative to the repository root), WORK (scratch dir,
# default a new mktemp dir, removed on success), TOTAL (batches, default 12), MAX_DELAY (seconds,
# default 30), KILL_SEED (bash RANDOM seed, default 1), TEACHER (optional teacher checkpoint),
# REUSE_REF (non-empty: keep an existing $WORK/ref reference run).
# Exit 0 = passed; 1 = a checkpoint did not load or the final model differs; 2 = usage/setup.
set -uo pipefail

N=${1:-20}
POSEKD=${POSEKD:-build/posekd}
COCO=${COCO:-$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/coco-sample}
TOTAL=${TOTAL:-12}
MAX_DELAY=${MAX_DELAY:-30}
RANDOM=${KILL_SEED:-1}
KEEP_WORK=${WORK:+1}
WORK=${WORK:-$(mktemp -d /tmp/posekd-kill-test.XXXXXX)}

[[ "$N" =~ ^[0-9]+$ ]] || { echo "usage: $0 [N]" >&2; exit 2; }
[ -x "$POSEKD" ] || { echo "kill_test: $POSEKD: not found or not executable (build it first, or set POSEKD)" >&2; exit 2; }
ANN=$COCO/annotations/person_keypoints_val2017.json
IMAGES=$COCO/val2017
[ -f "$ANN" ] || { echo "kill_test: $ANN: missing (set COCO)" >&2; exit 2; }
mkdir -p "$WORK"

ARGS=(train --ann "$ANN" --images "$IMAGES" --arch ai85pose --deterministic --threads 2 --workers 2
      --save-every 1 --total-batches "$TOTAL" --batch-size 2 --calib-batches 2 --quiet)
[ -n "${TEACHER:-}" ] && ARGS+=(--teacher "$TEACHER")

log() { echo "[kill_test $(date -u +%H:%M:%S)] $*"; }
fail() { log "FAIL: $*"; log "scratch kept in $WORK"; exit 1; }

# Loads every checkpoint that must be loadable; prints what it checked.
check_loadable() {
  local dir=$1 f checked=0
  local files=("$dir/latest.pth" "$dir/best.pth")
  mapfile -t newest < <(ls -1 "$dir"/batch_*.pth 2>/dev/null | sort | tail -n 2)
  files+=("${newest[@]}")
  for f in "${files[@]}"; do
    [ -e "$f" ] || continue
    if ! "$POSEKD" inspect "$f" > "$WORK/inspect.out" 2>&1; then
      cat "$WORK/inspect.out" >&2
      echo "$f"
      return 1
    fi
    checked=$((checked + 1))
  done
  echo "$checked"
}


# ---- 1. the uninterrupted reference run
REF=$WORK/ref
if [ -n "${REUSE_REF:-}" ] && [ -f "$REF/latest.pth" ]; then
  log "reusing the reference run in $REF (REUSE_REF set)"
else
  rm -rf "$REF"
  log "reference run in $REF"
  "$POSEKD" "${ARGS[@]}" --output "$REF" > "$WORK/ref.out" 2>&1 || { cat "$WORK/ref.out" >&2; fail "reference run failed"; }
fi
[ -f "$REF/latest.pth" ] || fail "reference run wrote no latest.pth"

# ---- 2. the killed run
RUN=$WORK/killed
rm -rf "$RUN"
kills=0 starts=0 during_write=0 done=0
while [ $done -eq 0 ]; do
  starts=$((starts + 1))
  "$POSEKD" "${ARGS[@]}" --output "$RUN" >> "$WORK/killed.out" 2>&1 &
  pid=$!
  if [ $kills -lt "$N" ]; then
    mode=delay
    if [ $((kills % 2)) -eq 1 ]; then
      mode=write
      # Kill during the (k+1)-th checkpoint write of this process, k random in [0, 3): the
      # moment a new temp file of it appears (writes: batch_N.pth, latest.pth, best.pth).
      want=$((RANDOM % 3 + 1))
      declare -A seen=()
      while kill -0 "$pid" 2> /dev/null; do
        for t in "$RUN"/*.tmp."$pid"; do
          [ -e "$t" ] && [ -z "${seen[$t]:-}" ] && seen[$t]=1
        done
        [ ${#seen[@]} -ge "$want" ] && break
        sleep 0.005
      done
      unset seen
    else
      # Random delay in [0.3, MAX_DELAY) s, in 10 ms steps (covers startup, data loading,
      # batches, the QAT switch and checkpoint writes).
      delay_cs=$((30 + RANDOM % (MAX_DELAY * 100 - 30)))
      end=$((SECONDS + delay_cs / 100 + 1))
      sleep "$(printf '%d.%02d' $((delay_cs / 100)) $((delay_cs % 100)))" &
      spid=$!
      while kill -0 "$pid" 2> /dev/null && kill -0 "$spid" 2> /dev/null; do sleep 0.05; done
      kill "$spid" 2> /dev/null; wait "$spid" 2> /dev/null
    fi
    if kill -9 "$pid" 2> /dev/null; then
      wait "$pid" 2> /dev/null
      kills=$((kills + 1))
      [ "$mode" = write ] && during_write=$((during_write + 1))
      last=$(ls -1 "$RUN"/batch_*.pth 2> /dev/null | sort | tail -n 1)
      n=$(check_loadable "$RUN") || fail "$n does not load after a SIGKILL"
      log "kill $kills/$N ($mode) at ${last##*/}; $n checkpoint(s) load"
      continue
    fi
  fi
  # Not killed (N reached, or the run finished first): it must complete successfully.
  if wait "$pid"; then
    done=1
  else
    tail -n 5 "$WORK/killed.out" >&2
    fail "training run exited with an error (start $starts)"
  fi
done
n=$(check_loadable "$RUN") || fail "$n does not load"
stale=$(compgen -G "$RUN/*.tmp.*" | wc -l)
log "completed after $starts start(s), $kills SIGKILL(s) ($during_write during a checkpoint write); $n checkpoint(s) load; $stale stale *.tmp.* file(s) left"

# ---- 3. bit-exact comparison
compare() {  # compare KEY
  if "$POSEKD" --help 2> /dev/null | grep -qE '^ +compare '; then
    "$POSEKD" compare --key "$1" "$REF/latest.pth" "$RUN/latest.pth"
  else
    /usr/bin/python3 - "$REF/latest.pth" "$RUN/latest.pth" "$1" << 'EOF'
import sys, torch
a, b = torch.load(sys.argv[1])[sys.argv[3]], torch.load(sys.argv[2])[sys.argv[3]]
def flat(v, k=""):
    if isinstance(v, dict):
        for kk, vv in v.items(): yield from flat(vv, f"{k}.{kk}" if k else str(kk))
    elif isinstance(v, (list, tuple)):
        for i, vv in enumerate(v): yield from flat(vv, f"{k}.{i}" if k else str(i))
    elif torch.is_tensor(v): yield k, v
fa, fb = dict(flat(a)), dict(flat(b))
bad = [k for k in sorted(set(fa) | set(fb)) if k not in fa or k not in fb or fa[k].dtype != fb[k].dtype
       or fa[k].shape != fb[k].shape or not torch.equal(fa[k].view(-1).view(torch.uint8) if fa[k].numel() else fa[k],
                                                        fb[k].view(-1).view(torch.uint8) if fb[k].numel() else fb[k])]
for k in bad: print("DIFF", k)
print(f"{len(bad)} difference(s) ({len(fa)} tensors compared)" if bad else f"identical ({len(fa)} tensors compared)")
sys.exit(1 if bad else 0)
EOF
  fi
}
log "model: $(compare model | tail -n 1)"
compare model > "$WORK/compare_model.out" || { cat "$WORK/compare_model.out"; fail "final model differs from the uninterrupted run"; }
if compare optimizer > "$WORK/compare_opt.out"; then
  log "optimizer: $(tail -n 1 "$WORK/compare_opt.out")"
else
  cat "$WORK/compare_opt.out"; fail "final optimizer state differs from the uninterrupted run"
fi
log "PASS: $kills SIGKILLs, final latest.pth model bit-identical to the uninterrupted run"
[ -z "$KEEP_WORK" ] && rm -rf "$WORK"
exit 0
