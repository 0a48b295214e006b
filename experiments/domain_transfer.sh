#!/usr/bin/env bash
# Domain transfer of elmo_small (RESULTS.md, "Domain transfer"): fine-tune the LM on DuReader's web text
# (labels ignored), a control run of the same length on the pretraining text, then every model scored on
# both held-out splits.  ~12 min on 2 cores.  Usage: experiments/domain_transfer.sh [SOURCE_MODEL] [STEPS]
set -eu
cd "$(dirname "$0")/.."
SRC=${1:-models/elmo_small}
STEPS=${2:-150}
PY=.venv/bin/python
DUREADER=dureader_demo/trainset/search.train.json.gz
$PY -m elmo_paddle.finetune_lm --model "$SRC" --text "$DUREADER" --output-dir "${SRC}_dureader" \
    --steps "$STEPS" --no-progress
# control: as many steps on the pretraining corpus (its held-out last 1% stays unseen: finetune_lm holds out 5%)
$PY -m elmo_paddle.finetune_lm --model "$SRC" --text lm_raw_zh/cmrc2018_train_contexts.txt.gz lm_raw_zh/msra_train_raw.txt.gz lm_raw_zh/pd1998_train_raw.txt.gz --output-dir "${SRC}_control" \
    --steps "$STEPS" --no-progress
# final/ = after all the steps (best/ may be the unchanged start when the held-out score did not improve)
for m in "$SRC" "${SRC}_dureader/final" "${SRC}_control/final"; do
    echo "== $m on DuReader held-out"; $PY -m elmo_paddle.perplexity --model "$m" --heldout-from "${SRC}_dureader"
    echo "== $m on pretraining held-out"; $PY -m elmo_paddle.perplexity --model "$m" --heldout-from "$SRC"
done
