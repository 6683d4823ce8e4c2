"""The benchmark scripts run end to end at ``--tiny`` size and write complete, error-free JSON.

They are not timed here (speed goals live in the benchmarks' own JSON); this only guards against
a script that no longer runs after a library change.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.conftest import ROOT

from objdisc.models import MODELS


def run_script(name: str, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--tiny", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_conversion_tiny_writes_json(tmp_path):
    out = tmp_path / "conversion.json"
    run_script("conversion.py", "--work", str(tmp_path / "work"), "--out", str(out))
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_count"] >= 1 and len(report["machine"]["load_average_start"]) == 3
    assert report["libraries"]["torch_threads"] >= 1
    assert set(report["datasets"]) == {"clevr-with-masks", "clevrtex"}
    for name, entry in report["datasets"].items():
        assert "error" not in entry["fixture"], entry["fixture"]
        assert entry["fixture"]["scenes"] == 16
        converts = entry["convert"]
        assert [(c["format"], c["workers"]) for c in converts] == [("webdataset", 1), ("hdf5", 1), ("zarr", 1)]
        for record in converts + entry["loader"] + entry["direct"]:
            assert "error" not in record, record
            assert record["scenes_per_s"] > 0 and record["peak_rss_mib"] > 0
        assert all(c["scenes"] == 16 for c in converts)  # every fixture scene reached the shards
        assert {(r["format"], r["workers"]) for r in entry["loader"]} == {
            (f, w) for f in ("webdataset", "hdf5", "zarr") for w in (0, 1)
        }
        # In-process reading is measured at torch's default thread count and at one thread.
        assert {r["torch_threads"] for r in entry["direct"]} >= {1}
        assert sum(r["workers"] == 0 for r in entry["loader"]) == 6
        # The training crop of params.yaml: 128×128 from both datasets, through both routes.
        assert all(r["image"] == [3, 128, 128] for r in entry["loader"] + entry["direct"])
    readers = [r["reader"] for r in report["datasets"]["clevr-with-masks"]["direct"]]
    assert readers[0] == "objdisc-tfrecord"

    # A second run finds the cached fixtures instead of writing them again.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from fixtures import ensure_fixture
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    for name in report["datasets"]:
        folder, info = ensure_fixture(name, tmp_path / "work", 16)
        assert info["cached"] is True and str(folder) == report["datasets"][name]["fixture"]["path"]


def test_models_tiny_writes_json(tmp_path):
    out = tmp_path / "models.json"
    run_script("models.py", "--out", str(out))
    report = json.loads(out.read_text())
    assert report["settings"]["device"] == "cpu"
    assert [r["model"] for r in report["models"]] == list(MODELS)
    for record in report["models"]:
        assert "error" not in record, record
        assert record["batch"] == 2 and record["parameters"] > 0 and record["step_s"] > 0
        assert math.isfinite(record["loss_first"]) and math.isfinite(record["loss_last"])
        assert record["peak_rss_mib"] > 0
    shapes = {r["model"]: r["shapes"] for r in report["models"]}
    assert shapes["slot_attention"]["image"] == [2, 3, 32, 32]  # params.yaml: synth image size 32
    assert shapes["srt"]["target_rays"] == [2, 256, 3]  # params.yaml datasets.synth.views


def test_streaming_tiny_writes_json(tmp_path):
    out = tmp_path / "streaming.json"
    run_script("streaming.py", "--work", str(tmp_path / "work"), "--out", str(out))
    report = json.loads(out.read_text())
    assert [run["scenes"] for run in report["runs"]] == [16, 48]
    for run in report["runs"]:
        assert "error" not in run["fixture"] and "error" not in run["convert"], run
        assert run["convert"]["scenes"] == run["scenes"] and run["convert"]["workers"] == 2
        assert run["convert"]["shards"] == run["scenes"] // 4
        assert run["convert"]["peak_tree_rss_mib"] > 0 and run["convert"]["count_s"] >= 0


def test_gpu_check_runs_on_cpu_at_tiny_size(tmp_path):
    """The GPU check script (run for real on a CUDA machine) works end to end: every model, its
    counted FLOPs, the attention kernels it launched, and a one-process DDP step (gloo here)."""
    out = tmp_path / "gpu.json"
    run_script("gpu.py", "--device", "cpu", "--out", str(out))
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["models"]] == list(MODELS)
    for record in report["models"]:
        assert "error" not in record, record
        assert record["step_s"] > 0 and record["images_per_s"] > 0
        # FLOPs are counted for every model but SLATE, whose implicit Slot Attention iterations run
        # under no_grad on inputs that require grad, which FlopCounterMode's module tracker refuses.
        if record["model"] == "slate":
            assert record["flops_per_step"] is None and record["flops_error"].startswith("AssertionError")
        else:
            assert record["flops_per_step"] > 0 and record["flops_error"] is None
        assert set(record["attention"]) >= {"sdpa_called", "fast_kernel"}
    by_model = {r["model"]: r for r in report["models"]}
    assert by_model["srt"]["attention"]["sdpa_called"] and by_model["srt"]["attention"]["fast_kernel"]
    assert report["ddp"]["ok"] and report["ddp"]["world_size"] == 1


def exported_tensors(path, size: int):
    """A file as ``zoo_curves.py export`` writes it: uint8 images and masks of three splits."""
    import torch

    g = torch.Generator().manual_seed(0)
    split = lambda n: {"image": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),  # noqa: E731
                       "mask": torch.randint(0, 3, (n, size, size), generator=g, dtype=torch.uint8)}
    torch.save({"train": split(8), "val": split(4), "test": split(4)}, path)
    return path


def test_zoo_curves_runs_models_in_parallel_and_merges(tmp_path):
    """zoo_curves.py trains each model in its own process from one tensor file and gathers every
    curve into one JSON; merge finds the step where FG-ARI crossed 0.5."""
    data = exported_tensors(tmp_path / "sprites.pt", 64)
    out = tmp_path / "curves.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "zoo_curves.py"), "run", "--models", "slot_attention,monet",
         "--data", str(data), "--seconds", "0.5", "--eval-seconds", "0.2", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(out.read_text())["models"]
    assert set(records) == {"slot_attention", "monet"}
    for record in records.values():
        assert "error" not in record, record["error"]
        assert record["curve"][0]["step"] == 0 and record["curve"][-1]["step"] >= 1
        assert 0.0 <= record["test"]["mse"] and -1.0 <= record["test"]["fg_ari"] <= 1.0

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from zoo_curves import crossing, merge

    assert crossing([{"step": 0, "fg_ari": 0.1}, {"step": 300, "fg_ari": 0.52}, {"step": 600, "fg_ari": 0.4}]) == 300
    assert crossing([{"step": 0, "fg_ari": 0.1}]) is None
    merge(out, tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["device"] == "cpu" and set(merged["models"]) == {"slot_attention", "monet"}


def test_zoo_curves_sweep_runs_variants_with_their_own_settings(tmp_path):
    """A sweep runs each variant of one model with its own settings and step cap; the EMA weights
    are what gets evaluated and saved, and `picture` draws them."""
    data = exported_tensors(tmp_path / "synth.pt", 32)
    variants = tmp_path / "variants.yaml"
    variants.write_text("fast: {steps: 3, set: [train.batch_size=4, train.lr=0.002]}\n"
                        "slow: {steps: 2, set: [train.batch_size=2, train.ema_decay=0.0], option: [iters=2]}\n")
    out = tmp_path / "sweep.json"
    script = str(ROOT / "benchmarks" / "zoo_curves.py")
    proc = subprocess.run(
        [sys.executable, script, "sweep", str(variants), "--dataset", "synth", "--data", str(data), "--seconds", "60",
         "--eval-every", "1", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(out.read_text())["models"]
    assert set(records) == {"fast", "slow"}
    assert "error" not in records["fast"] and "error" not in records["slow"], records
    assert [p["step"] for p in records["fast"]["curve"]] == [0, 1, 2, 3]  # the step cap, evaluated every step
    assert [p["step"] for p in records["slow"]["curve"]] == [0, 1, 2]
    assert (records["fast"]["batch_size"], records["fast"]["lr"], records["fast"]["ema_decay"]) == (4, 0.002, 0.99)
    assert (records["slow"]["batch_size"], records["slow"]["ema_decay"]) == (2, 0.0)
    assert records["slow"]["options"] == ["iters=2"] and 0 < records["fast"]["test"]["psnr"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("x: {steps: 1, sett: []}\n")
    proc = subprocess.run([sys.executable, script, "sweep", str(bad), "--data", str(data), "--out", str(tmp_path / "b.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode != 0 and "unknown keys" in proc.stderr

    weights, picture = tmp_path / "w.pt", tmp_path / "p.png"
    proc = subprocess.run(
        [sys.executable, script, "one", "slot_attention", "--dataset", "synth", "--data", str(data), "--steps", "2",
         "--set", "train.batch_size=2", "--save", str(weights), "--out", str(tmp_path / "one.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0 and "error" not in json.loads((tmp_path / "one.json").read_text()), proc.stderr[-3000:]
    import torch

    assert torch.load(weights, weights_only=True)["step"] == 2  # `picture` draws at the trained step
    proc = subprocess.run([sys.executable, script, "picture", str(weights), "--data", str(data), "--out", str(picture)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from PIL import Image

    assert Image.open(picture).size[0] > 32 * 4  # input, reconstruction, two segmentations and the slots


def test_bench_params_options_reach_the_model_config():
    """--option sets a config field params.yaml does not list (here an annealing schedule), and a
    misspelt field or a malformed option is an error naming it, not a silently ignored setting."""
    import pytest

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import bench_params

    from objdisc.config import ConfigError
    from objdisc.models import model_config
    from objdisc.train.schedule import Anneal

    schedule = "presence_prior={kind: linear, start: 0.1, end: 0.01, begin: 0, until: 400}"
    params = bench_params("gnm", ["models.gnm.train.steps=7"], [schedule, "sigma=0.3"])
    cfg = model_config(params.model, params.model_options, params.data_inputs)
    assert cfg.presence_prior == Anneal.linear(0.1, 0.01, 0, 400) and cfg.sigma == 0.3
    assert params.training.steps == 7 and params.dataset == "sprites"
    assert bench_params("gnm").models["gnm"].get("sigma") is None  # params.yaml itself untouched

    bad = bench_params("gnm", options=["sigmaa=0.3"])
    with pytest.raises(ConfigError, match="sigmaa"):
        model_config(bad.model, bad.model_options, bad.data_inputs)
    with pytest.raises(ConfigError, match="field=value"):
        bench_params("gnm", options=["sigma 0.3"])


def test_zoo_deletes_only_run_folders_it_made(tmp_path):
    """benchmarks/zoo.py starts each measurement afresh; with --work pointing at a pipeline's
    outputs it must refuse to delete a user's run instead of deleting it."""
    import pytest

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from zoo import MARKER, fresh_run_dir

    users_run = tmp_path / "runs" / "sprites" / "monet"
    users_run.mkdir(parents=True)
    (users_run / "model.pt").write_bytes(b"hours of training")
    with pytest.raises(SystemExit, match="not made by benchmarks/zoo.py"):
        fresh_run_dir(users_run)
    assert (users_run / "model.pt").read_bytes() == b"hours of training"

    ours = tmp_path / "work" / "runs" / "sprites" / "monet"
    fresh_run_dir(ours)  # a new folder, marked
    assert (ours / MARKER).exists()
    (ours / "model.pt").write_bytes(b"last measurement")
    fresh_run_dir(ours)  # the previous measurement goes, the mark stays
    assert (ours / MARKER).exists() and not (ours / "model.pt").exists()
