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
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            sync_playwright = None
        if chromium is None or sync_playwright is None:
            return  # rendering is checked only where Chromium (and playwright to drive it) is installed
        shot = tmp_path / "page.png"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/app/scalar", wait_until="load", timeout=90000)
                page.wait_for_selector("canvas", timeout=90000)  # the charts were drawn
                page.wait_for_timeout(2000)
                page.screenshot(path=str(shot))
            finally:
                browser.close()
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
