"""objdisc.evaluate: the ClevrTex evaluator's per-object statistics, tags and per-tag means, the
files an evaluation writes, and evaluation on another dataset than the training one."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from objdisc import evaluate as E
from objdisc.config import EvaluateConfig, ImageConfig
from objdisc.data.index import load_index
from objdisc.data.loading import SceneDataset
from objdisc.models.base import Model, ModelOutput
from objdisc.models.family import image_transform

import functools
import math


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- tags


def test_object_tags_follow_the_benchmark_loader():
    obj = {"id": 1, "visible": True, "shape": "cube", "size": 0.6, "rotation": 10.0, "3d_coords": [0, 1, 2],
           "pixel_coords": [1, 2, 3.0], "index": 0, "color": "red", "material": "Metal"}
    # Textured variants: colour means nothing (the benchmark loader drops it); rotation never a tag.
    assert E.object_tags(obj, {"source": "clevrtex", "variant": "full"}) == {"material": "Metal", "shape": "cube", "size": "0.6"}
    assert E.object_tags(obj, {"source": "clevrtex", "variant": "vbg"})["color"] == "red"
    # CLEVR with masks: integer codes; sprites: float codes, list colours are no tag.
    assert E.object_tags({"id": 2, "size": 1, "material": 2, "shape": 3, "color": 7}, {"source": "clevr-with-masks"}) == {
        "material": "2", "shape": "3", "size": "1", "color": "7"}
    assert E.object_tags({"id": 1, "shape": 2.0, "color": [0.1, 0.2, 0.3], "scale": 0.7}, {"source": "multi-dsprites"}) == {"shape": "2"}


def test_object_rows_keep_present_objects_and_always_the_ground():
    info = {"meta": {"source": "clevrtex", "variant": "full", "ground_material": "Wood"},
            "objects": [{"id": 1, "material": "Metal", "shape": "cube", "size": 0.4},
                        {"id": 2, "material": "Rubber", "shape": "sphere", "size": 0.9}]}
    stats = {"mse": [5.0, 1.0, 2.0, 3.0], "iou": [0.9, 0.5, 0.0, 0.25], "area": [50, 10, 0, 4]}
    rows = E.object_rows(info, stats)
    assert [(r["kind"], r["id"]) for r in rows] == [("ground", 0), ("object", 1), ("object", 3)]  # 2 is cropped away
    assert rows[0]["tags"] == {"ground_material": "Wood"}
    assert rows[1]["tags"] == {"material": "Metal", "shape": "cube", "size": "0.4"}
    assert rows[2]["tags"] == {}  # id 3 is in the mask but not in the metadata: reported untagged
    means = E.scene_object_means(rows)
    assert means == {"ground_mse": 5.0, "ground_iou": 0.9, "obj_mse": 2.0, "obj_iou": 0.375}


def test_tag_means_are_sorted_ascending_per_statistic_and_tag():
    objects = [
        {"kind": "ground", "mse": 4.0, "iou": 0.8, "tags": {"ground_material": "Wood"}},
        {"kind": "ground", "mse": 2.0, "iou": 0.6, "tags": {"ground_material": "Wood"}},
        {"kind": "ground", "mse": 1.0, "iou": 0.9, "tags": {"ground_material": "Stone"}},
        {"kind": "object", "mse": 1.0, "iou": 0.2, "tags": {"material": "Metal", "shape": "cube"}},
        {"kind": "object", "mse": 3.0, "iou": 0.6, "tags": {"material": "Metal", "shape": "sphere"}},
        {"kind": "object", "mse": 5.0, "iou": 0.1, "tags": {"material": "Rubber", "shape": "cube"}},
    ]
    rows = E.tag_means(objects)
    got = [(r["statistic"], r["tag"], r["value"], round(r["mean"], 6), r["count"]) for r in rows]
    assert got == [
        ("obj_iou", "material", "Rubber", 0.1, 1), ("obj_iou", "material", "Metal", 0.4, 2),
        ("obj_iou", "shape", "cube", 0.15, 2), ("obj_iou", "shape", "sphere", 0.6, 1),
        ("obj_mse", "material", "Metal", 2.0, 2), ("obj_mse", "material", "Rubber", 5.0, 1),
        ("obj_mse", "shape", "cube", 3.0, 2), ("obj_mse", "shape", "sphere", 3.0, 1),  # a tie: by value
        ("ground_iou", "ground_material", "Wood", 0.7, 2), ("ground_iou", "ground_material", "Stone", 0.9, 1),
        ("ground_mse", "ground_material", "Stone", 1.0, 1), ("ground_mse", "ground_material", "Wood", 3.0, 2),
    ]
    chart = E.tag_chart(rows)
    assert chart.dtype == np.uint8 and chart.ndim == 3 and chart.shape[0] > 100
    assert E.tag_chart([]).shape[0] > 0  # no tags: a note, still a picture


# ----------------------------------------------------------------------------- evaluate()


@dataclass
class FixedConfig:
    object_only: bool = False


class Fixed(Model):
    """A fixed prediction: grey image, and the true segmentation with objects 1 and 2 merged
    (object-only masks when asked, with a presence per slot)."""

    def __init__(self, cfg: FixedConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FixedConfig()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch, step=0):
        ids = batch["mask"].clone()
        ids[ids == 2] = 1
        masks = torch.nn.functional.one_hot(ids.clamp_max(5), 6).permute(0, 3, 1, 2).float()
        presence = None
        if self.cfg.object_only:
            masks, presence = masks[:, 1:], (masks[:, 1:].flatten(2).amax(-1) > 0).float()
        recon = torch.full_like(batch["image"], 0.5)
        return ModelOutput(loss=self.dummy.sum(), recon=recon, masks=masks,
                           masks_have_background=not self.cfg.object_only, presence=presence)


def synth_dataset(synth_shards, size: int = 16) -> SceneDataset:
    shards, index_path = synth_shards
    transform = functools.partial(image_transform, cfg=ImageConfig(center_crop=1.0, size=size), train=False)
    return SceneDataset(shards, load_index(index_path), "test", transform)


@pytest.mark.parametrize("object_only", [False, True])
def test_evaluate_writes_per_scene_per_object_and_per_tag_tables(synth_shards, tmp_path, object_only):
    dataset = synth_dataset(synth_shards)
    summary = E.evaluate(Fixed(FixedConfig(object_only)), dataset, EvaluateConfig(batch_size=3, pictures=2), tmp_path, progress=False)
    for name in ("metrics.json", "scenes.csv", "objects.csv", "tags.csv", "tags.png", "slots.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    scenes = read_csv(tmp_path / "scenes.csv")
    objects = read_csv(tmp_path / "objects.csv")
    tags = read_csv(tmp_path / "tags.csv")
    assert len(scenes) == len(dataset) == summary["scenes"]
    assert [s["key"] for s in scenes] == dataset.keys
    for column in ("ground_mse", "ground_iou", "obj_mse", "obj_iou", "count_true", "count_pred", "acc", "miou", "mse_sum"):
        assert column in scenes[0], column
    # The object-only model gets the same argmax (background 1 − Σ masks), hence the same scores.
    assert ("count_presence" in scenes[0]) == object_only
    objs = [o for o in objects if o["kind"] == "object"]
    assert summary["obj_iou"] == pytest.approx(np.mean([float(o["iou"]) for o in objs]))  # pooled over objects
    assert summary["ground_iou"] == pytest.approx(np.mean([float(s["ground_iou"]) for s in scenes]))
    # Objects 1 and 2 merged into one segment: the matching gives it to one of them; every other
    # object is predicted exactly, and its masked SSE is its area × 3 channels × (0.5 − true)².
    for o in objs:
        if o["id"] not in ("1", "2"):
            assert float(o["iou"]) == 1.0
    per_scene = {}
    for o in objs:
        per_scene.setdefault(o["key"], []).append(o)
    for s in scenes:
        assert float(s["count_true"]) == len(per_scene.get(s["key"], []))
    assert {t["tag"] for t in tags} <= {"material", "shape", "size", "color", "ground_material"}
    assert {"obj_iou", "obj_mse"} <= {t["statistic"] for t in tags}
    counts = {}
    for o in objs:
        counts[o["shape"]] = counts.get(o["shape"], 0) + 1
    assert {t["value"]: int(t["count"]) for t in tags if t["statistic"] == "obj_iou" and t["tag"] == "shape"} == counts
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["obj_iou"] == pytest.approx(summary["obj_iou"])


def test_masked_sse_in_evaluate_matches_a_hand_computation(synth_shards, tmp_path):
    dataset = synth_dataset(synth_shards)
    E.evaluate(Fixed(), dataset, EvaluateConfig(batch_size=4, pictures=0), tmp_path, progress=False)
    objects = read_csv(tmp_path / "objects.csv")
    for position in range(len(dataset)):
        sample = dataset[position]
        err = ((sample["image"].double() - 0.5) ** 2).sum(0)
        for o in [o for o in objects if int(o["position"]) == position]:
            region = sample["mask"] == int(o["id"])
            assert float(o["mse"]) == pytest.approx(float(err[region].sum()), rel=1e-9)
            assert int(o["area"]) == int(region.sum())


# ----------------------------------------------------------------------------- the image-blind floor


def test_below_image_blind_floor_names_both_numbers_only_when_below():
    line = E.below_image_blind_floor({"fg_ari": 0.30, "fg_ari_fixed_cells": 0.53})
    assert "0.300" in line and "0.530" in line and "fg_ari_fixed_cells" in line
    assert E.below_image_blind_floor({"fg_ari": 0.78, "fg_ari_fixed_cells": 0.53}) is None
    assert E.below_image_blind_floor({"fg_ari": 0.53, "fg_ari_fixed_cells": 0.53}) is None
    assert E.below_image_blind_floor({"psnr": 20.0}) is None  # no masks, no floor
    assert E.below_image_blind_floor({"fg_ari": math.nan, "fg_ari_fixed_cells": 0.5}) is None


class OneSegment(Fixed):
    """Every pixel in one segment: no object is told from another."""

    def forward(self, batch, step=0):
        out = super().forward(batch, step)
        masks = torch.zeros_like(out.masks)
        masks[:, 0] = 1.0
        out.masks = masks
        return out


def test_evaluate_warns_below_the_image_blind_floor_and_not_above(synth_shards, tmp_path, recwarn):
    dataset = synth_dataset(synth_shards)
    good = E.evaluate(Fixed(), dataset, EvaluateConfig(batch_size=4, pictures=0), tmp_path / "good", progress=False)
    assert good["fg_ari"] > good["fg_ari_fixed_cells"]
    assert not [w for w in recwarn if "never look at the image" in str(w.message)]
    with pytest.warns(UserWarning, match="never look at the image") as caught:
        blind = E.evaluate(OneSegment(), dataset, EvaluateConfig(batch_size=4, pictures=2), tmp_path / "blind", progress=False)
    assert blind["fg_ari"] < blind["fg_ari_fixed_cells"]
    assert str(tmp_path / "blind" / "slots.png") in str(caught[0].message)
