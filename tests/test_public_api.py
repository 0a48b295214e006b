"""The package's public names, and that importing the package (or a CLI's --help) stays light."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _python(code: str) -> str:
    """Run `code` in a fresh interpreter (sys.modules starts empty) with the MKL variables unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "KMP_BLOCKTIME")}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]


def test_import_package_does_not_load_paddle_but_sets_its_environment():
    out = _python("import os, sys, elmo_paddle; "
                  "print('paddle' in sys.modules, os.environ.get('MKL_DEBUG_CPU_TYPE'), sorted(elmo_paddle.__all__))")
    assert out == "False 5 ['Elmo', 'ElmoEmbedder', 'ScalarMix']"


def test_public_names_load_on_first_use():
    out = _python("import sys; from elmo_paddle import Elmo, ScalarMix, ElmoEmbedder; "
                  "import elmo_paddle.elmo as e, elmo_paddle.scalar_mix as s, elmo_paddle.embedder as m; "
                  "print(Elmo is e.Elmo, ScalarMix is s.ScalarMix, ElmoEmbedder is m.ElmoEmbedder, "
                  "'paddle' in sys.modules)")
    assert out == "True True True True"


def test_unknown_name_is_an_attribute_error_and_submodules_still_import():
    out = _python("import elmo_paddle\nmsg = None\n"
                  "try:\n    elmo_paddle.NoSuchThing\nexcept AttributeError as e:\n    msg = str(e)\n"
                  "from elmo_paddle import checkpoint\nprint(msg, '|', checkpoint.__name__)")
    assert out == "module 'elmo_paddle' has no attribute 'NoSuchThing' | elmo_paddle.checkpoint"


def test_pretrain_help_does_not_load_paddle():
    out = _python("import runpy, sys\nsys.argv = ['pretrain', '--help']\n"
                  "try:\n    runpy.run_module('elmo_paddle.pretrain', run_name='__main__')\nexcept SystemExit:\n    pass\n"
                  "print('paddle' in sys.modules)")
    assert out == "False"
