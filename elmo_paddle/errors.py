"""User-facing errors: a mistake by the user becomes one clear line, never a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """An error caused by input the user controls (paths, configs, data). Printed as one line."""


def cli(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI entry point: UserError -> 'error: ...' on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
            return 0 if rc is None else int(rc)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
