"""Learning curves of 2D models, for longer than the CPU proving ground allows, and sweeps of settings.

The proving ground (``benchmarks/zoo.py``) asks for FG-ARI 0.5 on the sprites within 15 minutes
on 2 CPU cores. Where a model does not get there, the finding is the budget it needs: this script
trains the same models (same preset, batch, optimisation, EMA, fp32 math) wherever steps are
cheaper, one process per model, and records validation FG-ARI / ARI / mIoU / MSE / PSNR against
steps and seconds. Multiplying the step where a curve crosses 0.5 by the CPU step time of
``zoo-cpu.json`` gives the CPU budget each model needs. ``sweep`` does the same for variants of
one model's settings (a YAML file, see ``benchmarks/sweeps/``), each capped at the steps the CPU
affords, which is how the default pipeline's recipe is chosen.

It runs without the pipeline's packages (no DVC, WebDataset or DVCLive; torch-ema only where EMA
is on), so that it can run on a bare GPU machine: a converted dataset is exported once to one
tensor file.

    python benchmarks/zoo_curves.py export                       # data/zoo shards → data/zoo/sprites.pt
    python benchmarks/zoo_curves.py export --dataset synth       # data/ shards (dvc repro index) → data/zoo/synth.pt
    python benchmarks/zoo_curves.py run --device cuda --seconds 150 --out /tmp/curves.json   # every 2D model at once
    python benchmarks/zoo_curves.py merge /tmp/curves.json        # → benchmarks/results/zoo-curves-<device>.json
    python benchmarks/zoo_curves.py sweep benchmarks/sweeps/synth-slot-attention.yaml --dataset synth \
        --device cuda --seconds 330 --eval-every 250 --out /tmp/sweep.json
    python benchmarks/zoo_curves.py one slot_attention --dataset synth --steps 2600 --save /tmp/w.pt --out /tmp/r.json
    python benchmarks/zoo_curves.py picture /tmp/w.pt --data data/zoo/synth.pt --out /tmp/w.png

On a GPU machine the processes share the GPU: a 150-second run of the eleven models took 230 s of
wall time with start-up and evaluations (one H200).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from _common import ROOT, bench_params  # _common also puts the repository on sys.path

MODELS_2D = ("slot_attention", "monet", "iodine", "genesis_v2", "emorl", "spair", "space", "gnm", "dti_sprites", "marionette", "slate")


def export(work: Path, out: Path, dataset: str = "sprites", overrides: list[str] = ()) -> None:
    """Every split of a converted 2D dataset as uint8 tensors in one file: the images as the model
    sees them (exact for the sprites' 8-bit PNGs; where a crop or resize interpolates, rounded to
    the nearest 1/255, an error below the PNGs' own quantisation), with their masks. A multi-view
    training split gives every view (training picks one at random); validation and test give
    view 0, as the pipeline evaluates them."""
    import torch

    from objdisc import pipeline
    from objdisc.data.loading import EvalSampler, make_loader
    from objdisc.data.transforms import image_sample

    params = bench_params("slot_attention", overrides, outputs=work, dataset=dataset)
    image_cfg = params.datasets[dataset].image

    def all_views(scene, generator=None):
        views = [image_sample(scene, image_cfg, v) for v in range(scene["image"].shape[0])]
        return {k: torch.stack([v[k] for v in views]) for k in views[0]}

    splits = {}
    for split in ("train", "val", "test"):
        ds = pipeline.dataset(params, split, train=False)
        if split == "train":
            ds.transform = all_views
        batches = list(make_loader(ds, 100, EvalSampler(len(ds))))
        image = torch.cat([b["image"].flatten(0, -4) for b in batches])
        mask = torch.cat([b["mask"].flatten(0, -3) for b in batches]).to(torch.uint8)
        as_bytes = (image * 255).round().to(torch.uint8)
        splits[split] = {"image": as_bytes, "mask": mask}
        rounding = float((as_bytes.float() / 255 - image).abs().max())
        print(f"{split}: {as_bytes.shape[0]} images, largest rounding error {rounding:.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(splits, out)
    print(out)


def as_float(image):
    """Exported uint8 images → float in [0, 1]."""
    return image.float() / 255


def evaluate(model, data: dict[str, Any], device, step: int, batch_size: int = 50) -> dict[str, float]:
    import torch

    model.eval()
    sums: dict[str, float] = {}
    n = data["image"].shape[0]
    with torch.no_grad():
        for i in range(0, n, batch_size):
            batch = {"image": as_float(data["image"][i : i + batch_size].to(device)),
                     "mask": data["mask"][i : i + batch_size].to(device).long(),
                     "index": torch.arange(i, min(i + batch_size, n), device=device)}
            out = model.family.run(model, batch, step, chunk_rays=4096)
            sums["loss"] = sums.get("loss", 0.0) + float(out.loss) * batch["index"].shape[0]  # plateau schedules watch it
            for name, values in model.family.metrics(batch, out).items():
                if name in ("fg_ari", "ari", "miou", "mse", "mbo", "psnr"):
                    values = values.float()
                    sums[name] = sums.get(name, 0.0) + float(values[torch.isfinite(values)].sum())
    model.train()
    return {k: round(v / n, 5) for k, v in sums.items()}


def one(model_name: str, data_path: Path, device: str, seconds: float, eval_seconds: float, overrides: list[str],
        out: Path, options: list[str] = (), dataset: str = "sprites", max_steps: int = 0, eval_every: int = 0, save_to: Path | None = None) -> None:
    """Train one model for ``seconds`` of wall time (or ``max_steps`` steps, whichever comes first),
    evaluating on the validation split every ``eval_seconds`` (or every ``eval_every`` steps); the record is rewritten after every
    point, so a cut-off run keeps its curve. With ``ema_decay`` > 0 the evaluations use the EMA
    weights, as the pipeline's ``model.pt`` does."""
    import contextlib

    import torch

    from objdisc.models import MODELS, model_config, param_count
    from objdisc.train.optim import Optimisation
    from objdisc.train.step import deterministic_algorithms, train_step

    record: dict[str, Any] = {"model": model_name, "dataset": dataset, "overrides": overrides, "options": list(options),
                              "device": device, "curve": []}

    def save() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(out)

    try:
        params = bench_params(model_name, overrides, options, dataset=dataset)
        cfg = params.training
        torch.manual_seed(params.seed)
        dev = torch.device(device)
        if dev.type == "cpu" and cfg.threads:
            torch.set_num_threads(cfg.threads)
        data = torch.load(data_path, weights_only=True)
        train = {k: v.to(dev) for k, v in data["train"].items()}
        model = MODELS[model_name].model(model_config(params.model, params.model_options, params.data_inputs)).to(dev)
        optim = Optimisation(model.optimizers(cfg), cfg, model)
        ema = None
        if cfg.ema_decay > 0:
            from torch_ema import ExponentialMovingAverage

            ema = ExponentialMovingAverage(model.parameters(), decay=cfg.ema_decay)

        def scored(split: str, step: int) -> dict[str, float]:
            with ema.average_parameters() if ema is not None else contextlib.nullcontext():
                return evaluate(model, data[split], dev, step)

        record.update(preset=params.models[model_name].get("preset"), parameters=param_count(model),
                      batch_size=cfg.batch_size, configured_steps=cfg.steps, lr=cfg.lr, ema_decay=cfg.ema_decay,
                      torch=torch.__version__, gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None)
        g = torch.Generator(device=dev).manual_seed(params.seed)
        n = train["image"].shape[0]
        step, train_s, next_eval = 0, 0.0, eval_seconds
        record["curve"].append({"step": 0, "train_s": 0.0, **scored("val", 0)})
        save()
        while train_s < seconds and (max_steps <= 0 or step < max_steps):
            t0 = time.perf_counter()
            idx = torch.randint(0, n, (cfg.batch_size,), generator=g, device=dev)
            batch = {"image": as_float(train["image"][idx]), "mask": train["mask"][idx].long(), "index": idx}
            with deterministic_algorithms(cfg.deterministic, dev):  # as the pipeline's loop trains
                train_step(model, model, batch, optim, step, precision="fp32", grad_clip=cfg.grad_clip)
            if ema is not None:
                ema.update()
            step += 1
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            train_s += time.perf_counter() - t0
            due = step % eval_every == 0 if eval_every > 0 else train_s >= next_eval
            if due or train_s >= seconds or step == max_steps:
                scores = scored("val", step)
                optim.on_validation(scores)  # plateau schedules (SPAIR) see the validation scores as in training
                record["curve"].append({"step": step, "train_s": round(train_s, 1), **scores})
                record["step_s"] = round(train_s / step, 5)
                save()
                next_eval = train_s + eval_seconds
        record["test"] = scored("test", step)
        if save_to is not None:  # the evaluated weights (EMA where used), to look at: `zoo_curves.py picture`
            with ema.average_parameters() if ema is not None else contextlib.nullcontext():
                torch.save({"model": model_name, "dataset": dataset, "overrides": overrides, "options": list(options),
                            "state": model.state_dict(), "step": step}, save_to)
    except Exception:  # one model's failure must not lose the others' curves
        record["error"] = traceback.format_exc()[-3000:]
    save()


def one_command(model: str, args: argparse.Namespace, out: Path, variant: dict[str, Any] | None = None) -> list[str]:
    """The ``one`` command line for ``model``; a sweep ``variant`` adds its ``set`` and ``option``
    lists and may replace ``data``, ``steps`` and ``eval_every``."""
    v = variant or {}
    cmd = [sys.executable, __file__, "one", model, "--data", str(v.get("data", args.data)), "--dataset", args.dataset,
           "--steps", str(v.get("steps", args.steps)), "--eval-every", str(v.get("eval_every", args.eval_every)),
           "--device", args.device, "--seconds", str(args.seconds), "--eval-seconds", str(args.eval_seconds), "--out", str(out)]
    for override in [*(args.set or []), *v.get("set", [])]:
        cmd += ["--set", override]
    for option in [*(args.option or []), *v.get("option", [])]:
        cmd += ["--option", option]
    return cmd


def run(args: argparse.Namespace) -> None:
    """Every model in its own process, all at once (small models leave a GPU mostly idle)."""
    models = MODELS_2D if args.models == "all" else tuple(args.models.split(","))
    launch({name: (lambda out, name=name: one_command(name, args, out)) for name in models}, Path(args.out))


def sweep(args: argparse.Namespace) -> None:
    """Variants of one model, each in its own process, all at once: which setting learns within a
    step budget (``--steps``: the steps the CPU affords) is a question for many runs side by side."""
    import yaml

    variants = yaml.safe_load(Path(args.variants).read_text())
    if not isinstance(variants, dict) or not variants:
        raise SystemExit(f"{args.variants}: expected a mapping of variant name → {{set: [...], option: [...]}}")
    unknown = {name: sorted(set(v or {}) - {"set", "option", "data", "steps", "eval_every"}) for name, v in variants.items()}
    if any(unknown.values()):
        raise SystemExit(f"{args.variants}: unknown keys {unknown} (known: set, option, data, steps, eval_every)")
    launch({name: (lambda out, v=v: one_command(args.model, args, out, v)) for name, v in variants.items()}, Path(args.out))


def launch(commands: dict[str, Any], out: Path) -> None:
    """Start every ``name → command(record path)`` at once. Their records are gathered into the one
    ``out`` file every few seconds: a machine that returns only a few files, or a run cut off by a
    time limit, still gives every curve so far."""
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    parts = Path(tempfile.mkdtemp(prefix="zoo-curves-"))
    procs = [(name, subprocess.Popen(command(parts / f"{name}.json"))) for name, command in commands.items()]

    def gather() -> None:
        records = {}
        for path in sorted(parts.glob("*.json")):
            try:
                records[path.stem] = json.loads(path.read_text())
            except ValueError:
                pass  # being replaced at this moment: the next gather has it
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"models": records}, indent=1))
        tmp.replace(out)

    while any(proc.poll() is None for _, proc in procs):
        gather()
        time.sleep(5)
    gather()
    shutil.rmtree(parts)  # this run's own temporary records, all in --out now
    for name, proc in procs:
        print(f"{name}: exit {proc.returncode}", flush=True)


def picture(weights: Path, data_path: Path, out: Path, split: str = "test", count: int = 8) -> None:
    """The family's picture (input, reconstruction, segmentations, slots) of the first ``count``
    scenes of ``split``, from weights saved by ``one --save``."""
    import numpy as np
    import torch
    from PIL import Image

    from objdisc.models import MODELS, model_config

    saved = torch.load(weights, weights_only=True)
    params = bench_params(saved["model"], saved["overrides"], saved["options"], dataset=saved["dataset"])
    model = MODELS[saved["model"]].model(model_config(params.model, params.model_options, params.data_inputs))
    model.load_state_dict(saved["state"])
    model.eval()
    data = torch.load(data_path, weights_only=True)[split]
    batch = {"image": as_float(data["image"][:count]), "mask": data["mask"][:count].long(), "index": torch.arange(count)}
    # The trained step: models whose forward depends on it (DTI-Sprites' empty sprite is not
    # selectable while its sprites are frozen, annealed priors) must draw as they were evaluated.
    with torch.no_grad():
        result = model.family.run(model, batch, int(saved.get("step", 0)), chunk_rays=4096)
        grid = model.picture(batch, result, limit=count)
    Image.fromarray(np.asarray(grid)).save(out)
    print(out)


def crossing(curve: list[dict[str, Any]], bar: float = 0.5) -> int | None:
    """The first evaluated step at which validation FG-ARI reached ``bar`` (None: never)."""
    return next((p["step"] for p in curve if p.get("fg_ari", 0.0) >= bar), None)


def merge(source: Path, out: Path | None) -> None:
    """``source``: the file ``run`` wrote, or a folder of per-model records."""
    if source.is_dir():
        records = {p.stem: json.loads(p.read_text()) for p in sorted(source.glob("*.json"))}
    else:
        records = json.loads(source.read_text())["models"]
    cpu_path = ROOT / "benchmarks" / "results" / "zoo-cpu.json"
    cpu = json.loads(cpu_path.read_text())["models"] if cpu_path.exists() else {}
    for name, r in records.items():
        r["steps_to_fg_ari_0.5"] = step = crossing(r.get("curve", []))
        cpu_step = cpu.get(name, {}).get("step_s")
        if step is not None and cpu_step and cpu.get(name, {}).get("train", {}).get("batch_size") == r.get("batch_size"):
            r["cpu_minutes_to_fg_ari_0.5"] = round(step * cpu_step / 60, 1)  # at the 2-core step time of zoo-cpu.json
    device = next((r.get("gpu") or r.get("device") for r in records.values() if r.get("device")), "unknown")
    slug = "".join(c if c.isalnum() else "-" for c in str(device).lower()).strip("-")
    out = out or ROOT / "benchmarks" / "results" / f"zoo-curves-{slug}.json"
    out.write_text(json.dumps({"device": device, "models": records}, indent=1) + "\n")
    for name, r in records.items():
        last = r["curve"][-1] if r.get("curve") else {}
        print(f"{name:15s} steps {last.get('step', 0):6d}  val FG-ARI {last.get('fg_ari', float('nan')):.3f}  "
              f"best {max((p.get('fg_ari', 0) for p in r.get('curve', [])), default=0):.3f}  "
              f"0.5 at {r['steps_to_fg_ari_0.5']}  {'ERROR' if 'error' in r else ''}")
    print(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="the converted sprites (under --work) → one tensor file")
    e.add_argument("--work", help="the outputs folder holding the converted shards (default: data/zoo for the sprites, data otherwise)")
    e.add_argument("--out", help="default: data/zoo/<dataset>.pt")
    e.add_argument("--dataset", default="sprites", help="a 2D dataset of params.yaml (synth: the default pipeline's)")
    e.add_argument("--set", action="append", help="params override (key=value), e.g. datasets.synth.image.size=48")
    for name in ("run", "one", "sweep"):
        r = sub.add_parser(name)
        if name == "one":
            r.add_argument("model")
            r.add_argument("--save", help="write the final (EMA) weights here, for `picture`")
        elif name == "sweep":
            r.add_argument("variants", help="YAML: variant name → {set: [key=value, ...], option: [field=value, ...], "
                                            "and optionally data, steps, eval_every}")
            r.add_argument("--model", default="slot_attention")
        else:
            r.add_argument("--models", default="all", help="comma list, or all: " + ",".join(MODELS_2D))
        r.add_argument("--data", help="the exported tensors (default: data/zoo/<dataset>.pt)")
        r.add_argument("--dataset", default="sprites")
        r.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: only --seconds)")
        r.add_argument("--device", default="cpu")
        r.add_argument("--seconds", type=float, default=170.0, help="training wall time per model")
        r.add_argument("--eval-seconds", type=float, default=15.0, help="training seconds between validations")
        r.add_argument("--eval-every", type=int, default=0, help="steps between validations (0: use --eval-seconds)")
        r.add_argument("--set", action="append", help="params override (key=value), repeatable")
        r.add_argument("--option", action="append", help="a field of the model's config (field=YAML value), repeatable")
        r.add_argument("--out", required=True, help="run: the one JSON of every curve; one: the model's record")
    pic = sub.add_parser("picture", help="the picture of a few scenes from weights saved by `one --save`")
    pic.add_argument("weights")
    pic.add_argument("--data", required=True)
    pic.add_argument("--out", required=True)
    m = sub.add_parser("merge", help="one JSON of every model's curve, with the CPU budget each needs")
    m.add_argument("source", help="the --out file of run (or a folder of per-model records)")
    m.add_argument("--out")
    args = p.parse_args()
    default_data = ROOT / "data" / "zoo" / f"{getattr(args, 'dataset', 'sprites')}.pt"
    if args.command == "export":
        work = Path(args.work) if args.work else ROOT / ("data/zoo" if args.dataset == "sprites" else "data")
        export(work, Path(args.out) if args.out else default_data, args.dataset, args.set or [])
        return
    if args.command == "picture":
        picture(Path(args.weights), Path(args.data), Path(args.out))
        return
    if args.command != "merge":
        args.data = args.data or str(default_data)
    if args.command == "sweep":
        sweep(args)
    elif args.command == "run":
        run(args)
    elif args.command == "one":
        one(args.model, Path(args.data), args.device, args.seconds, args.eval_seconds, args.set or [], Path(args.out),
            args.option or [], args.dataset, args.steps, args.eval_every, Path(args.save) if args.save else None)
    else:
        merge(Path(args.source), Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
