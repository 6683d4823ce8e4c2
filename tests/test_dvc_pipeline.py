"""End to end: a copy of the repo runs `dvc repro` with tiny params, then behaves as DVC promises:
a second repro does nothing, a render-only change re-runs only `render`, experiments run and show."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, tiny_params

pytestmark = pytest.mark.slow


def sh(*args, cwd, check=True):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode:
        raise AssertionError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh git + DVC copy of the repo (tracked and new files), with tiny params, reproduced once."""
    repo = tmp_path_factory.mktemp("project")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if name.startswith(("tests/", "benchmarks/")) or not (ROOT / name).is_file():
            continue
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)
    tiny_params(repo)
    sh("git", "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "init", cwd=repo)
    result = sh("dvc", "repro", cwd=repo)
    return repo, result.stdout


def test_repro_makes_every_artifact(project):
    repo, log = project
    for stage in ("synth", "convert", "index", "train", "evaluate", "render"):
        assert f"Running stage '{stage}'" in log
    run = repo / "data/runs/synth/slot_attention"
    for path in ("model.pt", "eval/metrics.json", "eval/scenes.csv", "eval/slots.png", "renders/scene_0.mp4",
                 "live/metrics.json", "live/plots/metrics/train/loss.tsv", "checkpoints/last.pt"):
        assert (run / path).exists(), path
    metrics = json.loads((run / "eval/metrics.json").read_text())
    assert {"ari", "fg_ari", "miou", "mbo", "mse", "psnr"} <= metrics.keys()
    assert (repo / "dvc.lock").exists()


def test_second_repro_does_nothing(project):
    repo, _ = project
    log = sh("dvc", "repro", cwd=repo).stdout
    assert "Running stage" not in log


def test_render_param_reruns_only_render(project):
    repo, _ = project
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["render"]["fps"] = 12
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = sh("dvc", "repro", cwd=repo).stdout
    assert "Running stage 'render'" in log
    assert [line for line in log.splitlines() if line.startswith("Running stage")] == ["Running stage 'render':"]


def test_experiments_run_show_and_plot(project):
    repo, _ = project
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "reproduced", cwd=repo)
    sh("dvc", "exp", "run", "-S", "model=osrt", "-S", "train.steps=4", cwd=repo)
    assert (repo / "data/runs/synth/osrt/renders/scene_0.mp4").exists()
    assert (repo / "data/runs/synth/osrt/eval/metrics.json").exists()
    shown = json.dumps(json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout))
    assert "psnr" in shown and "fg_ari" in shown and '"model": "osrt"' in shown
    sh("dvc", "plots", "show", "-o", str(repo / "plots_out"), cwd=repo)
    assert (repo / "plots_out" / "index.html").exists()


def test_experiment_on_an_original_dataset(project):
    """`dvc exp run -S dataset=<name>` works once the original files are in data/raw/<name>: the
    datasets block converts them, Slot Attention takes the dataset's image size, and every stage
    after it runs on the new data."""
    import numpy as np

    from tests.data.sources.test_clevrtex import write_scene

    repo, _ = project
    rng = np.random.default_rng(0)
    for index in range(10):  # ClevrTex's own layout: clevrtex_full/0/CLEVRTEX_full_00000N{.png,_flat.png,.json}
        write_scene(repo / "data/raw/clevrtex", "full", index, rng)
    sh("dvc", "exp", "run", "-S", "dataset=clevrtex", "-S", "model=slot_attention",  # the last test left osrt
       "-S", "datasets.clevrtex.image.size=16", "-S", "train.steps=2", cwd=repo)
    index = json.loads((repo / "data/index/clevrtex.json").read_text())
    assert {split: len(keys) for split, keys in index["keys"].items()} == {"train": 8, "val": 1, "test": 1}
    run = repo / "data/runs/clevrtex/slot_attention"
    metrics = json.loads((run / "eval/metrics.json").read_text())
    assert {"ari", "fg_ari", "miou", "mse"} <= metrics.keys()
    assert (run / "renders/scene_0.mp4").exists()
