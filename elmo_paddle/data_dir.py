"""Where the real data sets live: --data-dir, then $ELMO_PADDLE_DATA, then ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

_HELP = (
    "the data sets are not bundled. Put them in a folder laid out as ../shared/data "
    "(cmrc2018/, peoples_daily_1998/, msra_ner/, lac_sample/, dureader_demo/, lm_raw_zh/; "
    "each folder's SOURCE.md names its origin: CMRC2018 from github.com/ymcui/cmrc2018, People's Daily 1998 "
    "and MSRA NER from the SIGHAN bakeoffs, LAC samples from github.com/baidu/lac) and pass --data-dir DIR "
    "or set ELMO_PADDLE_DATA=DIR"
)


def resolve_data_dir(flag: str | os.PathLike | None = None) -> Path | None:
    """Return the data folder to use, or None when none is configured or found."""
    for cand in (flag, os.environ.get("ELMO_PADDLE_DATA")):
        if cand:
            return Path(cand)
    repo = Path(__file__).resolve().parent.parent
    for default in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if default.is_dir():
            return default
    return None


def data_path(rel: str, flag: str | os.PathLike | None = None) -> Path:
    """Resolve `rel` (e.g. 'cmrc2018/cmrc2018_train.json.gz') inside the data dir; clear error if missing."""
    root = resolve_data_dir(flag)
    if root is None:
        raise UserError(f"no data directory found for {rel!r}: {_HELP}")
    p = root / rel
    if not p.exists():
        raise UserError(f"{p} does not exist: {_HELP}")
    return p
