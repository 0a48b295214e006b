"""elmo_paddle: pretrain a Chinese ELMo biLM with PaddlePaddle and use it, frozen, in task models."""
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
