"""How long SLATE's autoregressive reconstruction of one 128×128 image takes (the hhousen preset:
32×32 = 1,024 tokens, greedy decoding of every token from the slots).

Two decoders are timed on the same untrained model and slots: ``generate`` (one batched
single-token pass per position with keys and values cached, what evaluation uses) and
``generate_naive`` (the whole prefix through the decoder at every position, as the reference
decodes), whose cost grows with the square of the number of tokens. The naive one is timed on the
first ``--naive-tokens`` positions only and extrapolated to all of them by that square law.

    python benchmarks/slate_decode.py                  # CPU → benchmarks/results/slate-decode-cpu.json
    python benchmarks/slate_decode.py --device cuda    # → slate-decode-<gpu>.json
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import _common
from _common import ROOT, machine_info, write_json


def timed(fn, device, repeats: int) -> float:
    import torch

    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--naive-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="the cpu preset (64², 256 tokens): checks the script runs")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    import torch

    from objdisc.models.slate import PRESETS, SLATE

    device = torch.device(args.device)
    torch.manual_seed(0)
    preset = "cpu" if args.tiny else "hhousen"
    model = SLATE(PRESETS[preset]).to(device).eval()
    cfg = model.cfg
    image = torch.rand(args.batch, 3, cfg.resolution, cfg.resolution, device=device)
    with torch.no_grad():
        tokens = model.dvae.encode(image).argmax(1).flatten(1)
        _, slots, _ = model.encode_slots(tokens)
    n = cfg.num_tokens
    naive_n = min(args.naive_tokens, n)
    model.generate(slots, 8)  # warm-up (allocator, kernels)
    cached = timed(lambda: model.generate(slots), device, args.repeats)
    naive_part = timed(lambda: model.generate_naive(slots, naive_n), device, 1)
    with torch.no_grad():
        same = bool(torch.equal(model.generate(slots, naive_n), model.generate_naive(slots, naive_n)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {
        "benchmark": "slate-decode", "machine": machine_info(), "libraries": _common.library_info(),
        "device": name, "torch_threads": torch.get_num_threads(), "preset": preset,
        "resolution": cfg.resolution, "tokens": n, "batch": args.batch,
        "cached_decode_s": round(cached, 4),
        "naive_decode_s_first_tokens": round(naive_part, 4), "naive_tokens_timed": naive_n,
        "naive_decode_s_extrapolated": round(naive_part * (n / naive_n) ** 2, 2),
        "same_tokens": same,
    }
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = args.out or str(ROOT / "benchmarks" / "results" / f"slate-decode-{slug}.json")
    write_json(out, report)
    print(f"cached {cached:.3f} s for {n} tokens; naive ≈ {report['naive_decode_s_extrapolated']} s; "
          f"same tokens: {same} → {out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
