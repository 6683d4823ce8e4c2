"""Make a suite's dvc.yaml from the root pipeline, so that no stage is defined twice.

A suite (``pipelines/<suite>/``) is a params.yaml holding a paper's settings; its dvc.yaml is the
root dvc.yaml's stages less ``generate``, run in the repository root (``wdir: ../..``) with the
suite's params file as the stages' argument and as the file its params are read from. Top-level
metrics and plots are relative to the suite's folder. The first comment line of the suite's
params.yaml heads its dvc.yaml.

A *table suite* (its params.yaml has a ``table`` block and ``seeds``; ``objdisc.benchmark``) is a
matrix instead: per dataset it reads (training and evaluation sets) a ``convert-<set>`` and an
``index-<set>`` stage; per training set a ``train-<set>`` matrix over ``${table.models}`` ×
``${seeds}`` and an ``evaluate-<set>`` matrix over models × seeds × the set's evaluation sets (each
run evaluated on each set into ``<run>/eval-<set>``); then ``aggregate``, which depends on the runs
and writes the table. Each row's stages read the params file of its training set (``table.params``,
default the suite's own) with ``dataset=``, ``model=``, ``seed=`` (and ``evaluate.dataset=``)
overrides on the command line, and declare only that model's block, so changing one model's params
re-runs only its rows (and the table). A params file that a table suite names for a training set
(e.g. ``clevr-benchmark`` for ``clevrtex-benchmark``'s CLEVR rows) is part of that suite, not a
suite of its own. ``-S <params file>:seeds=[0,1,2]`` changes the seeds, ``table.models`` the rows.

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


def _params(suite: str) -> dict:
    return yaml.safe_load((HERE / suite / "params.yaml").read_text()) or {}


def parts() -> dict[str, str]:
    """Params files that a table suite names for one of its training sets: folder → that suite."""
    out = {}
    for path in sorted(HERE.glob("*/params.yaml")):
        table = (yaml.safe_load(path.read_text()) or {}).get("table") or {}
        for file in (table.get("params") or {}).values():
            folder = Path(file).parent
            if folder.parent == Path("pipelines") and folder.name != path.parent.name:
                out[folder.name] = path.parent.name
    return out


def suites() -> list[str]:
    owned = parts()
    return sorted(p.parent.name for p in HERE.glob("*/params.yaml") if p.parent.name not in owned)


def render(suite: str) -> str:
    if "table" in _params(suite):
        return render_table(suite)
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


# ----------------------------------------------------------------------------- table suites

# What the aggregate stage runs (it imports no torch: tests/test_benchmark.py traces it).
AGGREGATE_CODE = [
    "stages/aggregate.py",
    "objdisc/__init__.py",
    "objdisc/config.py",
    "objdisc/errors.py",
    "objdisc/io.py",
    "objdisc/pipeline.py",
    "objdisc/benchmark.py",
]
PASSED = ("dataset", "model", "seed")  # given on the command line by table stages, not read from the file


def _sub(value, pairs: list[tuple[str, str]]):
    """Apply the replacements in order to every string (dict keys included) of ``value``."""
    if isinstance(value, str):
        for old, new in pairs:
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_sub(v, pairs) for v in value]
    if isinstance(value, dict):
        return {_sub(k, pairs): _sub(v, pairs) for k, v in value.items()}
    return value


def _keys(params: list, pairs: list[tuple[str, str]]) -> list[str]:
    """A root stage's params with what the command line passes dropped, the rest substituted."""
    return [_sub(k, pairs) for k in params if k not in PASSED]


class TableError(ValueError):
    pass


def table_layout(suite: str) -> dict:
    """What a table suite's dvc.yaml is made from: its params file, per training set the params
    file, outputs folder and run folder (with ``${item.*}``), and per dataset the file it is read
    with."""
    suite_file = f"pipelines/{suite}/params.yaml"
    params = _params(suite)
    table = params.get("table") or {}
    columns = table.get("columns") or []
    if not columns or not table.get("models") or "seeds" not in params:
        raise TableError(f"{suite_file}: a table suite needs seeds, table.models and table.columns")
    files = table.get("params") or {}
    trains: dict[str, dict] = {}
    datasets: dict[str, str] = {}
    for column in columns:
        train, on = column["train"], column["evaluate"]
        file = files.get(train, suite_file)
        raw = yaml.safe_load((ROOT / file).read_text()) or {}
        template = raw.get("run_folder", "{dataset}/{model}")
        if "{seed}" not in template:
            raise TableError(f"{file}: run_folder {template!r} has no {{seed}}; a table suite trains several seeds per model")
        outputs = raw.get("outputs", "data")
        entry = trains.setdefault(train, {
            "file": file, "outputs": outputs, "evaluate": [],
            "run": f"{outputs}/runs/" + template.format(dataset=train, model="${item.model}", seed="${item.seed}"),
        })
        if on not in entry["evaluate"]:
            entry["evaluate"].append(on)
        for name in (train, on):
            if datasets.setdefault(name, file) != file:
                raise TableError(f"{suite_file}: dataset '{name}' is read with both {datasets[name]} and {file}")
    return {"file": suite_file, "params": params, "trains": trains, "datasets": datasets}


def render_table(suite: str) -> str:
    root = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    layout = table_layout(suite)
    trains, datasets = layout["trains"], layout["datasets"]
    outputs_of = {t["file"]: t["outputs"] for t in trains.values()}
    stages: dict[str, dict] = {}
    for step in ("convert", "index"):
        stage = root["stages"][step]
        for name, file in datasets.items():
            pairs = [("${outputs}", outputs_of[file]), ("${dataset}", name)]
            keys = _keys(stage["params"], pairs)
            stages[f"{step}-{name}"] = {
                "wdir": "../..",
                "cmd": f"{stage['cmd']} {file} dataset={name}",
                "deps": _sub(stage["deps"], pairs),
                **({"params": [{file: keys}]} if keys else {}),  # an empty list would mean every key of the file
                "outs": _sub(stage["outs"], pairs),
            }
    for train, t in trains.items():
        run_base = "${outputs}/runs/${dataset}/${model}"
        stage = root["stages"]["train"]
        pairs = [(run_base, t["run"]), ("${outputs}", t["outputs"]), ("${dataset}", train), ("${model}", "${item.model}")]
        stages[f"train-{train}"] = {
            "matrix": {"model": "${table.models}", "seed": "${seeds}"},
            "wdir": "../..",
            "cmd": f"{stage['cmd']} {t['file']} dataset={train} model=${{item.model}} seed=${{item.seed}}",
            "deps": _sub(stage["deps"], pairs),
            "params": [{t["file"]: _keys(stage["params"], pairs)}],
            "outs": _sub(stage["outs"], pairs),
        }
        stage = root["stages"]["evaluate"]
        pairs = [(run_base + "/eval/", t["run"] + "/eval-${item.data}/"), (run_base, t["run"]), ("${outputs}", t["outputs"]),
                 ("${dataset}", "${item.data}"), ("${model}", "${item.model}")]
        stages[f"evaluate-{train}"] = {
            "matrix": {"model": "${table.models}", "seed": "${seeds}", "data": list(t["evaluate"])},
            "wdir": "../..",
            "cmd": f"{stage['cmd']} {t['file']} dataset={train} model=${{item.model}} seed=${{item.seed}} "
                   "evaluate.dataset=${item.data}",
            "deps": _sub(stage["deps"], pairs),
            "params": [{t["file"]: _keys(stage["params"], pairs)}],
            "outs": _sub(stage["outs"], pairs),
        }
    suite_file = layout["file"]
    table_dir = f"{layout['params'].get('outputs', 'data')}/table"
    others = sorted({t["file"] for t in trains.values()} - {suite_file})
    stages["aggregate"] = {
        "wdir": "../..",
        "cmd": f"python stages/aggregate.py {suite_file}",
        "deps": [*AGGREGATE_CODE, *others, *sorted({f"{t['outputs']}/runs" for t in trains.values()})],
        "params": [{suite_file: ["seeds", "table"]}],
        "outs": [f"{table_dir}/{name}" for name in ("table.md", "table.csv", "scores.csv", "tags.csv", "plot.csv")]
        + [{f"{table_dir}/table.json": {"cache": False}}],
    }
    up = "../../"
    metrics = layout["params"]["table"].get("metrics") or ["miou", "fg_ari", "mse_sum"]
    plots = [{metric: {"template": "bar_horizontal_sorted", "x": metric, "y": {f"{up}{table_dir}/plot.csv": "row"}}}
             for metric in metrics]
    body = {"stages": stages, "metrics": [f"{up}{table_dir}/table.json"], "plots": plots}
    title = (HERE / suite / "params.yaml").read_text().splitlines()[0].lstrip("# ").strip()
    head = (
        f"# {title}\n"
        f"# Made by pipelines/make.py from the root dvc.yaml and this folder's params.yaml (do not edit): a table\n"
        f"# suite, matrix stages over table.models x seeds per training set.  dvc repro pipelines/{suite}/dvc.yaml\n"
    )
    return head + yaml.safe_dump(body, sort_keys=False, width=120, allow_unicode=True)


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
    owned = parts()
    for name in args.suites:
        if name in owned:
            print(f"error: {name} is part of the table suite {owned[name]}: python pipelines/make.py {owned[name]}", file=sys.stderr)
            return 2
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
        try:
            text = render(suite)
        except TableError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}; run: dvc repro {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
