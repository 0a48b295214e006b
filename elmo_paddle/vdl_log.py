"""One VisualDL record file per run, also across resumes: what a resumed run appends its curves to.

Why: VisualDL 2.5 shows only the newest `vdlrecords.*.log` of a run folder (`LogReader.logs` keeps one file
per folder), while every `LogWriter` starts a new file.  A run resumed at step S therefore lost its curve up
to S from the view (measured on a LAC run resumed once: dev F1 at steps 2,844-4,108 shown, 316-2,528 hidden
in the older file), and the steps between its last checkpoint and the kill were logged twice.  On resume,
`resume_file` merges the folder's record files into one that keeps the scalars up to the checkpoint's step
(the last copy of each tag and step) and every non-scalar record except the hyper-parameter table (written
again when the run ends), and returns its name for the `LogWriter` to append to (a local `LogWriter` given
an existing `file_name` appends).

File format (visualdl/writer/record_writer.py, `RecordWriter.write`): each record is a little-endian uint64
length followed by that many bytes of a serialized `record_pb2.Record`; a record cut short by a kill is
dropped.  The merged file is written beside the others and renamed over the oldest (atomic), then the rest
are removed; a crash in between leaves duplicates that the next merge removes (it keeps one copy per tag
and step).
"""
from __future__ import annotations

import io
import os
import struct
from contextlib import redirect_stdout
from pathlib import Path

_LEN = struct.Struct("<Q")


def record_files(logdir: str | os.PathLike) -> list[Path]:
    """The folder's VisualDL record files, oldest first (their names carry the creation time)."""
    return sorted(Path(logdir).glob("vdlrecords.*.log"))


def read_records(path: Path) -> list[bytes]:
    """The serialized records of one file, in order; a truncated last record (a killed writer) is dropped."""
    data, out, pos = path.read_bytes(), [], 0
    while pos + _LEN.size <= len(data):
        (n,) = _LEN.unpack_from(data, pos)
        if pos + _LEN.size + n > len(data):
            break
        out.append(data[pos + _LEN.size:pos + _LEN.size + n])
        pos += _LEN.size + n
    return out


def _kept(records: list[bytes], step: int) -> list[bytes]:
    """The other records but the hyper-parameter table (each distinct one once), then the scalars at steps
    <= step, by step (the last copy of each tag and step); one `Record` holds one value, as `LogWriter`
    writes them."""
    from visualdl.proto import record_pb2

    scalars: dict[tuple[str, int], bytes] = {}
    others: dict[bytes, None] = {}  # an ordered set: every LogWriter start adds the same meta record again
    for raw in records:
        rec = record_pb2.Record.FromString(raw)
        kinds = {v.WhichOneof("one_value") for v in rec.values}
        if kinds == {"value"}:
            v = rec.values[0]
            if v.id <= step:
                scalars[(v.tag, v.id)] = raw  # a later copy (the resumed run's) replaces an earlier one
        elif "hparam" not in kinds:
            others[raw] = None
    return list(others) + [scalars[k] for k in sorted(scalars, key=lambda k: k[1])]


def resume_file(logdir: str | os.PathLike, step: int) -> str:
    """Merge `logdir`'s record files into one holding what was logged up to `step`; returns its file name
    ("" when the folder has none: the `LogWriter` then starts one)."""
    files = record_files(logdir)
    if not files:
        return ""
    records = [r for f in files for r in read_records(f)]
    tmp = files[0].with_name(files[0].name + ".merging")
    with open(tmp, "wb") as fh:
        for raw in _kept(records, step):
            fh.write(_LEN.pack(len(raw)) + raw)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, files[0])
    for f in files[1:]:
        f.unlink()
    return files[0].name


def open_writer(logdir: str | os.PathLike, resume_step: int | None = None):
    """A VisualDL `LogWriter` for a run folder: a fresh run's new record file, or (`resume_step` given) the
    folder's one file cut back to that step, appended to."""
    from visualdl import LogWriter

    log_file = resume_file(logdir, resume_step) if resume_step is not None else ""
    with redirect_stdout(io.StringIO()):  # not its "`…` is exists, VisualDL will add logs to it"
        return LogWriter(logdir=str(logdir), file_name=log_file)


def shown(logdir: str | os.PathLike, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar `tag` as VisualDL shows it: from the one record file its reader picks for the
    folder (the newest)."""
    from visualdl import LogReader

    (name,) = LogReader(logdir=str(logdir)).logs().values()
    return [(r.id, r.value) for r in LogReader(file_path=str(Path(logdir) / name)).get_data("scalar", tag)]
