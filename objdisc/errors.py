"""Turn expected failures (bad params, missing files, undecodable data) into one clear line."""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator

from objdisc.config import ConfigError

EXPECTED: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, KeyError, ValueError, OSError)

# "module.ExceptionType: " in front of the message of a formatted exception.
_TYPE_PREFIX = re.compile(r"^[A-Za-z_][\w.]*: ")


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line.

    A DataLoader worker's exception reaches the main process re-raised by torch with the whole
    worker traceback as its message ("Caught StorageError in DataLoader worker process 0.\\n
    Original Traceback (most recent call last): ..."); that becomes the original exception's own
    message again (its last block, without the ``module.Type:`` prefix).
    """
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    text = str(message)
    if "Traceback (most recent call last)" not in text:
        return text
    lines = [line for line in text.splitlines() if line.strip()]
    # Traceback frames are indented; the exception's own text follows the last indented line.
    last_frame = max((i for i, line in enumerate(lines) if line.startswith(" ")), default=-1)
    tail = " ".join(lines[last_frame + 1 :]).strip()
    return _TYPE_PREFIX.sub("", tail, count=1) or text.splitlines()[0]


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Print ``error: <message>`` and exit with status 1 on an expected failure; warnings print
    as one ``warning: <message>`` line."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        yield
    except EXPECTED as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(1) from None
