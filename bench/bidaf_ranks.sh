#!/usr/bin/env bash
# BiDAF training speed on this machine's cores: one process (1 thread, then 2 threads) against two
# data-parallel gloo ranks (paddle.distributed.launch, one thread each), the baseline reader on all of
# CMRC 2018 train, batch 32 (per step, in all three).  Each runs SECONDS (default 150, setup included) and is
# stopped; the steps done are read off its progress bar, and the ratio printed.  Pause other work first.
#   bench/bidaf_ranks.sh [SECONDS]
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SECS=${1:-150}
OUT=$(mktemp -d)
ARGS=(--config configs/bidaf.yaml --data-dir "${ELMO_PADDLE_DATA:-../shared/data}" --epochs 1 "runs_dir=$OUT"
      checkpoint_every=0)
OMP_NUM_THREADS=1 timeout "$SECS" "$PY" -m tasks.bidaf.finetune "${ARGS[@]}" --run-name p1 > "$OUT/p1.log" 2>&1
OMP_NUM_THREADS=2 timeout "$SECS" "$PY" -m tasks.bidaf.finetune "${ARGS[@]}" --run-name p2 > "$OUT/p2.log" 2>&1
OMP_NUM_THREADS=1 timeout "$SECS" "$PY" -m paddle.distributed.launch --nproc_per_node 2 --log_dir "$OUT/ranks" \
  tasks/bidaf/finetune.py "${ARGS[@]}" --run-name r2 > "$OUT/r2.log" 2>&1
steps() {  # the last step count on a tqdm bar ("bidaf NAME: 84step [02:18, ...")
  tr '\r' '\n' < "$1" | grep -oE "^bidaf [a-z0-9]+: [0-9]+step" | tail -1 | grep -oE "[0-9]+step" | tr -d step
}
p1=$(steps "$OUT/p1.log"); p2=$(steps "$OUT/p2.log"); r2=$(steps "$OUT/ranks/workerlog.0")
echo "steps in ${SECS} s: one process 1 thread ${p1:-?}, 2 threads ${p2:-?}; two ranks ${r2:-?}"
[ -n "$p1" ] && [ -n "$r2" ] && python3 -c "print(f'two ranks / one process (1 thread): {$r2 / $p1:.2f}x')"
rm -rf "$OUT"
