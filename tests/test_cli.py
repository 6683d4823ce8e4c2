"""The command line: every command has help; bad input gives one `error:` line and exit 1;
the pipeline commands run end to end on tiny data."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from objdisc.cli import app
from objdisc.config import load_params
from objdisc.data.sources import SOURCES

from .conftest import ROOT, tiny_params

runner = CliRunner()
COMMANDS = ["synth", "convert", "index", "train", "evaluate", "render", "bench", "info", "models"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert len(result.output.strip().splitlines()) > 3


def test_convert_list_shows_every_source_with_its_layout():
    result = runner.invoke(app, ["convert", "--list"])
    assert result.exit_code == 0
    for name, cls in SOURCES.items():
        assert f"{name}\n" in result.output
        assert cls.info.layout in result.output


def test_every_params_dataset_names_a_known_source():
    params = load_params(ROOT / "params.yaml")
    for name, data in params.datasets.items():
        assert data.source in SOURCES, name


def test_bad_input_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_params(tmp_path)
    cases = [
        (["train", "--set", "model=nope"], "unknown model 'nope'"),
        (["train", "--set", "dataset=nope"], "unknown dataset 'nope'"),
        (["train", "--set", "train.stepz=1"], "train.stepz"),
        (["convert"], "data/raw/synth does not exist"),
        (["convert", "clevr3d", "--input", "nowhere", "--output", "out"], "nowhere does not exist"),
        (["convert", "clevr9", "--input", ".", "--output", "out"], "unknown source 'clevr9'"),
        (["index"], "run convert first"),
        (["evaluate"], "no trained model"),
        (["train"], "no dataset index"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "error: " in result.output and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_undecodable_shard_is_reported(tmp_path, synth_shards, monkeypatch):
    shards, _ = synth_shards
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    (copy / "train-000001.tar").write_bytes(b"garbage" * 100)
    result = runner.invoke(app, ["index", str(copy)])
    assert result.exit_code == 1 and "train-000001.tar" in result.output


@pytest.mark.filterwarnings("ignore:FG-ARI .* is below")  # a few steps of training: below the image-blind floor, as expected
def test_pipeline_commands_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_params(tmp_path)
    for args in (["synth"], ["convert"], ["index"], ["train"], ["evaluate"], ["render"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    run = tmp_path / "data/runs/synth/slot_attention"
    metrics = json.loads((run / "eval/metrics.json").read_text())
    assert metrics["scenes"] == 4 and -1 <= metrics["fg_ari"] <= 1 and metrics["mse"] > 0
    assert (run / "eval/slots.png").stat().st_size > 0
    assert (run / "renders/scenes.mp4").stat().st_size > 0  # 2D: one video, scene after scene
    assert len(list((run / "renders/scenes").glob("*.png"))) == 3  # one frame per view of scene 0
    result = runner.invoke(app, ["bench", "--out", "bench.json", "--steps", "2", "--batches", "2"])
    assert result.exit_code == 0, result.output
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["train_images_per_s"] > 0 and bench["loader_scenes_per_s"] > 0
    result = runner.invoke(app, ["info", "data/index/synth.json"])
    assert result.exit_code == 0 and "train: 16 scenes" in result.output


@pytest.mark.parametrize("model", ["srt", "osrt", "obsurf"])
def test_3d_models_train_evaluate_and_render(tmp_path, monkeypatch, synth_shards, model):
    shards, index_path = synth_shards
    monkeypatch.chdir(tmp_path)
    tiny_params(tmp_path, model=model, train__steps=3, train__val_every=3, render__num_frames=3)
    (tmp_path / "data/shards").mkdir(parents=True)
    (tmp_path / "data/index").mkdir(parents=True)
    shutil.copytree(shards, tmp_path / "data/shards/synth")
    shutil.copy(index_path, tmp_path / "data/index/synth.json")
    for args in (["train"], ["evaluate"], ["render", "--motion", "rotate_and_closeup", "--fade"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    run = tmp_path / "data/runs/synth" / model
    metrics = json.loads((run / "eval/metrics.json").read_text())
    assert metrics["scenes"] == 4 and metrics["psnr"] > 0
    assert ("fg_ari" in metrics) == (model != "srt")
    assert (run / "renders/scene_0.mp4").stat().st_size > 0
    assert len(list((run / "renders/scene_0/frames").glob("*.png"))) == 3
    assert (run / "live/plots/metrics/val/psnr.tsv").exists()


def test_convert_a_cut_download(tmp_path):
    """A truncated TFRecord: the strict conversion fails naming file and record; with --skip-bad
    it keeps the whole records, prints one warning line and lists the cut record."""
    import subprocess
    import sys

    import numpy as np

    from objdisc.data.sources.multi_object import TETROMINOES
    from tests.data.sources.fixtures_deepmind import random_scene, write_py

    rng = np.random.default_rng(0)
    path = tmp_path / "raw" / TETROMINOES.file
    path.parent.mkdir()
    write_py(path, TETROMINOES, [random_scene(TETROMINOES, rng) for _ in range(8)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 5 // 8])
    command = [sys.executable, "-m", "objdisc", "convert", "tetrominoes", "--input", str(path.parent),
               "--shard-scenes", "2", "--option", "splits={train: [0, 8]}"]
    strict = subprocess.run([*command, "--output", str(tmp_path / "a")], capture_output=True, text=True)
    assert strict.returncode == 1
    assert "tetrominoes_train.tfrecords: record" in strict.stderr and "truncated compressed stream" in strict.stderr
    assert "Traceback" not in strict.stderr
    lenient = subprocess.run([*command, "--output", str(tmp_path / "b"), "--skip-bad"], capture_output=True, text=True)
    assert lenient.returncode == 0, lenient.stderr
    warning = [line for line in lenient.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "cannot be read" in warning[0]
    assert "skipped 1" in lenient.stdout
    index = runner.invoke(app, ["index", str(tmp_path / "b")])
    assert index.exit_code == 0, index.output
    skipped = json.loads((tmp_path / "b" / "index.json").read_text())["skipped"]
    assert len(skipped) == 1 and "truncated compressed stream" in skipped[0]["error"]


def test_3d_model_on_a_2d_dataset_is_one_clear_line(tmp_path, monkeypatch):
    import numpy as np

    from tests.data.sources.test_clevrtex import write_scene

    monkeypatch.chdir(tmp_path)
    tiny_params(tmp_path)
    rng = np.random.default_rng(0)
    for index in range(10):
        write_scene(tmp_path / "data/raw/clevrtex", "full", index, rng)
    for command in (["convert"], ["index"]):
        result = runner.invoke(app, [*command, "--set", "dataset=clevrtex"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--set", "dataset=clevrtex", "--set", "model=osrt"])
    assert result.exit_code == 1
    assert "error: model 'osrt' renders novel views and needs cameras, but dataset 'clevrtex' has none" in result.output


def test_train_on_a_shard_changed_after_indexing_is_one_line(tmp_path, synth_shards, monkeypatch):
    """Fault-injection items 5/6: a byte flipped inside a member of an indexed shard (same size)
    was trained on, or failed in a DataLoader worker with a 22-line traceback; now `train` stops
    with one `error:` line naming the shard."""
    import tarfile

    shards, index_path = synth_shards
    monkeypatch.chdir(tmp_path)
    tiny_params(tmp_path, train__workers=1)
    shutil.copytree(shards, tmp_path / "data/shards/synth")
    (tmp_path / "data/index").mkdir(parents=True)
    shutil.copy(index_path, tmp_path / "data/index/synth.json")
    shard = tmp_path / "data/shards/synth/train-000001.tar"
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".png"))
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "train-000001.tar" in lines[0], result.output
    assert "Traceback" not in result.output and "objdisc index" in lines[0]


def test_convert_refuses_an_unrelated_output_folder(tmp_path, synth_raw):
    """Fault-injection item 1 through the CLI: one error line, the folder untouched."""
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    result = runner.invoke(app, ["convert", "clevr3d", "--input", str(synth_raw), "--output", str(other)])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "photos" in result.output
    assert len(result.output.strip().splitlines()) == 1 and (other / "cat.jpg").read_bytes() == b"meow"
    result = runner.invoke(app, ["convert", "clevr3d", "--input", str(synth_raw), "--output", str(synth_raw)])
    assert result.exit_code == 1 and "is the input" in result.output and (synth_raw / "metadata.npz").is_file()


def _project_with_shards(tmp_path, synth_shards, **overrides):
    shards, index_path = synth_shards
    tiny_params(tmp_path, **overrides)
    shutil.copytree(shards, tmp_path / "data/shards/synth")
    (tmp_path / "data/index").mkdir(parents=True)
    shutil.copy(index_path, tmp_path / "data/index/synth.json")


@pytest.mark.parametrize("override,key", [
    ("train.steps=0", "steps"),                     # item 9: exited 0 with an untrained model.pt
    ("train.steps=-3", "steps"),
    ("train.batch_size=512", "batch_size 512 is larger than the 16 training scenes"),  # item 9
    ("train.batch_size=-4", "batch_size"),          # item 12: torch's message without the key
    ("train.batch_size=0", "batch_size"),
    ("train.lr=-1", "lr"),
    ("train.workers=-1", "workers"),
    ("train.checkpoint_every=0", "checkpoint_every"),  # item 13: ZeroDivisionError
    ("train.log_every=0", "log_every"),
    ("train.device=cuda", "train.device is 'cuda' but this machine has no CUDA device"),  # item 14
    ("datasets.synth.views.num_input_views=3", "needs 4 views per scene, but the scenes of 'synth' have 3"),  # item 15
])
def test_bad_training_settings_stop_before_training_with_the_key(tmp_path, synth_shards, monkeypatch, override, key):
    """Fault campaign items 9 and 12-15: each bad setting is one `error:` line naming the key, before
    any training step (no model.pt is written)."""
    import torch

    if override == "train.device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    _project_with_shards(tmp_path, synth_shards)
    args = ["train", "--set", override]
    if override.startswith("datasets.synth.views"):
        args += ["--set", "model=osrt", "--set", "datasets.synth.views.targets=others"]
    result = runner.invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert key in lines[0], lines[0]
    assert not list(tmp_path.glob("data/runs/*/*/model.pt"))


def test_obsurf_takes_one_input_view_and_says_so(tmp_path, synth_shards, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _project_with_shards(tmp_path, synth_shards)
    result = runner.invoke(app, ["train", "--set", "model=obsurf", "--set", "datasets.synth.views.num_input_views=2"])
    assert result.exit_code == 1 and "num_input_views is 2, but model 'obsurf' encodes at most 1" in result.output


def test_obsurf_refuses_the_canonical_frame_before_training(tmp_path, synth_shards, monkeypatch):
    """ObSuRF's ground plane is z = 0 of the world: a dataset block asking for the canonical frame is
    one error line at the dataset check, not a failure inside the first training step."""
    monkeypatch.chdir(tmp_path)
    _project_with_shards(tmp_path, synth_shards, datasets__synth__views__canonical=True)  # as a user edits params.yaml
    result = runner.invoke(app, ["train", "--set", "model=obsurf"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "datasets.synth.views.canonical is true, but model 'obsurf' works in world coordinates" in lines[0]
    assert not list(tmp_path.glob("data/runs/*/*/model.pt"))


def test_written_files_follow_the_umask(tmp_path, monkeypatch):
    """Fault campaign item 16: pictures, videos, checkpoints and JSON came out 0600."""
    import numpy as np

    from objdisc import io
    from objdisc.render.video import write_mp4
    from objdisc.train.checkpoint import save_atomic
    from objdisc.viz import save_png

    expected = 0o666 & ~io.UMASK
    frame = np.zeros((8, 8, 3), np.uint8)
    paths = [save_png(tmp_path / "a.png", frame), write_mp4(tmp_path / "a.mp4", [frame, frame], fps=2),
             io.write_json(tmp_path / "a.json", {"a": 1})]
    save_atomic({"x": 1}, tmp_path / "a.pt")
    paths.append(tmp_path / "a.pt")
    for path in paths:
        assert path.stat().st_mode & 0o777 == expected, (path, oct(path.stat().st_mode))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_synthetic_splits_follow_the_number_of_scenes(tmp_path, monkeypatch):
    """`-S synth.scenes=N` (a smaller dataset, the first thing a user tries) gives train/val/test in
    the proportions of params.yaml: its splits are fractions of the scenes, not absolute ranges."""
    import yaml

    monkeypatch.chdir(tmp_path)
    path = tiny_params(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["datasets"]["synth"]["options"]["splits"] = yaml.safe_load((ROOT / "params.yaml").read_text())["datasets"]["synth"]["options"]["splits"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    for args in (["synth", "--set", "synth.scenes=36"], ["convert"], ["index"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    index = json.loads((tmp_path / "data/index/synth.json").read_text())
    assert {s: len(keys) for s, keys in index["keys"].items()} == {"train": 30, "val": 3, "test": 3}


def _two_dataset_project(tmp_path, synth_shards, **extra):
    """The tiny project with a second dataset block, ``synth-b`` (the same scenes, its own shards
    and index), to evaluate a model on another set than it trained on; ``extra`` top-level keys."""
    import copy

    import yaml

    _project_with_shards(tmp_path, synth_shards)
    path = tmp_path / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["datasets"]["synth-b"] = copy.deepcopy(raw["datasets"]["synth"])
    raw["evaluate"]["dataset"] = None
    raw.update(extra)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copytree(tmp_path / "data/shards/synth", tmp_path / "data/shards/synth-b")
    shutil.copy(tmp_path / "data/index/synth.json", tmp_path / "data/index/synth-b.json")
    return path


@pytest.mark.filterwarnings("ignore:FG-ARI .* is below")  # a few steps of training: below the image-blind floor, as expected
def test_evaluate_on_another_dataset_writes_beside_the_run(tmp_path, synth_shards, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _two_dataset_project(tmp_path, synth_shards)
    assert runner.invoke(app, ["train"]).exit_code == 0
    result = runner.invoke(app, ["evaluate", "--on", "synth-b"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "data/runs/synth/slot_attention"
    other = json.loads((run / "eval-synth-b/metrics.json").read_text())
    for name in ("scenes.csv", "objects.csv", "tags.csv", "tags.png", "slots.png"):
        assert (run / "eval-synth-b" / name).exists(), name
    assert not (run / "eval").exists()
    assert runner.invoke(app, ["evaluate"]).exit_code == 0  # the training set: eval/, the same numbers here
    same = json.loads((run / "eval/metrics.json").read_text())
    assert same == other and {"obj_iou", "ground_iou", "count_true", "count_pred", "acc"} <= same.keys()
    bad = runner.invoke(app, ["evaluate", "--on", "nope"])
    assert bad.exit_code == 1 and "unknown dataset 'nope'" in bad.output
    size = runner.invoke(app, ["evaluate", "--on", "synth-b", "--set", "datasets.synth-b.image.size=8"])
    assert size.exit_code == 1 and "datasets.synth-b.image.size" in size.output and "Traceback" not in size.output


@pytest.mark.filterwarnings("ignore:FG-ARI .* is below")  # a few steps of training: below the image-blind floor, as expected
def test_table_gathers_the_evaluations_of_a_table_suite(tmp_path, synth_shards, monkeypatch):
    table = {"title": "Tiny", "models": ["slot_attention"],
             "columns": [{"name": "A", "train": "synth", "evaluate": "synth"}, {"name": "B", "train": "synth", "evaluate": "synth-b"}]}
    monkeypatch.chdir(tmp_path)
    _two_dataset_project(tmp_path, synth_shards, seeds=[0, 1], table=table, run_folder="{dataset}/{model}/seed{seed}")
    missing = runner.invoke(app, ["table"])
    assert missing.exit_code == 1 and "4 evaluation(s) missing" in missing.output
    for seed in (0, 1):
        assert runner.invoke(app, ["train", "--set", f"seed={seed}"]).exit_code == 0
        for on in ("synth", "synth-b"):
            result = runner.invoke(app, ["evaluate", "--set", f"seed={seed}", "--on", on])
            assert result.exit_code == 0, result.output
    assert (tmp_path / "data/runs/synth/slot_attention/seed1/eval-synth-b/metrics.json").exists()
    result = runner.invoke(app, ["table"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Tiny") and "| Slot Attention |" in result.output and " ± " in result.output
    assert (tmp_path / "data/table/table.csv").exists() and (tmp_path / "data/table/scores.csv").exists()
    assert "| B | synth | synth-b | test | 4 |" in result.output


def test_table_command_explains_itself():
    result = runner.invoke(app, ["table", "--help"])
    assert result.exit_code == 0 and "--partial" in result.output
    assert "--on" in runner.invoke(app, ["evaluate", "--help"]).output
