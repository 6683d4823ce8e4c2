"""One function per pipeline step, from typed params to library calls.

``stages/*.py`` (DVC) and ``objdisc/cli.py`` both call these, so a step does the same thing
whichever way it is started, and neither entry point holds logic of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import torch

from objdisc.config import ConfigError, Params, build
from objdisc.data import convert as converting
from objdisc.data.loading import SceneDataset
from objdisc.data.schema import Scene
from objdisc.data.transforms import image_sample, pick_view
from objdisc.models import MODELS, Model, build_model, model_config, param_count
from objdisc.train import checkpoint
from objdisc.train.distributed import pick_device

# ----------------------------------------------------------------------------- data


def synth(params: Params, out: Path | None = None, progress: bool = True) -> Path:
    from objdisc.data.synth import SynthConfig, generate

    options = dict(params.synth)
    workers = int(options.pop("workers", params.storage.workers))
    cfg = build(SynthConfig, options, "synth")
    return generate(cfg, Path(out or "data/raw/synth"), workers=workers, progress=progress)


def convert(params: Params, progress: bool = True) -> converting.ConvertResult:
    data = params.data
    raw = params.raw_dir()
    if not raw.exists():
        raise ConfigError(
            f"dataset '{params.dataset}': {raw} does not exist; place the original files there "
            f"(see `objdisc convert --list` for the expected layout)"
        )
    return converting.convert(
        data.source,
        raw,
        params.shards_dir(),
        fmt=params.storage.format,
        options=data.options,
        shard_scenes=params.storage.shard_scenes,
        workers=params.storage.workers,
        skip_bad=params.storage.skip_bad,
        progress=progress,
    )


def index(params: Params, progress: bool = True) -> dict[str, Any]:
    from objdisc.data.index import build_index

    shards = params.shards_dir()
    manifest = shards / converting.MANIFEST
    if not manifest.exists():
        raise ConfigError(f"{shards}: no finished conversion ({converting.MANIFEST} missing); run convert first")
    conversion = json.loads(manifest.read_text())
    return build_index(shards, params=conversion, progress=progress, out=params.index_path())


# ----------------------------------------------------------------------------- datasets


def image_transform(scene: Scene, generator: torch.Generator | None, *, cfg, train: bool) -> dict[str, Any]:
    view = pick_view(scene, cfg, generator) if train else 0
    return image_sample(scene, cfg, view)


def views_transform(scene: Scene, generator: torch.Generator | None, *, cfg) -> dict[str, Any]:
    from objdisc.data.views import make_views_sample

    return make_views_sample(scene, cfg, generator if generator is not None else torch.Generator().manual_seed(0))


def make_transform(params: Params, model_cls: type[Model], train: bool):
    data = params.data
    if model_cls.inputs == "image":
        return functools.partial(image_transform, cfg=data.image, train=train)
    from objdisc.data.views import ViewsConfig

    options = dict(data.views)
    if not train:
        # Evaluation: fixed input views, and every pixel of the held-out views as targets.
        options["num_target_rays"] = 0
        options["targets"] = "others"
        options["input_view_ids"] = list(range(options.get("num_input_views", 1)))
    return functools.partial(views_transform, cfg=build(ViewsConfig, options, f"datasets.{params.dataset}.views"))


def dataset(params: Params, split: str, train: bool) -> SceneDataset:
    from objdisc.data.index import load_index

    index_data = load_index(params.index_path())
    model_cls = MODELS[params.model].model
    fields = index_data.get("schema", {})
    if model_cls.inputs == "views" and fields and not {"cam2world", "intrinsics"} <= set(fields):
        raise ConfigError(
            f"model '{params.model}' renders novel views and needs cameras, but dataset '{params.dataset}' has "
            f"none (fields: {', '.join(sorted(fields))}); use a multi-view dataset or a 2D model"
        )
    return SceneDataset(params.shards_dir(), index_data, split, make_transform(params, model_cls, train))


# ----------------------------------------------------------------------------- training


def model_info(params: Params) -> dict[str, Any]:
    cfg = model_config(params.model, params.model_options)
    return {"model": params.model, "config": _plain(dataclasses.asdict(cfg)), "dataset": params.dataset}


def train(params: Params, progress: bool = True, stop_after: int | None = None) -> Path:
    from objdisc.train.loop import train as train_loop

    torch.manual_seed(params.seed)  # the initial weights follow from the seed
    model = build_model(params.model, params.model_options)
    from objdisc.data.index import load_index

    train_set = dataset(params, params.data.train_split, train=True)
    index_data = load_index(params.index_path())
    val_set = None
    if params.data.val_split in index_data.get("keys", {}) and index_data["keys"][params.data.val_split]:
        val_set = dataset(params, params.data.val_split, train=False)
    return train_loop(
        model,
        train_set,
        val_set,
        params.training,
        params.run_dir(),
        seed=params.seed,
        model_info=model_info(params),
        progress=progress,
        stop_after=stop_after,
    )


def load_trained(path: Path, device: torch.device | str = "cpu") -> Model:
    """The model saved by training (EMA weights), rebuilt from the config stored beside them."""
    if not path.exists():
        raise ConfigError(f"{path}: no trained model; run the train stage first")
    state = checkpoint.load(path, device)
    model = build_model(state["model"], state["config"])
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()


def evaluate(params: Params, progress: bool = True) -> dict[str, float]:
    from objdisc.evaluate import evaluate as run_evaluation

    device = pick_device(params.training.device)
    model = load_trained(params.run_dir() / "model.pt", device)
    test_set = dataset(params, params.evaluate.split, train=False)
    return run_evaluation(model, test_set, params.evaluate, params.run_dir() / "eval", device, progress)


def render(params: Params, progress: bool = True) -> list[Path]:
    from objdisc.render.scenes import render_scenes

    device = pick_device(params.training.device)
    model = load_trained(params.run_dir() / "model.pt", device)
    test_set = dataset(params, params.evaluate.split, train=False)
    return render_scenes(model, test_set, params.render, params.run_dir() / "renders", device, progress)


def describe_models() -> list[dict[str, Any]]:
    """Every model with its parameter count at each paper preset (``objdisc models``)."""
    rows = []
    for name, entry in MODELS.items():
        for preset, cfg in entry.presets.items():
            if preset.startswith("cpu") or preset.endswith("-cpu"):
                continue
            with torch.device("meta"):  # count parameters without allocating them
                model = entry.model(cfg)
            rows.append({"model": name, "preset": preset, "parameters": param_count(model), "paper": entry.paper})
    return rows


def _plain(value: Any) -> Any:
    """Config values as lists/dicts/scalars only (checkpoints load with weights_only=True)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
