"""Score predictions with the official CMRC 2018 metric.

  python -m tasks.bidaf.evaluate DATASET.json[.gz] PREDICTIONS.json

Prints one JSON line {"average", "f1", "em", "total", "skip"} (scores 0-100; the official script spells the
keys in capitals).  Every question in the dataset counts; a question missing from PREDICTIONS scores 0 and is
counted in skip.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from elmo_paddle.errors import UserError, cli

from .jsonio import read_json
from .metric import evaluate_predictions


def load_references(path: str) -> dict[str, list[str]]:
    """{qid: [reference texts]} from a SQuAD-style file, as the official script reads it."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UserError(f"{path}: not a SQuAD-style dataset (expected an object with a 'data' list)")
    refs: dict[str, list[str]] = {}
    try:
        for doc in data["data"]:
            for para in doc["paragraphs"]:
                for qa in para["qas"]:
                    refs[str(qa["id"]).strip()] = [str(a["text"]) for a in qa.get("answers", [])]
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: malformed dataset entry (missing or wrong-typed field {e})") from None
    return refs


@cli
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tasks.bidaf.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="SQuAD/CMRC-style JSON (or .json.gz) with reference answers")
    p.add_argument("predictions", help="JSON object {question id: predicted answer text}")
    args = p.parse_args(argv)
    refs = load_references(args.dataset)
    preds = read_json(args.predictions)
    if not isinstance(preds, dict):
        raise UserError(f"{args.predictions}: predictions must be a JSON object {{qid: answer}}")
    print(json.dumps(evaluate_predictions(refs, preds), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
