"""The ClevrTex benchmark as one command (pipelines/clevrtex-benchmark, objdisc/benchmark.py).

* the per-material statistics of an evaluation match a hand computation on a fixed prediction,
  from ClevrTex files in the original format;
* the table: mean ± std over seeds, the layout of the paper's Table 2, the published values beside
  ours marked unverified, a missing evaluation is an error (or a dash with ``partial``);
* end to end (slow): the suite's dvc.yaml runs on tiny ClevrTex (full, outd, camo) and CLEVR
  fixtures written in the original formats with two models and one seed; the table has its shape,
  the OOD and CAMO columns come from their own data, a second repro does nothing, and changing one
  model's block re-runs only that model's rows and the table.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from objdisc import benchmark as B
from objdisc.config import ConfigError, DatasetConfig, EvaluateConfig, ImageConfig, load_params
from objdisc.data.convert import convert
from objdisc.data.index import build_index, load_index
from objdisc.data.loading import SceneDataset
from objdisc.evaluate import evaluate
from objdisc.models.base import Model, ModelOutput
from objdisc.models.family import IMAGE

from .conftest import ROOT
from .data.sources.test_clevrtex import PALETTE, write_scene

SUITE = ROOT / "pipelines" / "clevrtex-benchmark"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- fixtures

MATERIALS = ["MetalSheet", "Rubber", "WoodPlanks", "Marble"]
SHAPES = ["cube", "sphere", "cylinder", "monkey"]
GRID = 32  # the evaluated resolution; the 0.8 centre crop is 192 px, so one grid cell is 6×6 px


def write_structured_scene(folder: Path, variant: str, index: int, rng: np.random.Generator, ground: str) -> dict:
    """A ClevrTex scene in the original layout (write_scene's files), then made checkable by hand:
    one flat colour over the image, objects as rectangles of whole 6×6 cells of the centre crop
    (so the crop and the nearest resize to 32×32 keep them exactly), varied materials and shapes.
    Returns the 32×32 id grid, the colour and the JSON objects."""
    write_scene(folder, variant, index, rng, num_objects=3)
    sub = folder / f"clevrtex_{variant}" / str(index // 1000)
    stem = f"CLEVRTEX_{variant}_{index:06d}"
    grid = np.zeros((GRID, GRID), np.uint8)
    for k in (1, 2, 3):
        top, left = rng.integers(0, GRID - 4, size=2)
        grid[top : top + rng.integers(2, 9), left : left + rng.integers(2, 9)] = k
    if index % 4 == 3:
        grid[grid == 3] = 0  # object 3 hidden behind the others: not in the image, not in the stats
    mask = np.zeros((240, 320), np.uint8)
    mask[24:216, 64:256] = np.kron(grid, np.ones((6, 6), np.uint8))
    flat = Image.fromarray(mask, mode="P")
    flat.putpalette(PALETTE)
    flat.save(sub / f"{stem}_flat.png")
    colour = int(rng.integers(0, 256))
    Image.fromarray(np.full((240, 320, 3), colour, np.uint8), mode="RGB").save(sub / f"{stem}.png")
    meta = json.loads((sub / f"{stem}.json").read_text())
    for k, obj in enumerate(meta["objects"]):
        obj.update(material=MATERIALS[(index + k) % 4], shape=SHAPES[(2 * index + k) % 4], size=[0.4, 0.6, 0.9][k])
    meta["ground_material"] = ground
    (sub / f"{stem}.json").write_text(json.dumps(meta))
    return {"grid": grid, "colour": colour / 255.0, "objects": meta["objects"], "ground": ground}


PREDICTION = np.zeros((GRID, GRID), np.int64)  # the fixed prediction: four quadrant-ish segments
PREDICTION[:, 12:] = 1
PREDICTION[16:, :20] = 2
PREDICTION[20:, 20:] = 3


class Quadrants(Model):
    """Predicts the same four segments and a grey image for every scene."""

    def __init__(self, cfg=None) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch, step=0):
        b = batch["image"].shape[0]
        ids = torch.from_numpy(PREDICTION).expand(b, GRID, GRID)
        masks = torch.nn.functional.one_hot(ids, 4).permute(0, 3, 1, 2).float()
        return ModelOutput(loss=self.dummy.sum(), recon=torch.full_like(batch["image"], 0.5), masks=masks)


def hand_ious(true: np.ndarray, pred: np.ndarray) -> dict[int, float]:
    """IoU of every true label with its partner in the best one-to-one assignment, by brute force."""
    t_labels, p_labels = sorted(np.unique(true)), sorted(np.unique(pred))
    iou = {(a, b): np.sum((true == a) & (pred == b)) / np.sum((true == a) | (pred == b)) for a in t_labels for b in p_labels}
    k = max(len(t_labels), len(p_labels))
    best, best_total = None, -1.0
    for perm in itertools.permutations(range(k), len(t_labels)):
        total = sum(iou[(a, p_labels[j])] for a, j in zip(t_labels, perm) if j < len(p_labels))
        if total > best_total + 1e-12:
            best, best_total = perm, total
    return {a: (iou[(a, p_labels[j])] if j < len(p_labels) else 0.0) for a, j in zip(t_labels, best)}


@pytest.mark.filterwarnings("ignore:FG-ARI .* is below")  # a few steps of training: below the image-blind floor, as expected
def test_per_material_statistics_match_a_hand_computation(tmp_path):
    """From ClevrTex files to tags.csv: per object its masked SSE (true mask on both images) and
    the IoU with its Hungarian partner, averaged per material, shape, size and ground material."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    written = [write_structured_scene(raw, "full", i, rng, ground=["Concrete", "Grass"][i % 2]) for i in range(20)]
    shards = tmp_path / "shards"
    convert("clevrtex", raw, shards, shard_scenes=8, progress=False)
    build_index(shards, progress=False, out=tmp_path / "index.json")
    data = DatasetConfig(source="clevrtex", image=ImageConfig(center_crop=0.8, size=GRID))
    dataset = SceneDataset(shards, load_index(tmp_path / "index.json"), "train", IMAGE.transform(data, train=False))
    out = tmp_path / "eval"
    evaluate(Quadrants(), dataset, EvaluateConfig(batch_size=5, pictures=1), out, progress=False)

    groups: dict[tuple[str, str, str], list[float]] = {}
    objects = 0
    for scene in written[4:]:  # train = images 4..19 (test 0-1, val 2-3)
        ious = hand_ious(scene["grid"], PREDICTION)
        for k in sorted(ious):
            area = int((scene["grid"] == k).sum())
            sse = area * 3 * (0.5 - scene["colour"]) ** 2
            if k == 0:
                tags = {"ground_material": scene["ground"]}
                prefix = "ground"
            else:
                obj = scene["objects"][k - 1]
                tags = {"material": obj["material"], "shape": obj["shape"], "size": str(obj["size"])}
                prefix = "obj"
                objects += 1
            for tag, value in tags.items():
                groups.setdefault((f"{prefix}_iou", tag, value), []).append(ious[k])
                groups.setdefault((f"{prefix}_mse", tag, value), []).append(sse)
    rows = read_csv(out / "tags.csv")
    got = {(r["statistic"], r["tag"], r["value"]): (float(r["mean"]), int(r["count"])) for r in rows}
    assert set(got) == set(groups)
    for key, values in groups.items():
        # IoUs exactly; SSEs to float32 (the loader's image is float32 colour / 255)
        assert got[key][0] == pytest.approx(np.mean(values), rel=1e-9 if key[0].endswith("iou") else 1e-5, abs=1e-12), key
        assert got[key][1] == len(values), key
    assert {v for (s, t, v) in got if t == "material"} == set(MATERIALS)
    assert "color" not in {t for (_, t, _) in got}  # ClevrTex full: colour is no tag
    # Hidden objects (index % 4 == 3) are not counted; every visible one is.
    assert len([o for o in read_csv(out / "objects.csv") if o["kind"] == "object"]) == objects
    for statistic in ("obj_iou", "obj_mse"):  # sorted ascending by mean within each tag
        for tag in ("material", "shape", "size"):
            means = [float(r["mean"]) for r in rows if r["statistic"] == statistic and r["tag"] == tag]
            assert means == sorted(means)
    metrics = json.loads((out / "metrics.json").read_text())
    pooled = [v for (s, t, _), vs in groups.items() if s == "obj_iou" and t == "material" for v in vs]
    assert metrics["obj_iou"] == pytest.approx(np.mean(pooled))


# ----------------------------------------------------------------------------- the table


def suite_copy(tmp_path: Path, models: list[str], seeds: list[int]) -> Path:
    """The suite's two params files in ``tmp_path/pipelines`` with fewer rows."""
    for name in ("clevrtex-benchmark", "clevr-benchmark"):
        (tmp_path / "pipelines" / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "pipelines" / name / "params.yaml", tmp_path / "pipelines" / name / "params.yaml")
    path = tmp_path / "pipelines/clevrtex-benchmark/params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["table"]["models"] = models
    raw["seeds"] = seeds
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def fake_evaluation(path: Path, miou: float, fg_ari: float, mse_sum: float, scenes: int, tags: list[tuple] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scenes": scenes, "miou": miou, "fg_ari": fg_ari, "mse_sum": mse_sum, "acc": 0.5}))
    with open(path.with_name("tags.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["statistic", "tag", "value", "mean", "count"])
        writer.writerows(tags)


def test_table_is_mean_and_std_over_seeds_beside_the_published_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(suite_copy(tmp_path, ["slot_attention", "gnm"], [0, 1, 2]))
    values = {}
    for model, column, seed in itertools.product(["slot_attention", "gnm"], ["CLEVR", "ClevrTex", "OOD", "CAMO"], [0, 1, 2]):
        c = next(c for c in B.table_config(params)[0].columns if c.name == column)
        base = params if c.train == "clevrtex" else load_params("pipelines/clevr-benchmark/params.yaml")
        path = B.evaluation_path(base, c.train, model, seed, c.evaluate)
        assert path.as_posix() == f"data/clevrtex-benchmark/runs/{c.train}/{model}/seed{seed}/eval-{c.evaluate}/metrics.json"
        v = (0.1 * seed + 0.2, 0.5 + 0.01 * seed, 100.0 + seed)
        values[(model, column, seed)] = v
        fake_evaluation(path, *v, scenes={"OOD": 10000, "CAMO": 2000}.get(column, 5000),
                        tags=[("obj_iou", "material", "Metal", 0.1 * (seed + 1), 4)])
    result = B.aggregate(params, tmp_path / "table")
    md = (tmp_path / "table/table.md").read_text()
    # mIoU of slot_attention on CLEVR over seeds 0,1,2: 20, 30, 40 % → 30.00 ± 10.00; published 36.61 (unverified).
    assert "| Slot Attention | 30.00 ± 10.00 (36.61†) | 51.00 ± 1.00 (95.89†) | 101 ± 1.0 (23†) |" in md
    assert "UNVERIFIED" in md and "†" in md
    assert "| OOD | clevrtex | clevrtex-outd | test | 10000 |" in md
    assert "| CAMO | clevrtex | clevrtex-camo | test | 2000 |" in md
    rows = read_csv(tmp_path / "table/table.csv")
    assert [r["model"] for r in rows] == ["slot_attention", "gnm"]
    assert len(rows[0]) == 2 + 4 * 3 * 3 + 1  # model, name; per column × metric mean, std, published; seeds
    assert float(rows[1]["OOD mIoU (%)"]) == pytest.approx(30.0) and rows[1]["OOD mIoU (%) published"] == ""
    assert float(rows[1]["ClevrTex mIoU (%) published†"]) == 42.25
    scores = read_csv(tmp_path / "table/scores.csv")
    assert len(scores) == 2 * 4 * 3
    tags = read_csv(tmp_path / "table/tags.csv")
    assert {(t["model"], t["column"]) for t in tags} == {(m, c) for m in ("slot_attention", "gnm") for c in ("CLEVR", "ClevrTex", "OOD", "CAMO")}
    assert float(tags[0]["mean"]) == pytest.approx(0.2) and tags[0]["seeds"] == "3" and tags[0]["objects"] == "12"
    table_json = json.loads((tmp_path / "table/table.json").read_text())
    assert table_json["CAMO"]["gnm"]["mse_sum"] == pytest.approx(101.0)
    plot = read_csv(tmp_path / "table/plot.csv")
    assert len(plot) == 2 * 4 and plot[0]["row"] == "Slot Attention · CLEVR"
    assert result["cells"][("gnm", "CLEVR")]["miou"][2] == 3


def test_a_missing_evaluation_is_an_error_unless_partial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(suite_copy(tmp_path, ["slot_attention"], [0]))
    fake_evaluation(B.evaluation_path(params, "clevrtex", "slot_attention", 0, "clevrtex"), 0.2, 0.6, 250, 5000)
    with pytest.raises(ConfigError, match="3 evaluation"):
        B.aggregate(params, tmp_path / "table")
    B.aggregate(params, tmp_path / "table", partial=True)
    md = (tmp_path / "table/table.md").read_text()
    assert "| Slot Attention | – (36.61†) | – (95.89†) | – (23†) | 20.00 (22.58†) | 60.00 (62.4†) | 250 (254†) |" in md
    assert "Partial table: 3 evaluation(s) missing" in md


def test_table_config_errors_name_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = suite_copy(tmp_path, ["slot_attention"], [0, 0])
    with pytest.raises(ConfigError, match="seeds"):
        B.table_config(load_params(path))
    raw = yaml.safe_load(path.read_text())
    raw["seeds"] = [0]
    raw["table"]["columns"].append({"name": "X", "train": "clevrtex", "evaluate": "nope"})
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    table, _ = B.table_config(params)
    with pytest.raises(ConfigError, match="dataset 'nope'"):
        B.training_params(params, table)
    raw["table"]["columns"].pop()
    raw["table"]["models"] = ["slot_attention", "no_such_model"]
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    with pytest.raises(ConfigError, match="no models block for no_such_model"):
        B.training_params(params, B.table_config(params)[0])


# ----------------------------------------------------------------------------- end to end (DVC)


def sh(*args, cwd, env_extra=None, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", **(env_extra or {})}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check and result.returncode:
        raise AssertionError(f"{args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def ran(log: str) -> list[str]:
    """The stages a `dvc repro` log ran, without the `<dvc.yaml>:` prefix dvc gives stages of a
    dvc.yaml outside the working directory."""
    return sorted(line.split("'")[1].rsplit(":", 1)[-1] for line in log.splitlines() if line.startswith("Running stage"))


TINY_TRAIN = dict(steps=2, batch_size=2, checkpoint_every=2, log_every=1, val_every=2, val_batches=1, workers=0,
                  warmup_steps=1)


def shrink(path: Path, models: list[str], datasets: dict) -> None:
    raw = yaml.safe_load(path.read_text())
    raw["storage"].update(shard_scenes=4, workers=1)
    for name, options in datasets.items():
        raw["datasets"][name]["image"]["size"] = 32
        raw["datasets"][name]["options"] = options
    for name in models:
        raw["models"][name].pop("train", None)
    raw["models"]["slot_attention"] = {"preset": "benchmark", "hidden": 8, "slot_dim": 8, "mlp_hidden": 16, "num_slots": 4}
    raw["models"]["spair"] = {"preset": "cpu"}
    raw["train"].update(TINY_TRAIN)
    raw["evaluate"].update(batch_size=2, pictures=1)
    if "table" in raw:
        raw["table"]["models"] = models
        raw["seeds"] = [0]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.slow
def test_the_suite_runs_end_to_end_on_tiny_original_files(tmp_path):
    from .data.sources.fixtures_deepmind import random_scene, write_py
    from .test_dvc_pipeline import TRACER
    from objdisc.data.sources.multi_object import CLEVR

    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.startswith(("tests/", "benchmarks/")) or name.endswith("/dvc.yaml") and name.startswith("pipelines/"):
            continue
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)
    models = ["slot_attention", "spair"]  # a slot model and a glimpse model (object-only masks)
    shrink(repo / "pipelines/clevrtex-benchmark/params.yaml", models, {
        "clevrtex": {"variant": "full"}, "clevrtex-outd": {"variant": "outd"}, "clevrtex-camo": {"variant": "camo"}})
    shrink(repo / "pipelines/clevr-benchmark/params.yaml", models, {
        "clevr-with-masks": {"split_convention": "clevrtex", "splits": {"test": [0, 2], "val": [2, 3], "train": [3, 8]}}})
    rng = np.random.default_rng(0)
    raw = repo / "data/raw"
    grounds = {"full": "FullGround", "outd": "OutdGround", "camo": "CamoGround"}
    counts = {"full": 10, "outd": 3, "camo": 10}  # test splits: 1 (full), 3 (outd, whole), 1 (camo)
    for variant, folder in (("full", "clevrtex"), ("outd", "clevrtex-outd"), ("camo", "clevrtex-camo")):
        for i in range(counts[variant]):
            write_structured_scene(raw / folder, variant, i, rng, ground=grounds[variant])
    (raw / "clevr-with-masks").mkdir(parents=True)
    write_py(raw / "clevr-with-masks" / CLEVR.file, CLEVR, [random_scene(CLEVR, rng, num_objects=3) for _ in range(8)])

    sh("git", "init", "-q", cwd=repo)
    sh(sys.executable, "pipelines/make.py", "clevrtex-benchmark", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "init", cwd=repo)
    tracer = tmp_path / "tracer"
    tracer.mkdir()
    (tracer / "sitecustomize.py").write_text(TRACER)
    trace = tracer / "trace.jsonl"
    log = sh("dvc", "repro", "pipelines/clevrtex-benchmark/dvc.yaml", cwd=repo,
             env_extra={"PYTHONPATH": str(tracer), "OBJDISC_TRACE": str(trace)}).stdout
    expected = {f"{step}-{d}" for step in ("convert", "index") for d in ("clevr-with-masks", "clevrtex", "clevrtex-outd", "clevrtex-camo")}
    expected |= {f"train-{t}@{m}-0" for t in ("clevr-with-masks", "clevrtex") for m in models}
    expected |= {f"evaluate-clevr-with-masks@{m}-0-clevr-with-masks" for m in models}
    expected |= {f"evaluate-clevrtex@{m}-0-{d}" for m in models for d in ("clevrtex", "clevrtex-outd", "clevrtex-camo")}
    assert set(ran(log)) == expected | {"aggregate"}

    # The table: two rows, four column groups of three metrics, one seed.
    out = repo / "data/clevrtex-benchmark"
    table = read_csv(out / "table/table.csv")
    assert [r["model"] for r in table] == models and all(r["seeds"] == "1" for r in table)
    md = (out / "table/table.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert header.count("|") == 1 + 1 + 4 * 3 + 1  # | model | 12 metrics | seeds |
    assert "| OOD | clevrtex | clevrtex-outd | test | 3 |" in md and "| CAMO | clevrtex | clevrtex-camo | test | 1 |" in md
    # OOD and CAMO come from their own data: the evaluation's scenes and ground materials, and the
    # table's cell is that evaluation's number.
    for model in models:
        run = out / f"runs/clevrtex/{model}/seed0"
        for dataset, ground, scenes in (("clevrtex", "FullGround", 1), ("clevrtex-outd", "OutdGround", 3), ("clevrtex-camo", "CamoGround", 1)):
            metrics = json.loads((run / f"eval-{dataset}/metrics.json").read_text())
            assert metrics["scenes"] == scenes
            grounds_seen = {r["value"] for r in read_csv(run / f"eval-{dataset}/tags.csv") if r["tag"] == "ground_material"}
            assert grounds_seen == {ground}
            column = {"clevrtex": "ClevrTex", "clevrtex-outd": "OOD", "clevrtex-camo": "CAMO"}[dataset]
            row = next(r for r in table if r["model"] == model)
            assert float(row[f"{column} mIoU (%)"]) == pytest.approx(100 * metrics["miou"], abs=1e-3)
            assert float(row[f"{column} MSE"]) == pytest.approx(metrics["mse_sum"], abs=1e-3)
        clevr = json.loads((out / f"runs/clevr-with-masks/{model}/seed0/eval-clevr-with-masks/metrics.json").read_text())
        assert clevr["scenes"] == 2
        assert float(next(r for r in table if r["model"] == model)["CLEVR ARI-FG (%)"]) == pytest.approx(100 * clevr["fg_ari"], abs=1e-3)
    # SPAIR's object-only masks get the background channel, and its presence count.
    assert "count_presence" in read_csv(out / "runs/clevrtex/spair/seed0/eval-clevrtex/scenes.csv")[0]

    # Each stage declares the code it runs (the matrix stages reuse the root stages' lists).
    stages = yaml.safe_load((repo / "pipelines/clevrtex-benchmark/dvc.yaml").read_text())["stages"]
    by_script: dict[str, set[str]] = {}
    for line in trace.read_text().splitlines():
        record = json.loads(line)
        if record["argv"] and record["argv"][0].startswith("stages/"):
            by_script.setdefault(record["argv"][0], set()).update(record["modules"])
    assert "stages/aggregate.py" in by_script
    for name, stage in stages.items():
        deps = [d for d in stage["deps"] if not d.startswith("data/")]
        modules = by_script.get(stage["cmd"].split()[1], set())
        missing = sorted(m[m.index("/objdisc/") + 1:] for m in modules
                         if not any(m[m.index("/objdisc/") + 1:] == d or m[m.index("/objdisc/") + 1:].startswith(d.rstrip("/") + "/") for d in deps))
        assert not missing, f"stage {name} runs {missing} but does not declare it"

    # Cached: nothing to do. One model's block changed: only its rows, and the table.
    assert ran(sh("dvc", "repro", "pipelines/clevrtex-benchmark/dvc.yaml", cwd=repo).stdout) == []
    path = repo / "pipelines/clevrtex-benchmark/params.yaml"
    raw_params = yaml.safe_load(path.read_text())
    raw_params["models"]["spair"]["train"] = {"lr": 0.0003}
    path.write_text(yaml.safe_dump(raw_params, sort_keys=False))
    # A changed setting never silently replaces a run: the restart is asked for (the old run is moved aside).
    rerun = ran(sh("dvc", "repro", "pipelines/clevrtex-benchmark/dvc.yaml", cwd=repo, env_extra={"OBJDISC_RESTART": "1"}).stdout)
    assert rerun == sorted(["train-clevrtex@spair-0", "evaluate-clevrtex@spair-0-clevrtex", "evaluate-clevrtex@spair-0-clevrtex-outd",
                            "evaluate-clevrtex@spair-0-clevrtex-camo", "aggregate"])

    # The converted shards travel through a remote once, with the runs and the table.
    remote = tmp_path / "remote"
    sh("dvc", "remote", "add", "-f", "-d", "local", str(remote), cwd=repo)
    sh("dvc", "push", "pipelines/clevrtex-benchmark/dvc.yaml", cwd=repo)
    status = sh("dvc", "status", "-c", "pipelines/clevrtex-benchmark/dvc.yaml", cwd=repo).stdout
    assert "new:" not in status and "missing:" not in status, status
