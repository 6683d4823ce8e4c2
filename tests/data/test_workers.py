"""The data stages' worker pool: a worker that dies is an error that says what to do, never a hang
(``multiprocessing.Pool`` replaces dead workers for ever)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from objdisc.data.workers import WorkerError, spawn_pool


def test_a_dead_worker_is_an_error_and_a_raised_one_is_re_raised():
    with pytest.raises(WorkerError, match="worker process died"):
        with spawn_pool(1, "test") as pool:
            pool.submit(os._exit, 3).result()  # the process ends without a Python exception
    with pytest.raises(ValueError, match="invalid literal"):
        with spawn_pool(1, "test") as pool:
            pool.submit(int, "not a number").result()


@pytest.mark.slow  # spawned workers import torch: several seconds on a small machine
def test_an_unguarded_script_fails_with_advice_instead_of_hanging(tmp_path: Path):
    """A script that generates data with two workers at its top level, as a first script often
    does: every spawned worker re-runs it and dies while starting. With multiprocessing.Pool this
    hung for ever; now it stops with an error that names the fix."""
    script = tmp_path / "make_data.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from objdisc.data.synth import SynthConfig, generate
            generate(SynthConfig(scenes=2, views=1, height=12, width=16), {str(tmp_path / "out")!r}, workers=2, progress=False)
            """
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    assert "WorkerError" in done.stderr and 'if __name__ == "__main__":' in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # the atomic write left nothing behind
