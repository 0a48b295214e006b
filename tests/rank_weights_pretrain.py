"""`elmo_paddle/pretrain.py` for fleet tests: every rank also saves its own final weights.

Run by `paddle.distributed.launch` in place of `elmo_paddle/pretrain.py`.  Only rank 0 writes model
directories, so a test cannot otherwise see rank 1's weights; the program's own "parameters identical" line
compares per-parameter sum|p| checksums, which a permutation or a sign error would pass.  With
ELMO_TEST_RANK_WEIGHTS=DIR, each rank writes DIR/rank{N}.safetensors right before `finish`, and the
test compares them element by element.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import elmo_paddle  # noqa: E402,F401  (sets the MKL environment before paddle loads)
from elmo_paddle import checkpoint as ckpt, trainer_lm  # noqa: E402
from elmo_paddle.pretrain import main  # noqa: E402

_finish = trainer_lm._PretrainRun.finish


def _finish_and_dump(self):
    from safetensors.numpy import save_file

    out = Path(os.environ["ELMO_TEST_RANK_WEIGHTS"])
    out.mkdir(parents=True, exist_ok=True)
    save_file(ckpt.model_tensors(self.bilm), str(out / f"rank{self.rank}.safetensors"))
    _finish(self)


trainer_lm._PretrainRun.finish = _finish_and_dump

if __name__ == "__main__":
    raise SystemExit(main())
