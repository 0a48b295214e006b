"""A resumed run's VisualDL curves: one record file per run folder, cut back to the checkpoint's step, so the
viewer (which reads only the newest file of a folder) shows the whole curve, each step once."""
from __future__ import annotations

import io
from contextlib import redirect_stdout

from visualdl import LogWriter

from elmo_paddle import vdl_log


def _view(logdir, tag="dev/f1") -> list[tuple[int, float]]:
    """What VisualDL shows for `tag` (values rounded: they are stored as float32)."""
    return [(step, round(v, 4)) for step, v in vdl_log.shown(logdir, tag)]


def _log(logdir, steps, file_name="", value=lambda s: s / 10):
    with redirect_stdout(io.StringIO()):
        w = LogWriter(logdir=str(logdir), file_name=file_name)
    with w:
        for s in steps:
            w.add_scalar("dev/f1", value(s), s)
        w.add_hparams({"lr": 0.1}, ["dev/f1"])


def test_a_resumed_run_shows_its_whole_curve_once(tmp_path):
    _log(tmp_path, range(1, 11), value=lambda s: -1.0)  # ran to step 10; the checkpoint is at step 6
    assert len(vdl_log.record_files(tmp_path)) == 1
    name = vdl_log.resume_file(tmp_path, 6)
    _log(tmp_path, range(7, 13), file_name=name)  # the resumed run appends steps 7-12
    assert [f.name for f in vdl_log.record_files(tmp_path)] == [name]
    assert _view(tmp_path) == [(s, -1.0) for s in range(1, 7)] + [(s, s / 10) for s in range(7, 13)]


def test_files_of_earlier_resumes_and_a_cut_record_are_merged(tmp_path):
    """Runs resumed by earlier versions left one file per start; a kill can cut the last record short."""
    import time

    _log(tmp_path, range(1, 6))
    time.sleep(1.1)  # file names carry the second they were made
    _log(tmp_path, range(3, 9))  # an old-style resume from step 2 (steps 3-5 twice)
    files = vdl_log.record_files(tmp_path)
    assert len(files) == 2 and _view(tmp_path)[0][0] == 3  # VisualDL alone hides steps 1-2
    with open(files[1], "ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x00\x00\x00\x00partial")  # a length of 64, then 7 bytes: killed mid-write
    name = vdl_log.resume_file(tmp_path, 7)
    assert _view(tmp_path) == [(s, s / 10) for s in range(1, 8)]
    assert vdl_log.resume_file(tmp_path, 7) == name and _view(tmp_path) == [(s, s / 10) for s in range(1, 8)]
    assert not list(tmp_path.glob("*.merging"))


def test_a_folder_without_records_starts_a_new_file(tmp_path):
    assert vdl_log.resume_file(tmp_path, 5) == ""
