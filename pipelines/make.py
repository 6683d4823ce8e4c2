"""Make a suite's dvc.yaml from the root pipeline, so that no stage is defined twice.

A suite (``pipelines/<suite>/``) is a params.yaml holding a paper's settings; its dvc.yaml is the
root dvc.yaml's stages less ``generate``, run in the repository root (``wdir: ../..``) with the
suite's params file as the stages' argument and as the file its params are read from. Top-level
metrics and plots are relative to the suite's folder. The first comment line of the suite's
params.yaml heads its dvc.yaml.

A suite's dvc.yaml is made when you want that suite, not committed for all of them: DVC treats
every dvc.yaml in the repository as one project, so never-run suites would make a bare `dvc pull`
fail (their outputs have no recorded hash) and fill every `dvc exp run` with warnings. Once made
and run, commit it with its dvc.lock like any pipeline.

    python pipelines/make.py clevrtex-benchmark     # write pipelines/clevrtex-benchmark/dvc.yaml
    python pipelines/make.py --list                 # the suites
    python pipelines/make.py --check                # exit 1 if a made dvc.yaml is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SKIP = ("generate",)  # the embedded datasets are the default pipeline's; suites read real files


def suites() -> list[str]:
    return sorted(p.parent.name for p in HERE.glob("*/params.yaml"))


def render(suite: str) -> str:
    root = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params_file = f"pipelines/{suite}/params.yaml"
    stages = {}
    for name, stage in root["stages"].items():
        if name in SKIP:
            continue
        stages[name] = {
            "wdir": "../..",
            "cmd": f"{stage['cmd']} {params_file}",
            "deps": stage["deps"],
            "params": [{params_file: stage["params"]}],
            "outs": stage["outs"],
        }
    up = "../../"
    plots = []
    for plot in root["plots"]:
        if isinstance(plot, str):
            plots.append(up + plot)
            continue
        [(name, spec)] = plot.items()
        plots.append({name: {**spec, "y": {up + path: column for path, column in spec["y"].items()}}})
    body = {"stages": stages, "metrics": [up + m for m in root["metrics"]], "plots": plots}
    title = (HERE / suite / "params.yaml").read_text().splitlines()[0].lstrip("# ").strip()
    head = (
        f"# {title}\n"
        f"# Made by pipelines/make.py from the root dvc.yaml (do not edit): its stages less generate, run\n"
        f"# in the repository root with this folder's params.yaml.  dvc repro pipelines/{suite}/dvc.yaml\n"
    )
    return head + yaml.safe_dump(body, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", help="suites to make (default with --check: those already made)")
    parser.add_argument("--list", action="store_true", help="list the suites")
    parser.add_argument("--check", action="store_true", help="only check that the made dvc.yaml files are up to date")
    args = parser.parse_args(argv)
    known = suites()
    if args.list:
        print("\n".join(known))
        return 0
    unknown = sorted(set(args.suites) - set(known))
    if unknown:
        print(f"error: unknown suite(s) {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    if args.check:
        chosen = args.suites or [s for s in known if (HERE / s / "dvc.yaml").exists()]
        stale = [s for s in chosen if not (HERE / s / "dvc.yaml").exists() or (HERE / s / "dvc.yaml").read_text() != render(s)]
        if stale:
            print(f"out of date (run python pipelines/make.py {' '.join(stale)})", file=sys.stderr)
            return 1
        return 0
    if not args.suites:
        parser.error("name the suites to make (--list shows them)")
    for suite in args.suites:
        path = HERE / suite / "dvc.yaml"
        path.write_text(render(suite))
        print(f"wrote {path.relative_to(ROOT)}; run: dvc repro {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
