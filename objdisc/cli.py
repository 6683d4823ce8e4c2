"""The ``objdisc`` command line: a thin typer layer over ``objdisc.pipeline`` and the library.

Pipeline commands (synth, train, evaluate, render, bench) read ``params.yaml`` (``--params``) and
take ``--set key=value`` overrides, the same grammar as ``dvc exp run -S``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from objdisc.errors import exit_on_error

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="objdisc: reproducible object-centric learning. Convert datasets, train, evaluate, render.",
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-S", help="override, e.g. train.steps=100 (repeatable)")]


def _params(path: Path, overrides: list[str] | None):
    from objdisc.config import load_params

    return load_params(path, overrides)


@app.command()
def synth(
    name: Annotated[str, typer.Argument(help="synth (multi-view 3D scenes) or sprites (2D proving ground)")] = "synth",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: data/raw/<name>)")] = None,
) -> None:
    """Generate an embedded dataset from its params block: `synth` (CLEVR3D layout) or `sprites`
    (Multi-dSprites TFRecord layout)."""
    from objdisc import pipeline

    with exit_on_error():
        path = pipeline.synth(_params(params, set_), name, out)
        typer.echo(f"wrote {path}")


@app.command()
def convert(
    source: Annotated[Optional[str], typer.Argument(help="source name (see --list); omit to convert the params dataset")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="folder (or file) with the original data")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="folder for the shards")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="webdataset | hdf5 | zarr")] = "webdataset",
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    shard_scenes: Annotated[int, typer.Option(help="scenes per shard")] = 256,
    option: Annotated[Optional[list[str]], typer.Option("--option", help="source option key=value (YAML value), repeatable")] = None,
    split: Annotated[Optional[list[str]], typer.Option(help="convert only these splits")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip scenes that fail to decode and list them")] = False,
    list_: Annotated[bool, typer.Option("--list", help="list the sources with their expected input layout")] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Convert original dataset files into canonical shards (resumable, parallel)."""
    from objdisc.data.sources import SOURCES

    if list_:
        for name, cls in SOURCES.items():
            info = cls.info
            typer.echo(f"{name}\n  {info.summary}\n  layout: {info.layout}\n  origin: {info.origin}")
            if info.needs:
                typer.echo(f"  needs:  {info.needs}")
        return
    with exit_on_error():
        if source is None:
            from objdisc import pipeline

            result = pipeline.convert(_params(params, set_))
        else:
            import yaml

            from objdisc.data.convert import convert as run_convert

            if input is None or output is None:
                raise ValueError("convert SOURCE needs --input and --output")
            options = {}
            for item in option or []:
                key, _, value = item.partition("=")
                options[key] = yaml.safe_load(value)
            result = run_convert(
                source, input, output, fmt=format, options=options, shard_scenes=shard_scenes,
                workers=workers, splits=split, skip_bad=skip_bad,
            )
        counts = ", ".join(f"{s}: {v['scenes']}" for s, v in result.splits.items())
        if result.up_to_date:
            typer.echo(f"{result.out} is already converted with these settings ({counts}); nothing to do")
        else:
            typer.echo(f"converted into {result.out} ({counts}); skipped {len(result.skipped)}")


@app.command()
def index(
    shards: Annotated[Optional[Path], typer.Argument(help="folder of shards (default: the params dataset)")] = None,
    output: Annotated[Optional[Path], typer.Option(help="index file (default: <shards>/index.json)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Verify that every shard decodes to the schema and write the index (counts, sha256, stats)."""
    with exit_on_error():
        if shards is None:
            from objdisc import pipeline

            result = pipeline.index(_params(params, set_))
        else:
            from objdisc.data.convert import MANIFEST
            from objdisc.data.index import build_index

            manifest = shards / MANIFEST
            conversion = json.loads(manifest.read_text()) if manifest.exists() else None
            result = build_index(shards, params=conversion, out=output or shards / "index.json")
        counts = ", ".join(f"{s}: {v['scenes']}" for s, v in result["splits"].items())
        typer.echo(f"index ok ({counts})")


@app.command()
def train(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    restart: Annotated[bool, typer.Option("--restart", help="move the run's old folder aside and start afresh")] = False,
) -> None:
    """Train the params' model on its dataset (resumes from the last checkpoint). Under torchrun: DDP.

    A checkpoint of other settings is never overwritten: training stops and says what differs;
    --restart (or OBJDISC_RESTART=1 for `dvc exp run`) moves the old run to <run>.replaced-<time>."""
    from objdisc import pipeline

    with exit_on_error():
        path = pipeline.train(_params(params, set_), restart=restart)
        typer.echo(f"wrote {path}")


@app.command()
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    on: Annotated[Optional[str], typer.Option("--on", help="evaluate on this dataset of datasets: (OOD, CAMO, ...) into <run>/eval-<dataset>")] = None,
) -> None:
    """Evaluate the trained model (EMA weights) on the test split: metrics.json, scenes.csv, objects.csv,
    tags.csv (per-tag means of the per-object statistics), pictures."""
    from objdisc import pipeline

    with exit_on_error():
        loaded = _params(params, set_)
        if on is not None:
            if on not in loaded.datasets:
                raise ValueError(f"--on: unknown dataset '{on}' (known: {', '.join(loaded.datasets)})")
            loaded.evaluate.dataset = on
        summary = pipeline.evaluate(loaded)
        typer.echo(json.dumps(summary, indent=1))
        typer.echo(f"wrote {loaded.eval_dir()}")


@app.command()
def table(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    partial: Annotated[bool, typer.Option("--partial", help="show missing evaluations as – instead of failing")] = False,
    out: Annotated[Optional[Path], typer.Option(help="folder for the table (default: <outputs>/table)")] = None,
) -> None:
    """A table suite's table (its `table:` block and `seeds`): every model × column × seed that has been
    evaluated, mean ± std over seeds, published values beside ours; prints table.md."""
    from objdisc import pipeline

    with exit_on_error():
        loaded = _params(params, set_)
        folder = out or Path(loaded.outputs) / "table"
        pipeline.aggregate(loaded, partial=partial, out=folder)
        typer.echo((folder / "table.md").read_text())


@app.command()
def render(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    scene_id: Annotated[Optional[list[int]], typer.Option("--scene-id", help="test scene(s) to render")] = None,
    motion: Annotated[Optional[str], typer.Option(help="camera path (3D models): rotate, closeup, rotate_and_closeup, ...")] = None,
    fade: Annotated[Optional[bool], typer.Option("--fade/--no-fade", help="blend colour into segmentation")] = None,
    num_frames: Annotated[Optional[int], typer.Option(help="frames along the camera path")] = None,
    slots: Annotated[
        Optional[bool], typer.Option("--slots/--no-slots", help="add what each slot renders alone (ObSuRF, OSRT)")
    ] = None,
) -> None:
    """Render chosen test scenes to mp4 + PNG frames under the run folder."""
    from objdisc import pipeline

    overrides = list(set_ or [])
    if scene_id:
        overrides.append(f"render.scene_ids={json.dumps(scene_id)}")
    if motion is not None:
        overrides.append(f"render.motion={motion}")
    if fade is not None:
        overrides.append(f"render.fade={'true' if fade else 'false'}")
    if num_frames is not None:
        overrides.append(f"render.num_frames={num_frames}")
    with exit_on_error():
        loaded = _params(params, overrides)
        if slots is not None:  # set directly: a params file written before render.slots existed lacks the key
            loaded.render.slots = slots
        for path in pipeline.render(loaded):
            typer.echo(f"wrote {path}")


@app.command()
def bench(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option(help="JSON file for the results")] = Path("bench.json"),
    steps: Annotated[int, typer.Option(help="timed training steps")] = 10,
    batches: Annotated[int, typer.Option(help="timed loader batches")] = 20,
) -> None:
    """Measure loader scenes/s, train-step images/s and peak memory for the params' model and dataset."""
    from objdisc.bench import run_bench

    with exit_on_error():
        result = run_bench(_params(params, set_), out, steps=steps, batches=batches)
        typer.echo(json.dumps(result, indent=1))


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List every model with its parameter count at each paper preset."""
    from objdisc import pipeline

    rows = pipeline.describe_models()
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        typer.echo(f"{row['model']:<16} {row['preset']:<18} {row['parameters']:>12,}  {row['paper']}")


@app.command()
def info(path: Annotated[Optional[Path], typer.Argument(help="an index.json or shards folder to describe")] = None) -> None:
    """Versions, devices, and (given an index) the dataset's splits and statistics."""
    import torch

    import objdisc

    typer.echo(f"objdisc {objdisc.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}")
    typer.echo(f"cuda: {torch.cuda.is_available()} ({torch.cuda.device_count()} devices)")
    if path is not None:
        with exit_on_error():
            index_path = path / "index.json" if path.is_dir() else path
            data = json.loads(index_path.read_text())
            typer.echo(f"{index_path}: format {data.get('format')}")
            for split, block in data["splits"].items():
                typer.echo(f"  {split}: {block['scenes']} scenes in {len(block['shards'])} shards")
            typer.echo(json.dumps(data.get("statistics", {}), indent=1))


def main() -> None:  # pragma: no cover - console entry point
    app()
