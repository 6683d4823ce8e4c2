"""Learning curves of the 2D zoo at the ``cpu`` preset, for longer than the CPU proving ground allows.

The proving ground (``benchmarks/zoo.py``) asks for FG-ARI 0.5 on the sprites within 15 minutes
on 2 CPU cores. Where a model does not get there, the finding is the budget it needs: this script
trains the same models (same preset, batch, optimisation, fp32 math) wherever steps are cheaper,
one process per model, and records validation FG-ARI / ARI / mIoU / MSE against steps and seconds.
Multiplying the step where a curve crosses 0.5 by the CPU step time of ``zoo-cpu.json`` gives the
CPU budget each model needs.

It runs without the pipeline's packages (no DVC, WebDataset or DVCLive), so that it can run on a
bare GPU machine: the sprites are exported once to one tensor file.

    python benchmarks/zoo_curves.py export                       # data/zoo shards → data/zoo/sprites.pt
    python benchmarks/zoo_curves.py run --device cuda --seconds 150 --out /tmp/curves.json   # every 2D model at once
    python benchmarks/zoo_curves.py merge /tmp/curves.json        # → benchmarks/results/zoo-curves-<device>.json

On a GPU machine the eleven processes share the GPU: a 150-second run took 230 s of wall time
with start-up and evaluations (one H200).
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

from _common import ROOT, sprites_params  # _common also puts the repository on sys.path

DATA = ROOT / "data" / "zoo" / "sprites.pt"
MODELS_2D = ("slot_attention", "monet", "iodine", "genesis_v2", "emorl", "spair", "space", "gnm", "dti_sprites", "marionette", "slate")


def export(work: Path, out: Path) -> None:
    """Every split of the converted sprites as uint8 tensors in one file (images exact: 8-bit PNGs)."""
    import torch

    from objdisc import pipeline
    from objdisc.data.loading import EvalSampler, make_loader

    params = sprites_params("slot_attention", outputs=work)
    splits = {}
    for split in ("train", "val", "test"):
        ds = pipeline.dataset(params, split, train=False)
        batches = list(make_loader(ds, 100, EvalSampler(len(ds))))
        image = torch.cat([b["image"] for b in batches])
        splits[split] = {"image": (image * 255).round().to(torch.uint8), "mask": torch.cat([b["mask"] for b in batches]).to(torch.uint8)}
        assert torch.equal(splits[split]["image"].float() / 255, image), "sprites images are not 8-bit"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(splits, out)
    print(f"{out}: " + ", ".join(f"{k} {v['image'].shape[0]}" for k, v in splits.items()))


def evaluate(model, data: dict[str, Any], device, step: int, batch_size: int = 50) -> dict[str, float]:
    import torch

    model.eval()
    sums: dict[str, float] = {}
    n = data["image"].shape[0]
    with torch.no_grad():
        for i in range(0, n, batch_size):
            batch = {"image": data["image"][i : i + batch_size].to(device).float() / 255,
                     "mask": data["mask"][i : i + batch_size].to(device).long(),
                     "index": torch.arange(i, min(i + batch_size, n), device=device)}
            out = model.family.run(model, batch, step, chunk_rays=4096)
            sums["loss"] = sums.get("loss", 0.0) + float(out.loss) * batch["index"].shape[0]  # plateau schedules watch it
            for name, values in model.family.metrics(batch, out).items():
                if name in ("fg_ari", "ari", "miou", "mse", "mbo"):
                    values = values.float()
                    sums[name] = sums.get(name, 0.0) + float(values[torch.isfinite(values)].sum())
    model.train()
    return {k: round(v / n, 5) for k, v in sums.items()}


def one(model_name: str, data_path: Path, device: str, seconds: float, eval_seconds: float, overrides: list[str],
        out: Path, options: list[str] = ()) -> None:
    """Train one model for ``seconds`` of wall time, evaluating on the validation split every
    ``eval_seconds``; the record is rewritten after every point, so a cut-off run keeps its curve."""
    import torch

    from objdisc.models import MODELS, model_config, param_count
    from objdisc.train.optim import Optimisation
    from objdisc.train.step import train_step

    record: dict[str, Any] = {"model": model_name, "overrides": overrides, "options": list(options), "device": device, "curve": []}

    def save() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(out)

    try:
        params = sprites_params(model_name, overrides, options)
        cfg = params.training
        torch.manual_seed(params.seed)
        dev = torch.device(device)
        if dev.type == "cpu" and cfg.threads:
            torch.set_num_threads(cfg.threads)
        data = torch.load(data_path, weights_only=True)
        train = {k: v.to(dev) for k, v in data["train"].items()}
        model = MODELS[model_name].model(model_config(params.model, params.model_options, params.data_inputs)).to(dev)
        optim = Optimisation(model.optimizers(cfg), cfg, model)
        record.update(preset=params.models[model_name].get("preset"), parameters=param_count(model),
                      batch_size=cfg.batch_size, configured_steps=cfg.steps, torch=torch.__version__,
                      gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None)
        g = torch.Generator(device=dev).manual_seed(params.seed)
        n = train["image"].shape[0]
        step, train_s, next_eval = 0, 0.0, eval_seconds
        record["curve"].append({"step": 0, "train_s": 0.0, **evaluate(model, data["val"], dev, 0)})
        save()
        while train_s < seconds:
            t0 = time.perf_counter()
            idx = torch.randint(0, n, (cfg.batch_size,), generator=g, device=dev)
            batch = {"image": train["image"][idx].float() / 255, "mask": train["mask"][idx].long(), "index": idx}
            train_step(model, model, batch, optim, step, precision="fp32", grad_clip=cfg.grad_clip)
            step += 1
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            train_s += time.perf_counter() - t0
            if train_s >= next_eval or train_s >= seconds:
                scores = evaluate(model, data["val"], dev, step)
                optim.on_validation(scores)  # plateau schedules (SPAIR) see the validation scores as in training
                record["curve"].append({"step": step, "train_s": round(train_s, 1), **scores})
                record["step_s"] = round(train_s / step, 5)
                save()
                next_eval += eval_seconds
        record["test"] = evaluate(model, data["test"], dev, step)
    except Exception:  # one model's failure must not lose the others' curves
        record["error"] = traceback.format_exc()[-3000:]
    save()


def run(args: argparse.Namespace) -> None:
    """Every model in its own process, all at once (small models leave a GPU mostly idle). Their
    records are gathered into the one ``--out`` file every few seconds: a machine that returns
    only a few files, or a run cut off by a time limit, still gives every curve so far."""
    import tempfile

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = Path(tempfile.mkdtemp(prefix="zoo-curves-"))
    models = MODELS_2D if args.models == "all" else tuple(args.models.split(","))
    procs = []
    for name in models:
        cmd = [sys.executable, __file__, "one", name, "--data", args.data, "--device", args.device,
               "--seconds", str(args.seconds), "--eval-seconds", str(args.eval_seconds), "--out", str(parts / f"{name}.json")]
        for override in args.set or []:
            cmd += ["--set", override]
        for option in args.option or []:
            cmd += ["--option", option]
        procs.append((name, subprocess.Popen(cmd)))

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
    e.add_argument("--work", default=str(ROOT / "data" / "zoo"))
    e.add_argument("--out", default=str(DATA))
    for name in ("run", "one"):
        r = sub.add_parser(name)
        if name == "one":
            r.add_argument("model")
        else:
            r.add_argument("--models", default="all", help="comma list, or all: " + ",".join(MODELS_2D))
        r.add_argument("--data", default=str(DATA))
        r.add_argument("--device", default="cpu")
        r.add_argument("--seconds", type=float, default=170.0, help="training wall time per model")
        r.add_argument("--eval-seconds", type=float, default=15.0, help="training seconds between validations")
        r.add_argument("--set", action="append", help="params override (key=value), repeatable")
        r.add_argument("--option", action="append", help="a field of the model's config (field=YAML value), repeatable")
        r.add_argument("--out", required=True, help="run: the one JSON of every curve; one: the model's record")
    m = sub.add_parser("merge", help="one JSON of every model's curve, with the CPU budget each needs")
    m.add_argument("source", help="the --out file of run (or a folder of per-model records)")
    m.add_argument("--out")
    args = p.parse_args()
    if args.command == "export":
        export(Path(args.work), Path(args.out))
    elif args.command == "run":
        run(args)
    elif args.command == "one":
        one(args.model, Path(args.data), args.device, args.seconds, args.eval_seconds, args.set or [], Path(args.out),
            args.option or [])
    else:
        merge(Path(args.source), Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
