"""VisualDL over a small run folder: the server lists both runs and their tags; headless page renders."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def run_folder(tmp_path):
    from visualdl import LogWriter

    for name, gain in (("baseline-f0.2-s1", 0.0), ("elmo-f0.2-s1", 0.05)):
        with LogWriter(logdir=str(tmp_path / "lac" / name)) as w:
            for step in range(1, 6):
                w.add_scalar("dev/f1", 0.5 + gain + 0.05 * step, step)
                w.add_scalar("train/loss", 10.0 / step, step)
            w.add_hparams({"elmo_gamma": 1.0, "seed": 1, "elmo_model": "x" if gain else "none"}, ["dev/f1"])
    return tmp_path / "lac"


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read().decode())
    return body.get("data", body)


def test_visualdl_server_lists_runs_and_tags(run_folder, tmp_path):
    port = _free_port()
    exe = Path(sys.executable).with_name("visualdl")
    proc = subprocess.Popen([str(exe), "--logdir", str(run_folder), "--host", "127.0.0.1", "--port", str(port),
                             "--language", "en"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}/app/api"
        deadline = time.time() + 60
        while True:
            try:
                runs = _get(f"{base}/runs")
                if len(runs) == 2:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("VisualDL server did not list the runs within 60 s")
            time.sleep(0.5)
        assert sorted(r.split("/")[-1] for r in runs) == ["baseline-f0.2-s1", "elmo-f0.2-s1"]
        tags = _get(f"{base}/scalar/tags")
        for run in runs:
            assert {"dev/f1", "train/loss"} <= set(tags["tags"][tags["runs"].index(run)])
        data = _get(f"{base}/scalar/list?run={urllib.request.quote(runs[0])}&tag=dev/f1")
        assert len(data) == 5
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            return  # rendering is checked only where Chromium is installed
        shot = tmp_path / "page.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1280,900",
                        "--virtual-time-budget=15000", f"--screenshot={shot}",
                        f"http://127.0.0.1:{port}/app/scalar"], timeout=120, capture_output=True)
        from PIL import Image

        img = Image.open(shot).convert("L")
        lo, hi = img.getextrema()
        assert hi - lo > 50, "the rendered VisualDL page is blank"
        assert len(img.getcolors(1 << 16) or []) > 20  # charts and text, not a flat page
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
