"""``params.yaml`` → typed dataclasses, with overrides and errors that name the key.

The library never reads ``params.yaml`` itself: stages and the CLI call ``load_params`` and pass
the typed pieces down. Every section is a dataclass; unknown or mistyped keys fail with the dotted
path of the key, so a typo in ``params.yaml`` is one clear line, not a stack trace.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A malformed params file or override; the message names the key."""


def build(cls: type, values: dict[str, Any] | None, where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, checking names and types recursively."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in values.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None
    return obj


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def plain(value: Any) -> Any:
    """A config (dataclass, dict, list or scalar) as dicts, lists and scalars only: the form
    checkpoints (loaded with ``weights_only=True``) and JSON records hold, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- sections


@dataclass
class StorageConfig:
    format: typing.Literal["webdataset", "hdf5", "zarr"] = "webdataset"
    shard_scenes: int = 256  # scenes per shard (fixed count: lets workers convert shards in parallel)
    workers: int = 2  # conversion worker processes
    skip_bad: bool = False  # skip scenes that fail to decode, listed in the index, instead of failing

    def __post_init__(self) -> None:
        if self.shard_scenes < 1:
            raise ValueError("shard_scenes must be >= 1")


@dataclass
class ImageConfig:
    """How a 2D model sees a scene: one view, cropped and resized (Slot Attention or ClevrTex crop)."""

    crop: list[int] | None = None  # [top, bottom, left, right] rows/cols, or None
    center_crop: float | None = None  # ClevrTex-style centre crop: side = int(f · min(H, W))
    size: int = 128  # output side (square) after the crop
    train_view: typing.Literal["random", "first"] = "random"  # multi-view datasets


@dataclass
class DatasetConfig:
    source: str  # key of objdisc.data.sources.SOURCES; the files live in data/raw/<dataset>
    options: dict[str, Any] = field(default_factory=dict)  # passed to the source
    image: ImageConfig = field(default_factory=ImageConfig)
    views: dict[str, Any] = field(default_factory=dict)  # objdisc.data.views.ViewsConfig fields
    # Slots a slot model uses on this dataset (objects + background, as the papers chose per
    # dataset); None leaves the model's own. Models declare it as a data input.
    num_slots: int | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # global: divided over DDP processes
    optimizer: typing.Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"  # models may ask for their own
    lr: float = 4e-4
    warmup_steps: int = 100  # linear warm-up
    decay_steps: int = 1000  # lr × decay_rate ** (step / decay_steps)
    decay_rate: float = 0.5
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.999
    precision: typing.Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA only
    checkpoint_every: int = 100
    log_every: int = 10
    val_every: int = 250
    val_batches: int = 4
    workers: int = 1  # DataLoader workers per process
    # Decoded training and validation scenes kept in memory, MiB per loading process (the main one
    # and each worker): every epoch after the first decodes nothing (objdisc.data.loading.SceneDataset).
    cache_mb: float = 512
    device: str = "auto"
    threads: int = 0  # torch intra-op threads per process (0: torch's default, one per core)
    # torch's deterministic kernels: "auto" uses them on CPU (bit-exact runs given a seed at any
    # thread count, for about 2% of a step) and not on CUDA, where their cost is unmeasured.
    deterministic: typing.Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        # A bad value here would otherwise surface as a torch error without the key, a division by
        # zero, or (steps <= 0) an "untrained" model.pt written as if training had happened.
        positive = ("steps", "batch_size", "checkpoint_every", "log_every", "val_every", "val_batches")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("warmup_steps", "decay_steps", "workers", "weight_decay", "grad_clip", "threads", "cache_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not self.decay_rate > 0:
            raise ValueError(f"decay_rate must be > 0, got {self.decay_rate}")
        if self.deterministic not in ("auto", "on", "off"):
            raise ValueError(f"deterministic must be auto, on or off, got {self.deterministic!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:<n>, got {self.device!r}")


@dataclass
class EvaluateConfig:
    # The dataset to evaluate on (a key of datasets:, with its own crop and split); None = the
    # dataset the model trained on. Results go to the run's eval/ (None) or eval-<dataset>/.
    dataset: str | None = None
    split: str = "test"
    batch_size: int = 32
    max_scenes: int = 0  # 0 = the whole split
    pictures: int = 8  # scenes shown in the picture grid
    chunk_rays: int = 4096  # 3D models: rays decoded at once


@dataclass
class RenderConfig:
    scene_ids: list[int] = field(default_factory=lambda: [0])
    motion: str = "rotate"
    num_frames: int = 60
    fps: int = 30
    fade: bool = False
    height: int = 0  # 0 = the dataset's resolution
    width: int = 0
    chunk_rays: int = 4096
    crf: int = 17
    slots: bool = False  # 3D models: add what each slot renders alone (one panel per slot) to every frame


RUN_FOLDER = "{dataset}/{model}"  # the default pipeline's layout: data/runs/<dataset>/<model>
RUN_FIELDS = ("dataset", "model", "seed")


@dataclass
class Params:
    dataset: str
    model: str
    seed: int
    datasets: dict[str, DatasetConfig]
    models: dict[str, dict[str, Any]]
    storage: StorageConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    render: RenderConfig
    synth: dict[str, Any]  # objdisc.data.synth.SynthConfig fields (+ workers): data/raw/synth
    sprites: dict[str, Any]  # objdisc.data.sprites.SpritesConfig fields: data/raw/sprites
    raw: dict[str, Any]  # the whole file, for recording
    # Where this pipeline writes shards, indexes and runs. Each paper suite has its own
    # (data/<suite>), so no two dvc.yaml files declare the same output whatever the dataset.
    outputs: str = "data"
    # A run's folder under <outputs>/runs/, from {dataset}, {model} and {seed}. Suites that train
    # several seeds of a model (pipelines/make.py's table suites) use "{dataset}/{model}/seed{seed}".
    run_folder: str = RUN_FOLDER

    @property
    def data(self) -> DatasetConfig:
        return self.datasets[self.dataset]

    @property
    def model_options(self) -> dict[str, Any]:
        """The model block without its ``train`` overrides: the model's config fields."""
        return {k: v for k, v in self.models[self.model].items() if k != "train"}

    @property
    def data_inputs(self) -> dict[str, Any]:
        """What the dataset tells a model's config (fields declared with ``data_input``)."""
        inputs: dict[str, Any] = {"image_size": self.data.image.size}
        if self.data.num_slots is not None:
            inputs["num_slots"] = self.data.num_slots
        return inputs

    @property
    def training(self) -> TrainConfig:
        """``train``, with the selected model's ``models.<model>.train`` overrides applied.

        3D models need a smaller batch than Slot Attention to train in minutes on a CPU; keeping
        that next to the model means ``dvc exp run -S model=osrt`` just works.
        """
        overrides = self.models[self.model].get("train") or {}
        return build(TrainConfig, {**dataclasses.asdict(self.train), **overrides}, f"models.{self.model}.train")

    def raw_dir(self, root: Path = Path("."), dataset: str | None = None) -> Path:
        return root / "data" / "raw" / (dataset or self.dataset)

    def shards_dir(self, root: Path = Path("."), dataset: str | None = None) -> Path:
        return root / self.outputs / "shards" / (dataset or self.dataset)

    def index_path(self, root: Path = Path("."), dataset: str | None = None) -> Path:
        return root / self.outputs / "index" / f"{dataset or self.dataset}.json"

    def run_dir(self, root: Path = Path(".")) -> Path:
        """``<outputs>/runs/<run_folder>``: ``data/runs/<dataset>/<model>`` in the default pipeline."""
        return root / self.outputs / "runs" / self.run_folder.format(dataset=self.dataset, model=self.model, seed=self.seed)

    @property
    def eval_dataset(self) -> str:
        """The dataset the evaluation reads: ``evaluate.dataset``, or the training dataset."""
        return self.evaluate.dataset or self.dataset

    def eval_dir(self, root: Path = Path(".")) -> Path:
        """Where the evaluation writes: ``<run>/eval`` on the training dataset (``evaluate.dataset``
        unset), ``<run>/eval-<dataset>`` on a named one (OOD, CAMO, ...)."""
        on = self.evaluate.dataset
        return self.run_dir(root) / ("eval" if on is None else f"eval-{on}")


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) in place; the key must exist (as with -S)."""
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected key=value")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"override '{override}': no key '{'.'.join(parts[: i + 1])}'")
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise ConfigError(f"override '{override}': no key '{key.strip()}'")
    node[parts[-1]] = yaml.safe_load(text)


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for override in overrides or []:
        apply_override(raw, override)
    return parse_params(raw, str(path))


def parse_params(raw: dict[str, Any], where: str = "params.yaml") -> Params:
    for key in ("dataset", "model", "datasets", "models"):
        if key not in raw:
            raise ConfigError(f"{where}: missing key '{key}'")
    datasets = raw["datasets"]
    if not isinstance(datasets, dict):
        raise ConfigError(f"{where}: datasets: expected a mapping")
    parsed = {name: build(DatasetConfig, block, f"datasets.{name}") for name, block in datasets.items()}
    if raw["dataset"] not in parsed:
        raise ConfigError(f"dataset: unknown dataset '{raw['dataset']}' (known: {', '.join(parsed)})")
    models = raw["models"]
    if not isinstance(models, dict) or raw["model"] not in models:
        known = ", ".join(models) if isinstance(models, dict) else ""
        raise ConfigError(f"model: unknown model '{raw['model']}' (known: {known})")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    outputs = raw.get("outputs", "data")
    if not isinstance(outputs, str) or not outputs or Path(outputs).is_absolute() or ".." in Path(outputs).parts:
        raise ConfigError(f"outputs: expected a relative folder inside the repository, got {outputs!r}")
    if Path(outputs) == Path("data/raw") or Path("data/raw") in Path(outputs).parents:
        raise ConfigError(f"outputs: {outputs!r} is inside data/raw, which holds the original files")
    run_folder = _run_folder(raw.get("run_folder", RUN_FOLDER))
    params = Params(
        dataset=raw["dataset"],
        model=raw["model"],
        seed=seed,
        datasets=parsed,
        models={k: dict(v or {}) for k, v in models.items()},
        storage=build(StorageConfig, raw.get("storage"), "storage"),
        train=build(TrainConfig, raw.get("train"), "train"),
        evaluate=build(EvaluateConfig, raw.get("evaluate"), "evaluate"),
        render=build(RenderConfig, raw.get("render"), "render"),
        synth=dict(raw.get("synth") or {}),
        sprites=dict(raw.get("sprites") or {}),
        raw=raw,
        outputs=outputs,
        run_folder=run_folder,
    )
    if params.evaluate.dataset is not None and params.evaluate.dataset not in parsed:
        raise ConfigError(f"evaluate.dataset: unknown dataset '{params.evaluate.dataset}' (known: {', '.join(parsed)})")
    for name, block in params.models.items():  # check every model's train overrides up front
        if block.get("train"):
            build(TrainConfig, {**dataclasses.asdict(params.train), **block["train"]}, f"models.{name}.train")
    return params


def _run_folder(value: Any) -> str:
    """Check ``run_folder``: a relative path template naming {dataset} and {model} (so no two
    runs share a folder), and no other field than {dataset}, {model}, {seed}."""
    import string

    if not isinstance(value, str) or not value:
        raise ConfigError(f"run_folder: expected a template such as {RUN_FOLDER!r}, got {value!r}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as err:
        raise ConfigError(f"run_folder: {value!r} is not a valid template: {err}") from None
    unknown = sorted(fields - set(RUN_FIELDS))
    if unknown:
        raise ConfigError(f"run_folder: unknown field(s) {', '.join(unknown)} in {value!r} (known: {', '.join(RUN_FIELDS)})")
    missing = [name for name in ("dataset", "model") if name not in fields]
    if missing:
        raise ConfigError(f"run_folder: {value!r} must contain {{{missing[0]}}}, or two runs would share a folder")
    path = Path(value.format(dataset="d", model="m", seed=0))
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"run_folder: {value!r} must stay inside <outputs>/runs")
    return value
