#!/usr/bin/env bash
# The long runs behind the open results (RESULTS.md sections 1, 3 and 4), on a 2-core CPU machine: one lane per
# core, each a queue of resumable commands.  Rerun the same script after any stop (a session's end, a crash):
# every run resumes exactly from its last checkpoint and finished runs are skipped.
#
#   lane 0 (core 0): the shipped biLM v3, configs/elmo_medium.yaml (bf16 where the CPU has AMX; ~2,000
#                    tokens/s, 19,104 steps, ~6.5 hours on one core; done) -> LAC 100% +ELMo with it (3 seeds)
#                    -> LAC 100% with the mix also at the BiGRU output (seed 1; done) -> LAC 5% / 20% (both
#                    variants) -> MSRA NER (+ELMo)
#   lane 1 (core 1): LAC on all of PD1998 (3 seeds; done) -> BiDAF on all of CMRC 2018 (seed 1 of baseline and
#                    +ELMo, then seed 2 of both, then the ELMo-at-the-modeling-layer row, then the control with
#                    the biLM's token layer alone) -> MSRA NER (baselines); one run at a time, one thread.
#                    At the tenth session each lane had ~11-12 hours of one core left, ending about together
#
#   experiments/long_runs.sh            # both lanes in the background; logs in logs/
#   experiments/long_runs.sh status     # where each lane is
#   experiments/long_runs.sh 1          # one lane only (0 or 1)
# Data: $ELMO_PADDLE_DATA, else ../shared/data.  Stop with: pkill -f experiments/long_runs.sh; then the runs.
# Each lane holds logs/lane<N>.lock while it (or a run it started) is alive: a second copy of a lane refuses.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${ELMO_PADDLE_DATA:-../shared/data}
mkdir -p logs

pipeline() {  # pipeline CORE CONFIG [overrides...]: one run at a time on one core, one thread
  local core=$1 cfg=$2
  shift 2
  taskset -c "$core" "$PY" -m elmo_paddle.pipeline --config "configs/$cfg.yaml" --data-dir "$DATA" jobs=1 threads=1 \
    "$@" >> "logs/$cfg.log" 2>&1
}

lane0() {
  if [ ! -f models/elmo_medium/final/manifest.json ]; then
    ELMO_PADDLE_BF16=1 taskset -c 0 "$PY" -m elmo_paddle.pretrain --config configs/elmo_medium.yaml --data-dir "$DATA" \
      --no-progress --resume >> logs/elmo_medium.log 2>&1 || return
  fi
  # LAC at 100% +ELMo with the shipped biLM v3 (the v2 runs are kept in runs_full_v2/; lane 1 ran the
  # baselines), then the 5% / 20% rows and MSRA, baseline and +ELMo seed by seed
  pipeline 0 pipeline_lac_full "lac.variants=[elmo]" || return
  if [ ! -f runs_full/lac/elmo-out-f1-s1/metrics.json ]; then  # the mix also at the BiGRU's output (one seed first)
    OMP_NUM_THREADS=1 taskset -c 0 "$PY" -m tasks.lac.finetune --config configs/lac.yaml --train-fraction 1.0 --seed 1 \
      --run-name elmo-out-f1-s1 --resume --data-dir "$DATA" --elmo-model zh-char-elmo runs_dir=runs_full/lac \
      dataset=pd1998 epochs=60 eval_every=316 patience=6 threads=1 elmo_at_output=true >> logs/lac_elmo_out.log 2>&1 || return
  fi
  pipeline 0 pipeline_lac_fractions || return
  pipeline 0 pipeline_msra "lac.variants=[elmo]"  # lane 1 runs the MSRA baselines after its BiDAF queue
}

lane1() {
  pipeline 1 pipeline_lac_full "lac.variants=[baseline]" || return  # its +ELMo runs (biLM v3) are lane 0's
  # BiDAF: seed 1 of both variants first (the comparison the issue asks for, one seed), then seed 2 of both
  pipeline 1 pipeline_bidaf_full "bidaf.variants=[baseline,elmo]" "bidaf.seeds=[1]" || return
  pipeline 1 pipeline_bidaf_full "bidaf.variants=[baseline,elmo]" || return
  if [ ! -f runs_bidaf_full/bidaf/elmo-mod-f1-s1/metrics.json ]; then  # ELMo also at the modeling layer's output
    OMP_NUM_THREADS=1 taskset -c 1 "$PY" -m tasks.bidaf.finetune --config configs/bidaf.yaml --train-fraction 1.0 \
      --seed 1 --run-name elmo-mod-f1-s1 --resume --data-dir "$DATA" --elmo-model zh-char-elmo \
      runs_dir=runs_bidaf_full/bidaf epochs=20 patience=3 ema_decay=0.999 elmo_at_modeling=true >> logs/bidaf_elmo_mod.log 2>&1 \
      || return
  fi
  # the control: the biLM's token layer alone (context-free vectors, a "pretrained word vectors" baseline); it
  # reads the +ELMo runs' layer cache, so no biLM encoding
  if [ ! -f runs_bidaf_full/bidaf/elmo-tok-f1-s1/metrics.json ]; then
    OMP_NUM_THREADS=1 taskset -c 1 "$PY" -m tasks.bidaf.finetune --config configs/bidaf.yaml --train-fraction 1.0 \
      --seed 1 --run-name elmo-tok-f1-s1 --resume --data-dir "$DATA" --elmo-model zh-char-elmo \
      runs_dir=runs_bidaf_full/bidaf epochs=20 patience=3 ema_decay=0.999 elmo_only_layer=0 >> logs/bidaf_elmo_tok.log 2>&1 \
      || return
  fi
  pipeline 1 pipeline_msra "lac.variants=[baseline]"  # lane 0 runs the +ELMo ones: both lanes end ~together
}

if [ "${1:-}" = status ]; then
  grep "dev ppl" logs/elmo_medium.log 2>/dev/null | tail -3; tail -n 1 logs/elmo_medium.log 2>/dev/null
  pgrep -af "tasks\.(lac|bidaf)\.finetune" | grep -o -- "--run-name [^ ]*\|runs_dir=[^ ]*" || echo "no task run"
  exit 0
fi
lanes=${1:-0 1}  # `$0 1`: lane 1 only (e.g. after changing its queue while lane 0 trains)
for lane in $lanes; do
  case $lane in 0 | 1) ;; *) echo "usage: $0 [status|0|1]" >&2; exit 2 ;; esac
  if ! flock -n "logs/lane$lane.lock" true; then  # held by a running lane (or a run it started)
    echo "lane $lane is already running (see '$0 status'); not starting a second copy" >&2
    exit 1
  fi
done
for lane in $lanes; do  # each lane holds its lock while it, or anything it started, is alive
  ( flock -n 9 || exit 1; "lane$lane" ) 9> "logs/lane$lane.lock" &
done
echo "started lane(s) $lanes (0: biLM, then LAC; 1: BiDAF); '$0 status' shows where they are"
