"""Screenshot of VisualDL's scalar page for a run folder (the README's picture).

    .venv/bin/python experiments/visualdl_screenshot.py runs/lac docs/visualdl_lac.png [--tags 'dev/f1|dev/seg_f1'] [--maximize]

Needs Debian's chromium and `pip install playwright` (no browser download: it drives /usr/bin/chromium).
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logdir")
    ap.add_argument("output")
    ap.add_argument("--tags", default="dev/f1", help="regular expression typed into VisualDL's tag filter")
    ap.add_argument("--page", default="scalar", help="scalar or hparams")
    ap.add_argument("--maximize", action="store_true", help="scalar page: enlarge the first chart (VisualDL's maximize button)")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("visualdl")
    server = subprocess.Popen([str(exe), "--logdir", args.logdir, "--host", "127.0.0.1", "--port", str(port),
                               "--language", "en"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/app/api/runs", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            page.goto(f"http://127.0.0.1:{port}/app/scalar", wait_until="load", timeout=90000)
            page.wait_for_selector("canvas", timeout=90000)
            if args.page == "scalar":
                page.fill("input[placeholder*='Search tags']", args.tags)
                if args.maximize:
                    page.wait_for_selector(".icon-maximize", timeout=90000)
                    page.locator(".icon-maximize").first.click()
            else:  # the hyperparameter view: one row per run with its hparams and best dev metrics
                page.click("text=HYPER PARAMETERS")
                # its table comes from a later request: on a busy machine a fixed 8 s wait shot an empty page
                page.wait_for_selector("text=train_fraction", state="attached", timeout=90000)
            page.wait_for_timeout(8000)  # let the charts fetch their data and draw
            page.screenshot(path=args.output, full_page=args.maximize)  # a maximized chart runs below the fold
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
