"""Worker processes of the data stages (``synth``, ``convert``): spawned, never forked, and failing
loudly instead of hanging.

Workers start with ``spawn`` because fork is unsafe with TFDS/ArrayRecord readers and threads. A
spawned worker re-imports the caller's main module, so a script that calls objdisc at its top level
without an ``if __name__ == "__main__":`` guard makes every worker fail while it starts.
``multiprocessing.Pool`` then replaces the dead workers for ever and the call hangs without a word
(CPython issue 22393); ``concurrent.futures`` notices a dead worker and raises ``BrokenProcessPool``,
which becomes here an error that says what to do.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any


class WorkerError(RuntimeError):
    """A worker process died (it did not raise: its Python exception would have been re-raised)."""


@contextlib.contextmanager
def spawn_pool(
    workers: int, what: str, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes for the block. The first failure inside the block
    (a worker's exception re-raised by ``Future.result``, an interrupt) stops every worker at once:
    queued work is dropped and running work killed, so that the error is seen now, not after the
    other workers' shards. A worker that dies becomes a ``WorkerError`` naming ``what``."""
    before = set(mp.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer, initargs=initargs)
    try:
        yield pool
    except BaseException as err:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in set(mp.active_children()) - before:
            process.terminate()
        if isinstance(err, BrokenProcessPool):
            raise WorkerError(
                f"a {what} worker process died ({err}). Workers are spawned and re-import the main "
                "module: a script that calls objdisc must do so under `if __name__ == \"__main__\":`; "
                "otherwise run with workers: 1, or look for the worker being killed (out of memory)"
            ) from err
        raise
    pool.shutdown(wait=True)
