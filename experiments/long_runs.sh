#!/usr/bin/env bash
# The long runs behind the open results (RESULTS.md sections 1, 3 and 4), on a 2-core CPU machine: one lane per
# core, each a queue of resumable commands.  Rerun the same script after any stop (a session's end, a crash):
# every run resumes exactly from its last checkpoint and finished runs are skipped.
#
#   lane 0 (core 0): the next shipped biLM, configs/elmo_medium.yaml (bf16 where the CPU has AMX; ~2,000
#                    tokens/s, 19,104 steps, ~5.5 hours on one core)
#   lane 1 (core 1): LAC on all of PD1998 (3 seeds) -> BiDAF on all of CMRC 2018 (2 seeds: baselines, then +ELMo,
#                    then the ELMo-at-the-modeling-layer row) -> LAC 5% / 20% -> MSRA NER; one run at a time, one thread
#
#   experiments/long_runs.sh            # both lanes in the background; logs in logs/
#   experiments/long_runs.sh status     # where each lane is
#   experiments/long_runs.sh 1          # one lane only (0 or 1)
# Data: $ELMO_PADDLE_DATA, else ../shared/data.  Stop with: pkill -f experiments/long_runs.sh; then the runs.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${ELMO_PADDLE_DATA:-../shared/data}
mkdir -p logs

lane0() {
  ELMO_PADDLE_BF16=1 taskset -c 0 "$PY" -m elmo_paddle.pretrain --config configs/elmo_medium.yaml --data-dir "$DATA" \
    --no-progress --resume >> logs/elmo_medium.log 2>&1
}

lane1() {
  local one="jobs=1 threads=1"
  taskset -c 1 "$PY" -m elmo_paddle.pipeline --config configs/pipeline_lac_full.yaml --data-dir "$DATA" $one \
    >> logs/pipeline_lac_full.log 2>&1 || return
  # BiDAF's baselines first: its +ELMo runs should use the best biLM, which lane 0 is still training
  for variants in "[baseline]" "[baseline,elmo]"; do
    taskset -c 1 "$PY" -m elmo_paddle.pipeline --config configs/pipeline_bidaf_full.yaml --data-dir "$DATA" $one \
      "bidaf.variants=$variants" >> logs/pipeline_bidaf_full.log 2>&1 || return
  done
  if [ ! -f runs_bidaf_full/bidaf/elmo-mod-f1-s1/metrics.json ]; then  # ELMo also at the modeling layer's output
    OMP_NUM_THREADS=1 taskset -c 1 "$PY" -m tasks.bidaf.finetune --config configs/bidaf.yaml --train-fraction 1.0 \
      --seed 1 --run-name elmo-mod-f1-s1 --resume --data-dir "$DATA" --elmo-model zh-char-elmo \
      runs_dir=runs_bidaf_full/bidaf epochs=20 patience=3 elmo_at_modeling=true >> logs/bidaf_elmo_mod.log 2>&1 || return
  fi
  for cfg in pipeline_lac_fractions pipeline_msra; do
    taskset -c 1 "$PY" -m elmo_paddle.pipeline --config configs/$cfg.yaml --data-dir "$DATA" $one \
      >> logs/$cfg.log 2>&1 || return
  done
}

if [ "${1:-}" = status ]; then
  grep "dev ppl" logs/elmo_medium.log 2>/dev/null | tail -3; tail -n 1 logs/elmo_medium.log 2>/dev/null
  pgrep -af "tasks\.(lac|bidaf)\.finetune" | grep -o -- "--run-name [^ ]*" || echo "lane 1: no task run"
  exit 0
fi
busy0="configs/elmo_medium.yaml"
busy1="tasks\.(lac|bidaf)\.finetune|elmo_paddle\.pipeline"
lanes=${1:-0 1}  # `$0 1`: lane 1 only (e.g. after changing its queue while lane 0 trains)
for lane in $lanes; do
  case $lane in 0) busy=$busy0 ;; 1) busy=$busy1 ;; *) echo "usage: $0 [status|0|1]" >&2; exit 2 ;; esac
  if pgrep -f "$busy" >/dev/null; then
    echo "lane $lane is already running (see '$0 status'); not starting a second copy" >&2
    exit 1
  fi
done
for lane in $lanes; do "lane$lane" & done
echo "started lane(s) $lanes (0: biLM, 1: task runs); '$0 status' shows where they are"
