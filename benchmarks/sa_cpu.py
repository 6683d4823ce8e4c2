"""What moves the CPU step time of the default Slot Attention: one table, one JSON.

Each variant trains the same fixed batch with the loop's own ``train_step`` (``objdisc.train.step``)
and reports the mean step time after a warm-up, all in one process, one after another, so that the
ratios between them are measured under the same load. Variants (each on top of the params.yaml
default at the sprites and synth image sizes):

* torch threads 1 and 2 (``train.threads``: the default uses both cores);
* ``decoder_resolution`` (decoding each slot at 32² and resizing, against decoding at the image size);
* channels-last memory for the convolutions;
* ``torch.compile`` of the model (the default inductor backend; compile time reported apart);
* batch 16 against 32.

    python benchmarks/sa_cpu.py                      # → benchmarks/results/sa-cpu.json
    python benchmarks/sa_cpu.py --tiny               # smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from typing import Any

from _common import ROOT, machine_info, write_json


def build(options: dict[str, Any], size: int, slots: int):
    from objdisc.models import build_model

    return build_model("slot_attention", options, {"image_size": size, "num_slots": slots})


def time_steps(model, batch_size: int, size: int, steps: int, warmup: int, *, compile_model: bool = False,
               channels_last: bool = False) -> dict[str, float]:
    import torch

    from objdisc.config import TrainConfig
    from objdisc.train.optim import Optimisation
    from objdisc.train.step import train_step

    torch.manual_seed(0)
    batch = {"image": torch.rand(batch_size, 3, size, size)}
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    train = TrainConfig(warmup_steps=0)
    optim = Optimisation(model.optimizers(train), train, model)
    net = torch.compile(model) if compile_model else model
    t0 = time.perf_counter()
    train_step(net, model, batch, optim, 0)  # the first step includes compilation
    first = time.perf_counter() - t0
    for i in range(warmup):
        train_step(net, model, batch, optim, i + 1)
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(net, model, batch, optim, warmup + i + 1)
    return {"step_s": round((time.perf_counter() - t0) / steps, 4), "first_step_s": round(first, 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sa-cpu.json"))
    args = p.parse_args(argv)
    import torch

    from objdisc.config import load_params

    params = load_params(ROOT / "params.yaml")
    # The baseline is the default without channels-last memory (the default turns it on since this
    # benchmark measured it), so that each variant is one change against the same plain model.
    base = {k: v for k, v in params.models["slot_attention"].items() if k != "train"} | {"channels_last": False}
    batch = params.train.batch_size
    settings = [("sprites", 64, 6), ("synth", 32, 7)]
    if args.tiny:
        args.steps, args.warmup, batch, settings = 1, 0, 2, [("tiny", 16, 3)]
    rows = []
    for name, size, slots in settings:
        variants = [
            ("plain (contiguous NCHW), 2 threads", base, {"threads": 2}),
            ("plain, 1 thread", base, {"threads": 1}),
            ("decoder at the image size", {**base, "decoder_resolution": None}, {"threads": 2}),
            ("channels-last (params.yaml default)", {**base, "channels_last": True}, {"threads": 2}),
            ("torch.compile", base, {"threads": 2, "compile_model": True}),
            ("batch 16", base, {"threads": 2, "batch_size": batch // 2}),
        ]
        for label, options, how in variants:
            how = dict(how)
            torch.set_num_threads(how.pop("threads"))
            batch_size = how.pop("batch_size", batch)
            print(f"[sa_cpu] {name} {label} ...", file=sys.stderr, flush=True)
            try:
                model = build(copy.deepcopy(options), size, slots)
                result = time_steps(model, batch_size, size, args.steps, args.warmup, **how)
            except Exception as err:  # noqa: BLE001 - e.g. torch.compile without a compiler: a result
                result = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            rows.append({"dataset": name, "size": size, "slots": slots, "variant": label, "batch": batch_size, **result})
            print(f"[sa_cpu]   {result}", file=sys.stderr, flush=True)
    torch.set_num_threads(os.cpu_count() or 1)
    for name, *_ in settings:
        ref = next(r for r in rows if r["dataset"] == name and r["variant"].startswith("plain ("))
        for r in rows:
            if r["dataset"] == name and "step_s" in r and "step_s" in ref:
                r["vs_plain"] = round(r["step_s"] / ref["step_s"], 3)
    report = {"benchmark": "sa-cpu", "machine": machine_info(), "torch": torch.__version__,
              "settings": {"steps": args.steps, "warmup": args.warmup, "model": base}, "rows": rows}
    write_json(args.out, report)
    print(f"wrote {args.out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
