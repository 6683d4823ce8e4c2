"""A suite's table: every model × column (training set → evaluation set) × seed, mean ± std over
seeds, in the layout of the ClevrTex paper's Table 2, with published values beside ours.

A table suite's params file (``pipelines/<suite>/params.yaml``, made into DVC matrix stages by
``pipelines/make.py``) holds, besides the root schema::

    seeds: [0, 1, 2]                 # one run per model × training set × seed
    table:
      models: [spair, space, ...]    # the rows, in order
      columns:                       # the column groups, in order
        - {name: CLEVR, train: clevr-with-masks, evaluate: clevr-with-masks}
        - {name: OOD, train: clevrtex, evaluate: clevrtex-outd}
      params: {clevr-with-masks: pipelines/clevr-benchmark/params.yaml}  # default: this file
      metrics: [miou, fg_ari, mse_sum]
      published: clevrtex-table2     # reference values shown beside ours (PUBLISHED)
      title: ...                     # heads table.md

A training set is a params file (its dataset blocks, and its model blocks at that set's
settings); a run is found where that file's ``Params.run_dir`` puts it (``run_folder`` with the
seed), and its evaluation on a column's set in ``Params.eval_dir`` (``eval-<set>``).

``aggregate`` writes to ``<outputs>/table/``: ``table.md`` (the table, what each column was
trained and evaluated on, and the published values marked unverified), ``table.csv`` (the same
layout, one row per model), ``table.json`` (means, as DVC metrics), ``scores.csv`` (every
evaluation, one row per model × column × seed), ``tags.csv`` (per-tag means of the per-object
statistics, mean over seeds: which materials and shapes each model fails on) and ``plot.csv``
(one row per model and column, for the suite's DVC bar plots).

Std is the sample standard deviation over seeds (ddof = 1); with one seed it is not shown.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from objdisc.config import ConfigError, Params, build, load_params
from objdisc.io import atomic_write, write_json, write_text


@dataclass
class Column:
    name: str  # heading, e.g. "OOD"
    train: str  # the training set: a dataset of the training set's params file
    evaluate: str  # the evaluation set: a dataset of the same file


@dataclass
class TableConfig:
    models: list[str]
    columns: list[Column]
    params: dict[str, str] = field(default_factory=dict)  # training set → params file (default: the suite's)
    metrics: list[str] = field(default_factory=lambda: ["miou", "fg_ari", "mse_sum"])
    published: str | None = None  # key of PUBLISHED
    title: str = "Object discovery benchmark"  # heads table.md

    def training_sets(self) -> list[str]:
        return list(dict.fromkeys(c.train for c in self.columns))

    def evaluations(self, train: str) -> list[str]:
        return list(dict.fromkeys(c.evaluate for c in self.columns if c.train == train))


# metric key → (heading, scale applied to the stored value, which way is better)
METRICS: dict[str, tuple[str, float, str]] = {
    "miou": ("mIoU (%)", 100.0, "↑"),
    "fg_ari": ("ARI-FG (%)", 100.0, "↑"),
    "mse_sum": ("MSE", 1.0, "↓"),
    "ari": ("ARI (%)", 100.0, "↑"),
    "mbo": ("mBO (%)", 100.0, "↑"),
    "acc": ("count acc. (%)", 100.0, "↑"),
    "obj_iou": ("object IoU (%)", 100.0, "↑"),
    "psnr": ("PSNR (dB)", 1.0, "↑"),
    "mse": ("MSE per value", 1.0, "↓"),
}

NAMES = {
    "slot_attention": "Slot Attention", "monet": "MONet", "iodine": "IODINE", "genesis_v2": "GENESIS-v2",
    "emorl": "eMORL", "spair": "SPAIR", "space": "SPACE", "gnm": "GNM", "dti_sprites": "DTI-Sprites",
    "marionette": "MarioNette", "slate": "SLATE",
}

# Published values, by column heading and model, in the table's metrics order. The ClevrTex
# values are a recollection of Karazija et al. 2021 (arXiv 2111.10265), Table 2, that nobody has
# checked against the paper (every table that shows them says so).
PUBLISHED: dict[str, dict[str, Any]] = {
    "clevrtex-table2": {
        "source": "Karazija et al. 2021 (arXiv 2111.10265), Table 2, as recalled: "
        "UNVERIFIED, not read from the paper; mean of 3 seeds",
        "metrics": ["miou", "fg_ari", "mse_sum"],
        "values": {
            "CLEVR": {
                "spair": [65.95, 77.13, 55], "space": [26.31, 78.88, 73], "gnm": [59.92, 65.05, 43],
                "marionette": [56.81, 72.12, 75], "dti_sprites": [48.74, 89.54, 77], "genesis_v2": [9.48, 57.90, 158],
                "emorl": [50.19, 93.25, 33], "monet": [30.66, 54.47, 58], "slot_attention": [36.61, 95.89, 23],
                "iodine": [45.14, 93.81, 44],
            },
            "ClevrTex": {
                "spair": [0.00, 0.00, 1101], "space": [9.14, 17.53, 298], "gnm": [42.25, 53.37, 383],
                "marionette": [10.20, 38.31, 335], "dti_sprites": [33.79, 79.90, 438], "genesis_v2": [7.93, 31.19, 315],
                "emorl": [12.58, 45.00, 318], "monet": [19.78, 36.66, 146], "slot_attention": [22.58, 62.40, 254],
                "iodine": [29.16, 59.52, 340],
            },
        },
    },
}
UNVERIFIED_MARK = "†"


# ----------------------------------------------------------------------------- configuration


def table_config(params: Params) -> tuple[TableConfig, list[int]]:
    """The params' ``table`` block and ``seeds``, checked: models with a block in the params (the
    registry is not imported: aggregating needs no torch), distinct column names, a seed list of
    distinct integers. ``training_params`` checks the other training sets' files."""
    raw = params.raw
    if "table" not in raw:
        raise ConfigError("table: this params file has no table block (a table suite names its models and columns there)")
    table = build(TableConfig, raw["table"], "table")
    seeds = raw.get("seeds", [params.seed])
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: {seeds} repeats a seed")
    if not table.models or not table.columns:
        raise ConfigError("table: needs at least one model and one column")
    if len(set(table.models)) != len(table.models):
        raise ConfigError("table.models: a model is listed twice")
    names = [c.name for c in table.columns]
    if len(set(names)) != len(names):
        raise ConfigError(f"table.columns: two columns share a name ({', '.join(names)})")
    for train, path in table.params.items():
        if not isinstance(path, str) or train not in table.training_sets():
            raise ConfigError(f"table.params.{train}: expected the params file of a training set of table.columns")
    for metric in table.metrics:
        if not isinstance(metric, str):
            raise ConfigError(f"table.metrics: expected metric names, got {metric!r}")
    if table.published is not None and table.published not in PUBLISHED:
        raise ConfigError(f"table.published: unknown reference '{table.published}' (known: {', '.join(PUBLISHED)})")
    return table, seeds


def training_params(params: Params, table: TableConfig) -> dict[str, Params]:
    """Training set → the Params that train on it (its own file, or the suite's), checked to hold
    the set, its evaluation sets and a block for every model."""
    out: dict[str, Params] = {}
    for train in table.training_sets():
        path = table.params.get(train)
        base = load_params(path) if path else params
        where = path or "this file"
        for name in (train, *table.evaluations(train)):
            if name not in base.datasets:
                raise ConfigError(f"table: dataset '{name}' is not in the datasets of {where}")
        missing = [m for m in table.models if m not in base.models]
        if missing:
            raise ConfigError(f"table.models: {where} has no models block for {', '.join(missing)}")
        out[train] = base
    return out


def run_params(base: Params, train: str, model: str, seed: int, evaluate: str | None = None) -> Params:
    """``base`` at one row of the matrix (what ``load_params(file, [dataset=..., model=..., seed=...,
    evaluate.dataset=...])`` gives, without re-reading the file)."""
    return dataclasses.replace(
        base, dataset=train, model=model, seed=seed, evaluate=dataclasses.replace(base.evaluate, dataset=evaluate)
    )


def evaluation_path(base: Params, train: str, model: str, seed: int, evaluate: str) -> Path:
    return run_params(base, train, model, seed, evaluate).eval_dir() / "metrics.json"


# ----------------------------------------------------------------------------- aggregation


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = float(np.mean(finite))
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return mean, std


def collect(params: Params, partial: bool = False) -> dict[str, Any]:
    """Every evaluation of the table: ``scores`` (one record per model × column × seed found),
    ``cells`` ((model, column) → metric → (mean, std, n)), ``tags`` and what each column read."""
    import json

    table, seeds = table_config(params)
    bases = training_params(params, table)
    scores, missing, tag_rows = [], [], []
    columns_info = {}
    for column in table.columns:
        base = bases[column.train]
        columns_info[column.name] = {
            "train": column.train, "evaluate": column.evaluate, "split": base.evaluate.split, "scenes": set(),
        }
        for model in table.models:
            for seed in seeds:
                path = evaluation_path(base, column.train, model, seed, column.evaluate)
                if not path.exists():
                    missing.append(path)
                    continue
                metrics = json.loads(path.read_text())
                columns_info[column.name]["scenes"].add(int(metrics.get("scenes", 0)))
                scores.append({"model": model, "column": column.name, "train": column.train, "evaluate": column.evaluate,
                               "seed": seed, "path": path.as_posix(), **metrics})
                tags_path = path.with_name("tags.csv")
                if tags_path.exists():
                    for row in _read_csv(tags_path):
                        tag_rows.append({"model": model, "column": column.name, "seed": seed, **row})
    if missing and not partial:
        shown = "\n  ".join(p.as_posix() for p in missing[:8]) + ("\n  ..." if len(missing) > 8 else "")
        raise ConfigError(f"table: {len(missing)} evaluation(s) missing (run the suite, or aggregate --partial):\n  {shown}")
    cells: dict[tuple[str, str], dict[str, tuple[float, float, int]]] = {}
    for model in table.models:
        for column in table.columns:
            found = [s for s in scores if s["model"] == model and s["column"] == column.name]
            cell = {}
            for metric in table.metrics:
                values = [float(s[metric]) for s in found if metric in s and s[metric] is not None]
                mean, std = _mean_std(values)
                cell[metric] = (mean, std, len([v for v in values if math.isfinite(v)]))
            cells[(model, column.name)] = cell
    return {"table": table, "seeds": seeds, "scores": scores, "cells": cells, "tags": tag_rows,
            "columns": columns_info, "missing": [p.as_posix() for p in missing]}


def tag_summary(tag_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model, column, statistic, tag and value: the mean over seeds of the per-seed tag means,
    with the seeds and objects counted; sorted ascending by mean within each group."""
    groups: dict[tuple, list[tuple[float, int]]] = {}
    for r in tag_rows:
        key = (r["model"], r["column"], r["statistic"], r["tag"], r["value"])
        groups.setdefault(key, []).append((float(r["mean"]), int(r["count"])))
    rows = [
        {"model": m, "column": c, "statistic": s, "tag": t, "value": v, "mean": float(np.mean([x for x, _ in vals])),
         "seeds": len(vals), "objects": sum(n for _, n in vals)}
        for (m, c, s, t, v), vals in groups.items()
    ]
    return sorted(rows, key=lambda r: (r["model"], r["column"], r["statistic"], r["tag"], r["mean"], r["value"]))


# ----------------------------------------------------------------------------- formatting


def metric_heading(metric: str) -> str:
    label, _, better = METRICS.get(metric, (metric, 1.0, ""))
    return f"{label} {better}".strip()


def _scaled(metric: str, value: float) -> float:
    return value * METRICS.get(metric, (metric, 1.0, ""))[1]


def _number(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "–"
    scale = METRICS.get(metric, (metric, 1.0, ""))[1]
    if metric in ("mse_sum",):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return f"{value:.2f}" if scale != 1.0 or abs(value) < 100 else f"{value:.0f}"


def published_value(table: TableConfig, column: str, model: str, metric: str) -> float | None:
    if table.published is None:
        return None
    ref = PUBLISHED[table.published]
    values = ref["values"].get(column, {}).get(model)
    if values is None or metric not in ref["metrics"]:
        return None
    return float(values[ref["metrics"].index(metric)])


def cell_text(table: TableConfig, model: str, column: str, metric: str, stat: tuple[float, float, int]) -> str:
    mean, std, n = stat
    text = "–" if n == 0 else _number(metric, _scaled(metric, mean))
    if n > 1 and math.isfinite(std):
        text += f" ± {_number(metric, _scaled(metric, std))}"
    ref = published_value(table, column, model, metric)
    if ref is not None:
        text += f" ({ref:g}{UNVERIFIED_MARK})"
    return text


def markdown(result: dict[str, Any], title: str) -> str:
    table: TableConfig = result["table"]
    seeds = result["seeds"]
    header = ["model"] + [f"{c.name} {metric_heading(m)}" for c in table.columns for m in table.metrics] + ["seeds"]
    lines = [f"# {title}", ""]
    lines.append(
        f"Mean ± std over seeds {seeds} (sample std, ddof 1; none with one seed). mIoU is the ClevrTex evaluator's "
        "foreground mIoU (Hungarian), ARI-FG the ARI over foreground pixels, MSE the per-image sum of squared "
        "errors at the model's resolution (as the ClevrTex evaluator computes it)."
    )
    if table.published is not None:
        lines.append(
            f"In brackets with {UNVERIFIED_MARK}: published values, {PUBLISHED[table.published]['source']}."
        )
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in table.models:
        cells = [cell_text(table, model, c.name, m, result["cells"][(model, c.name)][m]) for c in table.columns for m in table.metrics]
        n = max((result["cells"][(model, c.name)][m][2] for c in table.columns for m in table.metrics), default=0)
        lines.append("| " + " | ".join([NAMES.get(model, model), *cells, str(n)]) + " |")
    lines += ["", "| column | trained on | evaluated on | split | scenes |", "|---|---|---|---|---|"]
    for c in table.columns:
        info = result["columns"][c.name]
        scenes = ", ".join(str(s) for s in sorted(info["scenes"])) or "–"
        lines.append(f"| {c.name} | {info['train']} | {info['evaluate']} | {info['split']} | {scenes} |")
    if result["missing"]:
        lines += ["", f"Partial table: {len(result['missing'])} evaluation(s) missing, shown as –."]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def wide_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """table.csv: one row per model, per column and metric the mean, std and published value
    (scaled as in the table: percentages for mIoU and ARI-FG)."""
    table: TableConfig = result["table"]
    rows = []
    for model in table.models:
        row: dict[str, Any] = {"model": model, "name": NAMES.get(model, model)}
        for c in table.columns:
            for m in table.metrics:
                mean, std, n = result["cells"][(model, c.name)][m]
                head = f"{c.name} {METRICS.get(m, (m,))[0]}"
                row[head] = round(_scaled(m, mean), 4) if math.isfinite(mean) else ""
                row[f"{head} std"] = round(_scaled(m, std), 4) if math.isfinite(std) else ""
                ref = published_value(table, c.name, model, m)
                row[f"{head} published{UNVERIFIED_MARK if ref is not None else ''}"] = "" if ref is None else ref
        row["seeds"] = max((result["cells"][(model, c.name)][m][2] for c in table.columns for m in table.metrics), default=0)
        rows.append(row)
    return rows


def plot_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """plot.csv: one row per model and column, the table's metrics (scaled) as fields."""
    table: TableConfig = result["table"]
    rows = []
    for c in table.columns:
        for model in table.models:
            row: dict[str, Any] = {"row": f"{NAMES.get(model, model)} · {c.name}", "model": model, "column": c.name}
            for m in table.metrics:
                mean = result["cells"][(model, c.name)][m][0]
                row[m] = round(_scaled(m, mean), 4) if math.isfinite(mean) else ""
            rows.append(row)
    return rows


def aggregate(params: Params, out_dir: str | Path, partial: bool = False, title: str | None = None) -> dict[str, Any]:
    """Collect the table's evaluations and write table.md, table.csv, table.json, scores.csv,
    tags.csv and plot.csv to ``out_dir``. Returns what ``collect`` returns."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = collect(params, partial=partial)
    table: TableConfig = result["table"]
    write_text(out_dir / "table.md", markdown(result, title or table.title))
    _write_csv(out_dir / "table.csv", wide_rows(result))
    means = {
        c.name: {model: {m: result["cells"][(model, c.name)][m][0] for m in table.metrics} for model in table.models}
        for c in table.columns
    }
    write_json(out_dir / "table.json", _finite(means))
    score_columns = ["model", "column", "train", "evaluate", "seed"]
    _write_csv(out_dir / "scores.csv", [{k: v for k, v in s.items() if k != "path"} for s in result["scores"]],
               score_columns + sorted({k for s in result["scores"] for k in s} - set(score_columns) - {"path"}))
    _write_csv(out_dir / "tags.csv", tag_summary(result["tags"]),
               ["model", "column", "statistic", "tag", "value", "mean", "seeds", "objects"])
    _write_csv(out_dir / "plot.csv", plot_rows(result), ["row", "model", "column", *table.metrics])
    return result


def _finite(tree: Any) -> Any:
    """NaN → None, so the JSON is valid for DVC."""
    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree
