"""elmo_paddle: pretrain a Chinese ELMo biLM with PaddlePaddle and use it, frozen, in task models.

    from elmo_paddle import Elmo, ScalarMix, ElmoEmbedder

The three are loaded on first use (PEP 562 `__getattr__`): they import paddle, which takes seconds, and
`import elmo_paddle` must stay light (CLIs' `--help`, configs) and must set the environment below before
paddle loads.
"""
import os as _os

# Paddle's bundled MKL takes a slow code path on AMD CPUs unless told the CPU type; this must be set
# before paddle is imported (measured here: matmul 35 -> 81 GFLOP/s on one thread).  KMP_BLOCKTIME=0
# stops idle OpenMP threads from spinning, which slowed the LSTM's many small kernels on 2 cores.
_os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
_os.environ.setdefault("KMP_BLOCKTIME", "0")
_os.environ.setdefault("GLOG_minloglevel", "2")

__version__ = "0.1.0"

import warnings as _warnings

# noise printed on every paddle import, not actionable by our users
_warnings.filterwarnings("ignore", message="No ccache found")
_warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")

__all__ = ["Elmo", "ElmoEmbedder", "ScalarMix"]


def __getattr__(name: str):
    # explicit imports, not a name -> module table, so the import-graph test (tests/test_structure.py) sees them
    if name == "Elmo":
        from .elmo import Elmo as value
    elif name == "ElmoEmbedder":
        from .embedder import ElmoEmbedder as value
    elif name == "ScalarMix":
        from .scalar_mix import ScalarMix as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
