"""Turn expected failures (bad params, missing files, undecodable data) into one clear line."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

from objdisc.config import ConfigError

EXPECTED: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, KeyError, ValueError, OSError)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Print ``error: <message>`` and exit with status 1 on an expected failure; warnings print
    as one ``warning: <message>`` line."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        yield
    except EXPECTED as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
