#!/usr/bin/env bash
# The +ELMo runs behind RESULTS.md (the baselines' commands are in RESULTS.md), two lanes on 2 cores.
# Usage: experiments/elmo_runs.sh [ELMO_DIR]   (default models/elmo_small/best)
set -u
cd "$(dirname "$0")/.."
ELMO=${1:-models/elmo_small/best}
PY=.venv/bin/python
export OMP_NUM_THREADS=1   # two single-thread lanes beat one two-thread lane for these small GRU/LSTM kernels
mkdir -p logs
lac() {  # fraction epochs seed
  $PY -m tasks.lac.finetune --config configs/lac.yaml --dataset pd1998 --train-fraction "$1" --epochs "$2" \
      --seed "$3" --elmo-model "$ELMO" > "logs/lac_elmo_f$1_s$3.log" 2>&1
}
bidaf() {  # seed variant
  if [ "$2" = elmo ]; then extra=(--elmo-model "$ELMO"); else extra=(); fi
  $PY -m tasks.bidaf.finetune --config configs/bidaf.yaml --train-fraction 0.2 --seed "$1" \
      --run-name "$2-frac0.2-s$1" "${extra[@]}" dev_max_questions=200 > "logs/bidaf_$2_s$1.log" 2>&1
}
( lac 0.2 3 1; lac 0.2 3 2; lac 0.2 3 3 ) &
( lac 0.05 10 1; lac 0.05 10 2; lac 0.05 10 3 ) &
wait
# BiDAF: seeds 1 and 2 only (the baselines' seed 3 did not finish either): each +ELMo run first encodes
# ~3,000 training windows with the biLM, ~20 min on one core
bidaf 1 elmo &
bidaf 2 elmo &
wait
