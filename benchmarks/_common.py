"""What every benchmark script shares: machine facts, memory probes, isolated runs, JSON output.

Each measurement runs in its own fresh Python process (the script re-invoked with ``--child``), so
its peak memory is its own and a crash or out-of-memory error in one measurement is recorded
instead of ending the benchmark. Peak memory is read from the kernel, not estimated:

* ``peak_rss_mib``: the measuring process's high-water resident set (``VmHWM``). Not
  ``ru_maxrss``: Linux carries that over ``exec`` from the parent, so a child would report at
  least its parent's peak.
* ``peak_tree_rss_mib``: the largest sum of ``VmRSS`` over the process and all its descendants
  (DataLoader and conversion workers), sampled every 20 ms. Pages shared by forked workers count
  once per process, as ``top`` counts them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repository
if str(ROOT) not in sys.path:  # run as `python benchmarks/<name>.py`: make objdisc importable
    sys.path.insert(0, str(ROOT))

MIB = 2**20
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow start-up chatter off (fixture writing, tf.data)

from objdisc.io import write_json  # noqa: E402  (after the sys.path set-up above)

__all__ = ["write_json"]  # re-exported for the benchmark scripts


# ----------------------------------------------------------------------------- the sprites proving ground


def bench_params(model: str, overrides: list[str] = (), options: list[str] = (), outputs: Path | None = None,
                 dataset: str = "sprites"):
    """params.yaml as ``dvc exp run -S dataset=<dataset> -S model=<model>`` sees it: by default the
    proving ground's settings (benchmarks/zoo.py, benchmarks/zoo_curves.py).

    ``overrides`` are ``key=value`` as ``-S`` takes them (the key must exist); ``options`` are
    ``field=value`` (value in YAML) for fields of the model's config that params.yaml does not list,
    e.g. ``presence_prior={kind: linear, start: 0.1, end: 0.01, begin: 0, until: 400}``, for trying
    a setting without editing params.yaml; the model's config rejects an unknown field by name."""
    import yaml

    from objdisc.config import ConfigError, load_params

    params = load_params(ROOT / "params.yaml", [f"dataset={dataset}", f"model={model}", *overrides])
    for option in options:
        field, sep, text = option.partition("=")
        if not sep or not field.strip():
            raise ConfigError(f"option '{option}': expected field=value")
        params.models[model] = {**params.models[model], field.strip(): yaml.safe_load(text)}
    if outputs is not None:
        params.outputs = str(outputs)
    return params


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """Facts that decide how comparable two result files are (taken in the parent, before any
    measurement: the load average says whether the machine was busy when the run started)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "memory_gib": _meminfo_gib("MemTotal"),
        "memory_available_gib": _meminfo_gib("MemAvailable"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": _git_commit(),
    }
    return info


def library_info() -> dict[str, Any]:
    """Versions and threads as the measuring processes see them (called in a child)."""
    import numpy
    import torch

    info = {
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_gib(field: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) * 1024 / 2**30, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- memory


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def peak_rss_mib() -> float:
    """High-water RSS of this process since it was started (exec'd)."""
    kib = _status_kib("self", "VmHWM")
    if kib is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kib //= 1024
    return round(kib / 1024, 1)


def rss_mib() -> float:
    kib = _status_kib("self", "VmRSS")
    return round((kib or 0) / 1024, 1)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                kids = []
            found.extend(kids)
            todo.extend(kids)
    return found


class TreeRSS:
    """Samples the RSS of this process plus its descendants in a thread; ``peak_mib`` is the largest
    sum seen. A context manager: sampling runs inside the ``with`` block only."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pid = os.getpid()
        total = sum(_status_kib(p, "VmRSS") or 0 for p in [pid, *_descendants(pid)])
        self.peak_kib = max(self.peak_kib, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeRSS:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_mib(self) -> float:
        return round(self.peak_kib / 1024, 1)


# ----------------------------------------------------------------------------- isolated runs


def run_child(script: str | Path, task: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run ``script --child TASK --child-out FILE`` in a fresh interpreter and return the JSON the
    child wrote; a child that fails (exception, killed, timeout) gives ``{"error": ...}`` with the
    tail of its stderr instead."""
    with tempfile.TemporaryDirectory(prefix="objdisc-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), "--child", json.dumps(task), "--child-out", str(out)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired as err:
            return {"error": f"timed out after {timeout:.0f} s", "stderr_tail": _tail(err.stderr)}
        wall = round(time.perf_counter() - t0, 2)
        if out.exists():
            result = json.loads(out.read_text())
            result.setdefault("process_wall_s", wall)
            return result
        return {
            "error": f"exit status {proc.returncode} without a result",
            "stderr_tail": _tail(proc.stderr),
            "process_wall_s": wall,
        }


def _tail(text: str | bytes | None, lines: int = 15) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def error_record(err: BaseException) -> dict[str, Any]:
    """What a failed measurement leaves in the JSON (the type says e.g. OutOfMemoryError)."""
    return {"error": f"{type(err).__name__}: {err}".strip()[:2000], "error_type": type(err).__name__}


def reset_peak_rss() -> None:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ≥ 4.0), so that measurements run one
    after another in one process (``--in-process``) each report their own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
