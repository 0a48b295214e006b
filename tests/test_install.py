"""`pip install .` makes elmo_paddle importable from any folder, with the shipped models found by name."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_installed_package_finds_the_shipped_model_from_another_folder(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("zh-char-elmo", "zh-char-elmo-v2", "lac-pd1998-elmo", "bidaf-cmrc2018", "bidaf-cmrc2018-elmo"):
        assert (target / "elmo_paddle" / "pretrained" / name / "manifest.json").is_file(), name
    code = ("from elmo_paddle import Elmo; e = Elmo('zh-char-elmo'); print(e.model_dir); "
            "print('x'.join(map(str, e.encode(e.batch_to_ids(['中国人民'])).shape)))")
    env = dict(os.environ, PYTHONPATH=str(target))  # not the checkout: only the installed copy
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    where, shape = r.stdout.split()[:2]
    assert Path(where).is_relative_to(target) and shape == "1x3x4x512"  # v3: projection 256 per direction
