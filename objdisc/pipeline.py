"""One function per pipeline step, from typed params to library calls.

``stages/*.py`` (DVC) and ``objdisc/cli.py`` both call these, so a step does the same thing
whichever way it is started, and neither entry point holds logic of its own.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objdisc.config import ConfigError, Params, build, plain

# Each step imports what it uses inside its function, so that a DVC stage's code dependencies are
# what that step runs (tests/test_dvc_pipeline.py traces them), not everything the module touches.
if TYPE_CHECKING:
    import torch

    from objdisc.data.convert import ConvertResult
    from objdisc.data.loading import SceneDataset
    from objdisc.models import Model

# ----------------------------------------------------------------------------- data

GENERATED = ("synth", "sprites")  # datasets objdisc draws itself, into data/raw/<name>


def synth(params: Params, name: str = "synth", out: Path | None = None, progress: bool = True) -> Path:
    """Generate the embedded dataset ``name`` from its params block: ``synth``, multi-view CLEVR-like
    scenes in the CLEVR3D layout; ``sprites``, 2D sprites in the Multi-dSprites TFRecord layout."""
    out = Path(out or f"data/raw/{name}")
    if name == "synth":
        from objdisc.data.synth import SynthConfig, generate

        options = dict(params.synth)
        workers = int(options.pop("workers", 1))
        return generate(build(SynthConfig, options, "synth"), out, workers=workers, progress=progress)
    if name == "sprites":
        from objdisc.data.sprites import SpritesConfig
        from objdisc.data.sprites import generate as generate_sprites

        return generate_sprites(build(SpritesConfig, params.sprites, "sprites"), out, progress=progress)
    raise ConfigError(f"synth: unknown generated dataset '{name}' (known: {', '.join(GENERATED)})")


def convert(params: Params, progress: bool = True) -> ConvertResult:
    from objdisc.data import convert as converting

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
    from objdisc.data import convert as converting
    from objdisc.data.index import build_index

    shards = params.shards_dir()
    manifest = shards / converting.MANIFEST
    if not manifest.exists():
        raise ConfigError(f"{shards}: no finished conversion ({converting.MANIFEST} missing); run convert first")
    conversion = json.loads(manifest.read_text())
    return build_index(shards, params=conversion, progress=progress, out=params.index_path())


# ----------------------------------------------------------------------------- datasets


def dataset(params: Params, split: str, train: bool, name: str | None = None, cache_mb: float = 0) -> SceneDataset:
    """A split of the params' dataset (or of dataset ``name``, e.g. the evaluation set) in the
    layout of the params' model (its family's transform of that dataset's block); ``cache_mb``
    of decoded scenes kept in memory (for splits read more than once)."""
    from objdisc.data.index import load_index
    from objdisc.data.loading import SceneDataset
    from objdisc.models import MODELS

    name = name or params.dataset
    if name not in params.datasets:
        raise ConfigError(f"dataset '{name}' is not in datasets: (known: {', '.join(params.datasets)})")
    data = params.datasets[name]
    index_data = load_index(params.index_path(dataset=name))
    model_cls = MODELS[params.model].model
    family = model_cls.family
    try:
        family.check_dataset(index_data.get("schema", {}), data, model_cls, (params.model, name))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    transform = family.transform(data, train, f"datasets.{name}", model_cls)
    return SceneDataset(params.shards_dir(dataset=name), index_data, split, transform, cache_mb=cache_mb)


# ----------------------------------------------------------------------------- training


def config(params: Params) -> Any:
    """The params' model config: its block, with what the dataset tells it (the image size)."""
    from objdisc.models import model_config

    return model_config(params.model, params.model_options, params.data_inputs)


def model_info(params: Params) -> dict[str, Any]:
    cfg = config(params)
    return {"model": params.model, "config": plain(cfg), "dataset": params.dataset}


def train(params: Params, progress: bool = True, stop_after: int | None = None, restart: bool = False) -> Path:
    import torch

    from objdisc.data.index import load_index
    from objdisc.models import MODELS
    from objdisc.train.loop import train as train_loop

    torch.manual_seed(params.seed)  # the initial weights follow from the seed
    model = MODELS[params.model].model(config(params))
    # Training reads its split once per epoch and validation the same scenes every val_every steps.
    train_set = dataset(params, params.data.train_split, train=True, cache_mb=params.training.cache_mb)
    index_data = load_index(params.index_path())
    val_set = None
    if params.data.val_split in index_data.get("keys", {}) and index_data["keys"][params.data.val_split]:
        val_set = dataset(params, params.data.val_split, train=False, cache_mb=params.training.cache_mb)
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
        restart=restart or os.environ.get("OBJDISC_RESTART", "") not in ("", "0"),
    )


def load_trained(path: Path, device: torch.device | str = "cpu") -> tuple[Model, int]:
    """The model saved by training (EMA weights), rebuilt from the config stored beside them, and
    the number of steps it was trained for (annealed values are taken at that step)."""
    from objdisc.models import build_model
    from objdisc.train import checkpoint

    if not path.exists():
        raise ConfigError(f"{path}: no trained model; run the train stage first")
    state = checkpoint.load(path, device)
    model = build_model(state["model"], state["config"])
    model.load_state_dict(state["state_dict"])
    step, steps = int(state.get("step", 0)), int(state.get("steps", 0))
    if step < steps:
        warnings.warn(f"{path} is from step {step} of {steps}: the run is unfinished (train again to resume it)")
    return model.to(device).eval(), step


def evaluate(params: Params, progress: bool = True) -> dict[str, float]:
    """Evaluate the params' run on ``evaluate.split`` of ``evaluate.dataset`` (default: the dataset
    it trained on) into ``Params.eval_dir()``: ``<run>/eval`` or ``<run>/eval-<dataset>``."""
    from objdisc.evaluate import evaluate as run_evaluation
    from objdisc.models import MODELS
    from objdisc.train.distributed import pick_device

    on = params.eval_dataset
    if on != params.dataset and MODELS[params.model].model.family.name == "image":
        trained, given = params.data.image.size, params.datasets[on].image.size
        if trained != given:
            raise ConfigError(
                f"evaluate.dataset '{on}' gives {given}x{given} images (datasets.{on}.image.size) but the model "
                f"trained on '{params.dataset}' at {trained}x{trained}; give both the same size"
            )
    device = pick_device(params.training.device)
    model, step = load_trained(params.run_dir() / "model.pt", device)
    test_set = dataset(params, params.evaluate.split, train=False, name=on)
    return run_evaluation(model, test_set, params.evaluate, params.eval_dir(), device, progress, step=step)


def aggregate(params: Params, partial: bool = False, out: Path | None = None) -> dict[str, Any]:
    """The suite's table (``objdisc.benchmark``): every evaluation of its ``table`` block's rows,
    mean ± std over ``seeds``, written to ``<outputs>/table/`` (table.md, table.csv, table.json,
    scores.csv, tags.csv, plot.csv). ``partial``: leave missing evaluations out instead of failing."""
    from objdisc.benchmark import aggregate as run_aggregate

    return run_aggregate(params, out or Path(params.outputs) / "table", partial=partial)


def render(params: Params, progress: bool = True) -> list[Path]:
    from objdisc.render.scenes import render_scenes
    from objdisc.train.distributed import pick_device

    device = pick_device(params.training.device)
    model, step = load_trained(params.run_dir() / "model.pt", device)
    test_set = dataset(params, params.evaluate.split, train=False)
    return render_scenes(model, test_set, params.data, params.render, params.run_dir() / "renders", device, progress, step=step)


def describe_models() -> list[dict[str, Any]]:
    """Every model with its parameter count at each preset (``objdisc models``); ``cpu*`` presets
    are the CPU-sized settings of params.yaml, the others the papers'."""
    import torch

    from objdisc.models import MODELS, param_count

    rows = []
    for name, entry in MODELS.items():
        for preset, cfg in entry.presets.items():
            with torch.device("meta"):  # count parameters without allocating them
                model = entry.model(cfg)
            rows.append({"model": name, "preset": preset, "parameters": param_count(model), "paper": entry.paper})
    return rows


