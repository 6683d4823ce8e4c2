"""Evaluate a trained model on a split: metrics.json (DVC metrics), per-scene and per-object tables,
per-tag means, pictures.

What is measured and drawn is the model's family's (``objdisc.models.family``): image models get
ARI, FG-ARI, mIoU (foreground, ClevrTex convention), mBO, SC, count accuracy, MSE and PSNR of the
reconstruction (object-only masks with their background channel 1 − Σ masks); scene models render
every target view whole, in chunks of rays, and compare it with the truth: PSNR per scene then the
mean over scenes (srt/osrt convention), and for slot models the FG-ARI and ARI of the rendered
segmentation against the true masks. The picture is the model's own (``Model.picture``).

Image models on datasets with masks also get the rest of the ClevrTex benchmark evaluator
(karazijal/clevrtex), computed at the model's resolution after the crop, as the evaluator sees it:

* per true object present in the image: its masked SSE (the true mask applied to both images) and
  the IoU with the prediction the Hungarian matching gives it, tagged with the scene's object
  attributes (``object_tags``: material, shape, size; colour where it means something); the same
  for the ground (mask id 0), tagged with the ground material where the source has one;
* object counts: true objects, predicted segments less the background (``acc`` is their match),
  and for glimpse models the presence count Σ round(z_pres).

Files in ``out_dir``:

* ``scenes.csv``: one row per scene: its position, key and location, every metric, ``ground_mse``,
  ``ground_iou`` and the scene's mean ``obj_mse`` / ``obj_iou`` over its objects, the counts;
* ``objects.csv``: one row per true object present (and one for the ground) with its tags;
* ``tags.csv``: per statistic (``obj_iou``, ``obj_mse``, ``ground_iou``, ``ground_mse``), tag and
  value the mean over objects, sorted ascending by mean as the evaluator's ``statistic(name, tag)``;
  ``tags.png`` draws it (which materials and shapes the model fails on);
* ``metrics.json``: the mean over scenes of every column of scenes.csv, except ``obj_mse`` and
  ``obj_iou``, which are means over all objects (the evaluator weighs each object once);
* ``slots.png``: the model's picture of the first scenes.
"""

from __future__ import annotations

import copy
import csv
import functools
import json
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from objdisc import metrics, viz
from objdisc.config import EvaluateConfig
from objdisc.io import atomic_write, write_json
from objdisc.data.loading import EvalSampler, SceneDataset, make_loader
from objdisc.models.base import Model
from objdisc.train.step import to_device

# Object attributes used as tags, in this order (the benchmark loader keeps material, shape, size
# and, on vbg only, colour; CLEVR with masks stores them as integer codes).
TAG_KEYS = ("material", "shape", "size", "color")
GROUND_TAG = "ground_material"
STATISTICS = ("obj_iou", "obj_mse", "ground_iou", "ground_mse")
INFO = "scene_info"  # the batch key that carries each scene's objects and meta (JSON text)


@torch.no_grad()
def evaluate(
    model: Model,
    dataset: SceneDataset,
    cfg: EvaluateConfig,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
    step: int = 0,
) -> dict[str, float]:
    """Evaluate ``model`` (EMA weights already loaded, trained for ``step`` steps) on ``dataset``;
    write results to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    model.to(device).eval()
    torch.manual_seed(0)  # slot initialisation noise: evaluation is deterministic
    family = model.family
    batch_size = family.eval_batch_size(cfg.batch_size)
    per_object = family.name == "image"
    source = with_scene_info(dataset) if per_object else dataset
    loader = make_loader(source, batch_size, EvalSampler(len(dataset), limit=cfg.max_scenes))
    rows: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    grids = []
    shown = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
        infos = batch.pop(INFO, None)
        batch = to_device(batch, device)
        out = family.run(model, batch, step, cfg.chunk_rays)
        scores = family.metrics(batch, out)
        stats = None
        if per_object and "mask" in batch and out.masks is not None and out.recon is not None:
            masks = out.masks.float()
            stats = metrics.object_statistics(
                out.recon.float().clamp(0, 1), batch["image"], batch["mask"], masks, out.masks_have_background
            )
            scores.update(metrics.count_metrics(batch["mask"], masks, out.masks_have_background, out.presence))
        for b, position in enumerate(batch["index"].tolist()):
            shard, offset = dataset.locations[position]
            row: dict[str, Any] = {"position": position, "key": dataset.keys[position], "shard": shard, "offset": offset}
            row.update({name: float(values[b]) for name, values in scores.items()})
            if stats is not None:
                info = json.loads(infos[b]) if infos is not None else {}
                found = object_rows(info, {k: v[b].tolist() for k, v in stats.items()})
                for item in found:
                    item.update(position=position, key=row["key"])
                objects.extend(found)
                row.update(scene_object_means(found))
            rows.append(row)
        if shown < cfg.pictures:
            grids.append(model.picture(batch, out, limit=cfg.pictures - shown))
            shown += min(cfg.pictures - shown, batch["index"].shape[0])
    if not rows:
        raise ValueError("evaluation split is empty")
    names = [k for k in rows[0] if k not in ("position", "key", "shard", "offset")]
    summary: dict[str, float] = {"scenes": len(rows)}
    for name in names:
        values = np.array([r.get(name, math.nan) for r in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[name] = float(finite.mean()) if finite.size else math.nan
    for name in ("obj_mse", "obj_iou"):  # the evaluator's running mean weighs every object once
        values = [o[name[4:]] for o in objects if o["kind"] == "object"]
        if name in summary:
            summary[name] = float(np.mean(values)) if values else math.nan
    tags = tag_means(objects)
    write_csv(out_dir / "scenes.csv", rows)
    write_csv(out_dir / "objects.csv", [_object_record(o) for o in objects], OBJECT_COLUMNS + _tag_columns(objects))
    write_csv(out_dir / "tags.csv", tags, TAG_COLUMNS)
    viz.save_png(out_dir / "tags.png", tag_chart(tags))
    write_json(out_dir / "metrics.json", summary)
    if grids:
        width = max(g.shape[1] for g in grids)
        grids = [np.pad(g, ((0, 0), (0, width - g.shape[1]), (0, 0)), constant_values=255) for g in grids]
        viz.save_png(out_dir / "slots.png", np.concatenate(grids, axis=0))
    message = below_image_blind_floor(summary)
    if message:
        warnings.warn(message + (f" (look at {out_dir / 'slots.png'})" if grids else ""), stacklevel=2)
    return summary


def below_image_blind_floor(summary: dict[str, float]) -> str | None:
    """One line when the mean FG-ARI is below ``fg_ari_fixed_cells``, the FG-ARI of the image cut
    into as many fixed cells as the model has segments, the same cells for every image; else None.

    A segmentation under that floor has not bound to objects, whatever its number says: a run whose
    slots tile the image into position-bound cells (Slot Attention does this at some seeds) scores
    FG-ARI 0.25-0.30 on the synthetic scenes where the fixed cells score 0.53. Without this line a
    researcher reads "0.30" as "learning, slowly"."""
    fg_ari, floor = summary.get("fg_ari"), summary.get("fg_ari_fixed_cells")
    if fg_ari is None or floor is None or not (math.isfinite(fg_ari) and math.isfinite(floor)) or fg_ari >= floor:
        return None
    return (
        f"FG-ARI {fg_ari:.3f} is below {floor:.3f}, what fixed cells that never look at the image score "
        "(fg_ari_fixed_cells): the segments have not found the objects. Try another seed or more steps"
    )


# ----------------------------------------------------------------------------- scene information


def _attach_info(scene: dict[str, Any], generator: torch.Generator | None, *, transform) -> dict[str, Any]:
    sample = transform(scene, generator)
    sample[INFO] = json.dumps({"objects": scene.get("objects", []), "meta": scene.get("meta", {})})
    return sample


def with_scene_info(dataset: SceneDataset) -> SceneDataset:
    """A view of ``dataset`` whose samples also carry the scene's ``objects`` and ``meta`` (as JSON
    text, batched as a list), read with the scene itself: no second decode."""
    view = copy.copy(dataset)
    view.transform = functools.partial(_attach_info, transform=dataset.transform)
    return view


def _tag_value(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (str, int, float)):
        return str(value)
    return None  # lists (sprite colours, coordinates) are not tags


def object_tags(obj: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
    """The tags of one object: its ``material``, ``shape``, ``size`` and ``color`` where the
    source has them as scalars; ClevrTex's colour only on ``vbg`` (on the textured variants it
    means nothing, and the benchmark loader drops it)."""
    keys = TAG_KEYS
    if meta.get("source") == "clevrtex" and meta.get("variant") != "vbg":
        keys = tuple(k for k in keys if k != "color")
    tags = {}
    for key in keys:
        value = _tag_value(obj.get(key))
        if value is not None:
            tags[key] = value
    return tags


def object_rows(info: dict[str, Any], stats: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One scene's per-object records from its per-label statistics (``mse``, ``iou``, ``area``
    lists indexed by mask id): the ground (id 0, always, as the evaluator adds it) and every true
    object whose mask is non-empty in the evaluated image. Objects are matched to mask ids by
    their ``id``; an id in the mask that the metadata lacks is reported untagged."""
    meta = info.get("meta") or {}
    by_id = {int(o["id"]): o for o in info.get("objects") or [] if isinstance(o, dict) and "id" in o}
    ground = _tag_value(meta.get(GROUND_TAG))
    rows = [{
        "kind": "ground", "id": 0, "area": int(stats["area"][0]), "mse": stats["mse"][0], "iou": stats["iou"][0],
        "tags": {GROUND_TAG: ground} if ground is not None else {},
    }]
    for k in range(1, len(stats["area"])):
        if stats["area"][k] <= 0:
            continue
        tags = object_tags(by_id[k], meta) if k in by_id else {}
        rows.append({"kind": "object", "id": k, "area": int(stats["area"][k]), "mse": stats["mse"][k],
                     "iou": stats["iou"][k], "tags": tags})
    return rows


def scene_object_means(found: list[dict[str, Any]]) -> dict[str, float]:
    """The scene's ``ground_mse``, ``ground_iou`` and the mean ``obj_mse`` / ``obj_iou`` over its
    objects (NaN without visible objects)."""
    ground = next(o for o in found if o["kind"] == "ground")
    objs = [o for o in found if o["kind"] == "object"]
    return {
        "ground_mse": float(ground["mse"]),
        "ground_iou": float(ground["iou"]),
        "obj_mse": float(np.mean([o["mse"] for o in objs])) if objs else math.nan,
        "obj_iou": float(np.mean([o["iou"] for o in objs])) if objs else math.nan,
    }


# ----------------------------------------------------------------------------- per-tag means

OBJECT_COLUMNS = ["position", "key", "kind", "id", "area", "mse", "iou"]
TAG_COLUMNS = ["statistic", "tag", "value", "mean", "count"]


def _tag_columns(objects: list[dict[str, Any]]) -> list[str]:
    present = {k for o in objects for k in o["tags"]}
    return [k for k in (GROUND_TAG, *TAG_KEYS) if k in present]


def _object_record(o: dict[str, Any]) -> dict[str, Any]:
    return {**{k: o[k] for k in OBJECT_COLUMNS}, **o["tags"]}


def tag_means(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-tag means of the per-object statistics: ``obj_iou`` / ``obj_mse`` by every object tag,
    ``ground_iou`` / ``ground_mse`` by ground material. Rows (statistic, tag, value, mean, count),
    grouped by statistic and tag, each group sorted ascending by mean (ties by value)."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for o in objects:
        prefix = "obj" if o["kind"] == "object" else "ground"
        for tag, value in o["tags"].items():
            for stat in ("iou", "mse"):
                groups[(f"{prefix}_{stat}", tag)][value].append(float(o[stat]))
    rows = []
    order = {s: i for i, s in enumerate(STATISTICS)}
    tag_order = {t: i for i, t in enumerate((GROUND_TAG, *TAG_KEYS))}
    for statistic, tag in sorted(groups, key=lambda st: (order[st[0]], tag_order.get(st[1], 99), st[1])):
        means = [(value, float(np.mean(v)), len(v)) for value, v in groups[(statistic, tag)].items()]
        for value, mean, count in sorted(means, key=lambda x: (x[1], x[0])):
            rows.append({"statistic": statistic, "tag": tag, "value": value, "mean": mean, "count": count})
    return rows


def tag_chart(tags: list[dict[str, Any]], width: int = 560) -> np.ndarray:
    """Sorted horizontal bars of ``tag_means`` rows: one panel per (statistic, tag), IoU panels
    first; each bar is the mean (IoU on [0, 1], MSE scaled to the panel's largest) with its value
    and object count. A white image with a note when there are no tags."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line, pad = 14, 6
    panels: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in tags:
        panels.setdefault((row["statistic"], row["tag"]), []).append(row)
    if not panels:
        img = Image.new("RGB", (width, 2 * line + 2 * pad), "white")
        ImageDraw.Draw(img).text((pad, pad), "no per-object tags in this evaluation", fill=(0, 0, 0), font=font)
        return np.asarray(img)
    height = sum((len(rows) + 1) * line + 2 * pad for rows in panels.values())
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    label_w = min(200, max(int(font.getlength(str(r["value"]))) for r in tags) + 2 * pad)
    bar_w = width - label_w - 110
    y = 0
    for (statistic, tag), rows in panels.items():
        draw.text((pad, y + pad), f"{statistic} by {tag} (mean, sorted ascending)", fill=(0, 0, 0), font=font)
        y += line + pad
        scale = 1.0 if statistic.endswith("iou") else max((r["mean"] for r in rows), default=1.0) or 1.0
        colour = (70, 130, 180) if statistic.endswith("iou") else (205, 120, 60)
        for r in rows:
            text = str(r["value"])
            if font.getlength(text) > label_w - pad:
                while text and font.getlength(text + "…") > label_w - pad:
                    text = text[:-1]
                text += "…"
            draw.text((pad, y + 1), text, fill=(0, 0, 0), font=font)
            length = int(bar_w * max(0.0, min(1.0, r["mean"] / scale))) if math.isfinite(r["mean"]) else 0
            draw.rectangle([label_w, y + 2, label_w + max(length, 1), y + line - 2], fill=colour)
            draw.text((label_w + length + 4, y + 1), f"{r['mean']:.3g}  (n={r['count']})", fill=(0, 0, 0), font=font)
            y += line
        y += pad
    return np.asarray(img)


# ----------------------------------------------------------------------------- files


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Rows as CSV with a header (``columns``, or the union of the rows' keys in first-seen order);
    a missing value is empty. No rows: the header only."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
