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


# Loaded by every Python process of the pipeline (PYTHONPATH): at exit it records which objdisc
# modules the process imported, so the test can check each stage declares the code it runs.
TRACER = """
import atexit, json, os, sys

def _record():
    files = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())})
    mine = [f for f in files if "/objdisc/" in f]
    with open(os.environ["OBJDISC_TRACE"], "a") as out:
        out.write(json.dumps({"argv": sys.argv, "modules": mine}) + "\\n")

atexit.register(_record)
"""


def sh(*args, cwd, check=True, env_extra=None):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        **(env_extra or {}),
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
    tracer = tmp_path_factory.mktemp("tracer")
    (tracer / "sitecustomize.py").write_text(TRACER)
    trace = tracer / "trace.jsonl"
    result = sh("dvc", "repro", cwd=repo, env_extra={"PYTHONPATH": str(tracer), "OBJDISC_TRACE": str(trace)})
    return repo, result.stdout, trace


def test_repro_makes_every_artifact(project):
    repo, log, _ = project
    for stage in ("generate@synth", "generate@sprites", "convert", "index", "train", "evaluate", "render"):
        assert f"Running stage '{stage}'" in log
    run = repo / "data/runs/synth/slot_attention"
    for path in ("model.pt", "eval/metrics.json", "eval/scenes.csv", "eval/slots.png", "renders/scenes.mp4",
                 "live/metrics.json", "live/plots/metrics/train/loss.tsv", "checkpoints/last.pt"):
        assert (run / path).exists(), path
    metrics = json.loads((run / "eval/metrics.json").read_text())
    assert {"ari", "fg_ari", "miou", "mbo", "mse", "psnr"} <= metrics.keys()
    assert (repo / "dvc.lock").exists()


def test_second_repro_does_nothing(project):
    repo, _, _ = project
    log = sh("dvc", "repro", cwd=repo).stdout
    assert "Running stage" not in log


def test_render_param_reruns_only_render(project):
    repo, _, _ = project
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["render"]["fps"] = 12
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = sh("dvc", "repro", cwd=repo).stdout
    assert "Running stage 'render'" in log
    assert [line for line in log.splitlines() if line.startswith("Running stage")] == ["Running stage 'render':"]


def test_experiments_run_show_and_plot(project):
    repo, _, _ = project
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

    repo, _, _ = project
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
    assert (run / "renders/scenes.mp4").exists()


def test_every_stage_declares_the_code_it_runs(project):
    """Each stage's deps cover every objdisc module its process (and its workers) imported while
    `dvc repro` ran it: change any of that code and DVC re-runs the stage."""
    repo, _, trace = project
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    by_script: dict[str, set[str]] = {}
    for line in trace.read_text().splitlines():
        record = json.loads(line)
        script = record["argv"][0] if record["argv"] else ""
        if script.startswith("stages/"):
            by_script.setdefault(script, set()).update(record["modules"])
    assert {"stages/synth.py", "stages/convert.py", "stages/train.py", "stages/evaluate.py", "stages/render.py"} <= set(by_script)
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # foreach stages
        script = stage["cmd"].split()[1]
        deps = [d for d in stage["deps"] if not d.startswith(("data/", "${"))]
        missing = []
        for module in sorted(by_script.get(script, ())):
            relative = module[module.index("/objdisc/") + 1 :]
            if not any(relative == d or relative.startswith(d.rstrip("/") + "/") for d in deps):
                missing.append(relative)
        assert not missing, f"stage {name} runs {missing} but does not declare it in dvc.yaml"


def test_runs_travel_through_a_remote(project, tmp_path):
    """Fault campaign item 3: after `dvc push`, a fresh clone that pulls a finished run has nothing
    to reproduce and has its metrics; an unfinished run, committed and pulled, resumes."""
    repo, _, _ = project
    sh("git", "checkout", "--", "params.yaml", "dvc.lock", cwd=repo)  # the experiments above changed them
    sh("dvc", "repro", cwd=repo)
    remote = tmp_path / "remote"
    sh("dvc", "remote", "add", "-f", "-d", "local", str(remote), cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "reproduced", "--allow-empty", cwd=repo)
    sh("dvc", "push", cwd=repo)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    sh("dvc", "pull", cwd=clone)
    run = clone / "data/runs/synth/slot_attention"
    assert (run / "live/metrics.json").exists() and (run / "checkpoints/last.pt").exists()
    status = sh("dvc", "status", cwd=clone).stdout
    assert "up to date" in status.lower(), status
    assert "Running stage" not in sh("dvc", "repro", cwd=clone).stdout

    # An unfinished run: train.steps grows, the run stops half-way, is committed and pushed; the
    # collaborator pulls it and its forced train stage continues from the checkpoint.
    steps = yaml.safe_load((clone / "params.yaml").read_text())["train"]["steps"]
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["train"]["steps"] = steps + 4
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    script = "from objdisc import pipeline; from objdisc.config import load_params; " \
             f"pipeline.train(load_params('params.yaml'), progress=False, stop_after={steps + 2})"
    sh(sys.executable, "-c", script, cwd=clone)
    sh("dvc", "commit", "-f", "train", cwd=clone)
    sh("git", "add", "-A", cwd=clone)
    sh("git", "commit", "-qm", "half-way", cwd=clone)
    sh("dvc", "push", cwd=clone)
    other = tmp_path / "other"
    sh("git", "clone", "-q", str(clone), str(other), cwd=tmp_path)
    sh("dvc", "remote", "add", "-f", "-d", "local", str(remote), cwd=other)
    sh("dvc", "pull", cwd=other)
    from objdisc.train import checkpoint

    assert checkpoint.load(other / "data/runs/synth/slot_attention/checkpoints/last.pt")["step"] == steps + 2
    sh("dvc", "repro", "-f", "-s", "train", cwd=other)
    done = checkpoint.load(other / "data/runs/synth/slot_attention/checkpoints/last.pt")
    assert done["step"] == steps + 4
    rows = (other / "data/runs/synth/slot_attention/live/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert [int(r.split("\t")[0]) for r in rows[1:]][-1] == steps + 4
