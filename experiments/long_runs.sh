#!/usr/bin/env bash
# The long runs behind the open results (RESULTS.md sections 1, 3 and 4), on a 2-core CPU machine: one lane per
# core, each a queue of resumable commands.  Rerun the same script after any stop (a session's end, a crash):
# every run resumes exactly from its last checkpoint and finished runs are skipped.
#
#   lane 0 (core 0): MSRA NER +ELMo (3 seeds) -> LAC 5% / 20% again (both variants, 3 seeds) -> LAC 100% +ELMo
#                    seeds 1-2 again
#   lane 1 (core 1): MSRA NER baselines (seeds 2, 3) -> LAC 5% / 20% baselines -> MSRA baseline seed 1 again
#                    -> LAC 100% baselines again -> LAC 100% +ELMo seed 3 again
#                    (the 100% runs again: their records were lost with the eleventh session's checkout, and
#                    the learning-curve plot of `tasks.compare results/runs_full` needs them; ~1 h a run)
#                    One run at a time, one thread.
#   bidaf (both cores, instead of the lanes): BiDAF +ELMo seed 2 -> the ELMo-at-the-modeling-layer row -> the
#                    control with the biLM's token layer alone, each as two data-parallel ranks (~1.5-2 h a
#                    run: one fits in a session, where one process (~3 h) did not)
# State (sixteenth session): both lanes' queues are done (rerunning them skips every run); the BiDAF queue has
# its token-layer control (elmo-tok-f1-s1) left.
# Done before (RESULTS.md): the biLM v3 (shipped as zh-char-elmo), LAC 100% (both variants, 3 seeds), BiDAF
# baseline seeds 1-2 and +ELMo seed 1.  Run folders (runs_*/) are not in git and a new checkout starts without
# them: after each queue, `keep` copies the finished runs' small records to results/ (commit them), and
# `python -m tasks.compare results/<runs_dir>` rebuilds the tables from there.
#
#   experiments/long_runs.sh            # both lanes in the background; logs in logs/
#   experiments/long_runs.sh status     # where each lane is
#   experiments/long_runs.sh 1          # one lane only (0 or 1)
#   experiments/long_runs.sh bidaf      # the BiDAF queue on both cores (the lanes must be stopped)
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

keep() {  # keep RUNS_DIR: copy its finished runs' small records into results/ (tracked in git; commit them)
  "$PY" experiments/keep_results.py "$1" >> logs/keep_results.log 2>&1
}

lane0() {
  # MSRA NER +ELMo (the shipped biLM v3), seeds 1-3; lane 1 runs the baselines
  pipeline 0 pipeline_msra "lac.variants=[elmo]" || return
  keep runs_msra
  # the 5% / 20% rows again (their run folders were lost with the eleventh session's new checkout; their means
  # are in RESULTS section 3), so that every row has its per-run record under results/
  pipeline 0 pipeline_lac_fractions || return
  keep runs_full
  pipeline 0 pipeline_lac_full "lac.variants=[elmo]" "lac.seeds=[1,2]" || return  # lane 1 runs seed 3
  keep runs_full
}

lane1() {
  pipeline 1 pipeline_msra "lac.variants=[baseline]" "lac.seeds=[2,3]" || return
  keep runs_msra
  pipeline 1 pipeline_lac_fractions "lac.variants=[baseline]" || return  # lane 0 runs the +ELMo ones
  keep runs_full
  pipeline 1 pipeline_msra "lac.variants=[baseline]" "lac.seeds=[1]" || return  # its numbers are in RESULTS; its record was lost
  keep runs_msra
  pipeline 1 pipeline_lac_full "lac.variants=[baseline]" || return
  keep runs_full
  # +ELMo seed 3 here, not in lane 0 (which runs seeds 1-2): never one run in two lanes at once
  pipeline 1 pipeline_lac_full "lac.variants=[elmo]" "lac.seeds=[3]" || return
  keep runs_full
}

ranks() {  # ranks NAME [args...]: one BiDAF run on both cores as two data-parallel ranks (1.88x one process)
  [ -f "runs_bidaf_full/bidaf/$1/metrics.json" ] && return 0
  local name=$1
  shift
  OMP_NUM_THREADS=1 "$PY" -m paddle.distributed.launch --nproc_per_node 2 --log_dir "logs/ranks_$name" \
    tasks/bidaf/finetune.py --config configs/bidaf.yaml --train-fraction 1.0 --run-name "$name" --resume \
    --data-dir "$DATA" --elmo-model zh-char-elmo runs_dir=runs_bidaf_full/bidaf epochs=20 patience=3 \
    ema_decay=0.999 "$@" >> "logs/ranks_$name.log" 2>&1
}

bidaf() {  # what BiDAF still runs (baseline seeds 1-2 and +ELMo seed 1 are done: RESULTS section 4)
  ranks elmo-f1-s2 --seed 2 || return
  keep runs_bidaf_full
  ranks elmo-mod-f1-s1 --seed 1 elmo_at_modeling=true || return  # ELMo also at the modeling layer's output
  keep runs_bidaf_full
  # the control: the biLM's token layer alone (context-free vectors, a "pretrained word vectors" baseline)
  ranks elmo-tok-f1-s1 --seed 1 elmo_only_layer=0 || return
  keep runs_bidaf_full
}

if [ "${1:-}" = status ]; then
  runs=$(pgrep -af "tasks[./](lac|bidaf)[./]finetune" | grep -o -- "--run-name [^ ]*\|runs_dir=[^ ]*" | sort -u)
  echo "${runs:-no task run}"
  for run in $(grep -o -- "--run-name [^ ]*" <<< "$runs" | cut -d' ' -f2); do  # its last progress bar in the logs
    for log in logs/*.log; do tail -c 20000 "$log"; echo; done 2> /dev/null | tr '\r' '\n' | grep -a "\(^\|^bidaf \)$run: .*step" |
      tail -n 1  # (the echo: a log's tail without a final newline must not join the next log's first line)
  done
  exit 0
fi
lanes=${1:-0 1}  # `$0 1`: lane 1 only (e.g. after changing its queue while lane 0 trains)
if [ "$lanes" = bidaf ]; then  # both cores: holds both lanes' locks
  for lane in 0 1; do flock -n "logs/lane$lane.lock" true || { echo "lane $lane is running; stop it first" >&2; exit 1; }; done
  ( flock -n 8 && flock -n 9 && bidaf ) 8> logs/lane0.lock 9> logs/lane1.lock &
  echo "started the BiDAF queue on both cores; '$0 status' shows where it is"
  exit 0
fi
for lane in $lanes; do
  case $lane in 0 | 1) ;; *) echo "usage: $0 [status|bidaf|0|1]" >&2; exit 2 ;; esac
  if ! flock -n "logs/lane$lane.lock" true; then  # held by a running lane (or a run it started)
    echo "lane $lane is already running (see '$0 status'); not starting a second copy" >&2
    exit 1
  fi
done
for lane in $lanes; do  # each lane holds its lock while it, or anything it started, is alive
  ( flock -n 9 || exit 1; "lane$lane" ) 9> "logs/lane$lane.lock" &
done
echo "started lane(s) $lanes; '$0 status' shows where they are"
