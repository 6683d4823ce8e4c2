"""The sprites generator: deterministic, valid scenes, and files the multi-dsprites source reads
exactly as ``render_sprites`` draws them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from objdisc.data.sources import get_source
from objdisc.data.sources.multi_object import MULTI_DSPRITES
from objdisc.data.sprites import (
    _CENTRES,
    SHAPES,
    SpritesConfig,
    _inside,
    generate,
    rasterise,
    render_sprites,
)
from objdisc.data.tfrecord import iter_records

BACKGROUNDS = {"grayscale": "colored_on_grayscale", "colored": "colored_on_colored"}


@pytest.fixture(scope="module", params=list(BACKGROUNDS))
def generated(request, tmp_path_factory) -> tuple[SpritesConfig, Path]:
    background = request.param
    cfg = SpritesConfig(scenes=6, background=background, max_objects=5 if background == "grayscale" else 4, seed=4)
    out = generate(cfg, tmp_path_factory.mktemp(background), progress=False)
    return cfg, out


def test_files_and_determinism(generated, tmp_path: Path):
    cfg, out = generated
    layout = MULTI_DSPRITES[BACKGROUNDS[cfg.background]]
    assert sorted(p.name for p in out.iterdir()) == sorted([layout.file, "sprites.json"])
    assert (out / layout.file).read_bytes()[:2] == b"\x1f\x8b"  # GZIP, as DeepMind's files
    info = json.loads((out / "sprites.json").read_text())
    assert SpritesConfig(**info["config"]) == cfg
    assert info["variant"] == BACKGROUNDS[cfg.background] and info["entities"] == layout.entities
    assert info["shapes"] == {str(i + 1): name for i, name in enumerate(SHAPES)}

    again = generate(SpritesConfig(**info["config"]), tmp_path / "again", progress=False)
    for name in (layout.file, "sprites.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes()

    # Scene i does not depend on how many scenes are made.
    more = generate(SpritesConfig(**{**info["config"], "scenes": 9}), tmp_path / "more", progress=False)
    assert list(iter_records(more / layout.file))[:6] == list(iter_records(out / layout.file))
    assert len(list(iter_records(more / layout.file))) == 9


def test_seed_changes_scenes():
    a, b = SpritesConfig(seed=0), SpritesConfig(seed=1)
    for i in range(5):
        assert not np.array_equal(render_sprites(a, i)["image"], render_sprites(b, i)["image"])
    assert not np.array_equal(render_sprites(a, 0)["image"], render_sprites(a, 1)["image"])


@pytest.mark.parametrize("cfg", [
    SpritesConfig(seed=2),
    SpritesConfig(seed=3, background="colored", max_objects=4),
    SpritesConfig(seed=5, min_objects=4, max_objects=4, min_scale=0.25, max_scale=0.5, min_visible=40),
    SpritesConfig(seed=6, min_objects=1, max_objects=2, shapes=("tetromino_s", "heart")),
], ids=["grayscale", "colored", "crowded", "two-shapes"])
def test_scene_invariants(cfg: SpritesConfig):
    layout = cfg.layout
    e = layout.entities
    counts = set()
    for i in range(80):
        s = render_sprites(cfg, i)
        ids, image, mask = s["ids"], s["image"], s["mask"]
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and ids.dtype == np.uint8
        for name, fixed in layout.features().items():
            assert s[name].shape == fixed.shape and s[name].dtype == np.dtype(fixed.dtype), name
        n = int(s["visibility"][1:].sum())
        counts.add(n)
        assert cfg.min_objects <= n <= cfg.max_objects
        np.testing.assert_array_equal(s["visibility"], [1.0] * (n + 1) + [0.0] * (e - 1 - n))
        # The mask channels are 0/255, partition the image and encode ids.
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask.sum(axis=(2, 3), dtype=np.int64) == 255).all()
        np.testing.assert_array_equal(mask[..., 0].argmax(-1), ids)
        pixels = np.bincount(ids.ravel(), minlength=e)
        assert pixels[1 : n + 1].min() >= cfg.min_visible and not pixels[n + 1 :].any()
        # Flat colours: every pixel shows its entity's colour, which the color feature records.
        palette = np.round(s["color"] * 255).astype(np.uint8)
        np.testing.assert_array_equal(image, palette[ids])
        background = palette[0].astype(int)
        if cfg.background == "grayscale":
            assert background[0] == background[1] == background[2]
        for k in range(1, n + 1):
            assert np.abs(palette[k].astype(int) - background).max() >= 40, (i, k)
            assert int(s["shape"][k]) == s["shape"][k] and SHAPES[int(s["shape"][k]) - 1] in cfg.shapes
            assert 0 <= s["x"][k] <= 1 and 0 <= s["y"][k] <= 1
            assert cfg.min_scale <= s["scale"][k] <= cfg.max_scale and 0 <= s["orientation"][k] < 2 * math.pi
        for name in ("x", "y", "shape", "orientation", "scale"):
            assert s[name][0] == 0 and not s[name][n + 1 :].any(), name
        assert not s["color"][n + 1 :].any()
    assert counts == set(range(cfg.min_objects, cfg.max_objects + 1))  # every count occurs


def test_objects_sit_where_their_features_say():
    """Each object's pixels lie around its (x, y) and within its scale."""
    cfg = SpritesConfig(seed=8, min_objects=1, max_objects=1)
    for i in range(40):
        s = render_sprites(cfg, i)
        rows, cols = np.nonzero(s["ids"] == 1)
        centre = np.array([cols.mean() + 0.5, rows.mean() + 0.5]) / 64
        assert np.abs(centre - [s["x"][1], s["y"][1]]).max() < 0.25 * s["scale"][1] + 1 / 64, i
        reach = np.hypot((cols + 0.5) / 64 - s["x"][1], (rows + 0.5) / 64 - s["y"][1]).max()
        assert reach <= 0.72 * s["scale"][1], i


def test_rasterise_window_matches_full_grid():
    """Rasterising only around the centre loses no pixel, for every shape, pose and border case."""
    rng = np.random.default_rng(0)
    py, px = np.meshgrid(_CENTRES, _CENTRES, indexing="ij")
    areas = {}
    for shape in SHAPES:
        for _ in range(100):
            x, y, scale, angle = rng.uniform(-0.1, 1.1), rng.uniform(-0.1, 1.1), rng.uniform(0.05, 0.9), rng.uniform(0, 7)
            cos, sin = math.cos(angle), math.sin(angle)
            dx, dy = (px - x) / scale, (py - y) / scale
            full = _inside(shape, cos * dx + sin * dy, cos * dy - sin * dx)
            np.testing.assert_array_equal(rasterise(shape, x, y, scale, angle), full, err_msg=shape)
        areas[shape] = int(rasterise(shape, 0.5, 0.5, 0.375, 0.0).sum())
    # Each shape covers a sensible share of its 24×24 px box (all distinct but the three
    # equal-area L/S/T tetrominoes).
    assert all(150 <= a <= 580 for a in areas.values()), areas
    assert len({areas[s] for s in ("square", "ellipse", "heart", "triangle", "tetromino_i")}) == 5


def test_source_reads_what_render_draws(generated):
    cfg, out = generated
    variant = BACKGROUNDS[cfg.background]
    source = get_source("multi-dsprites")(out, variant=variant, splits={"train": [0, 4], "val": [4, None]})
    assert source.splits() == {"train": 4, "val": 2}
    assert get_source("multi-dsprites")(out).variant == variant  # detected from the file name
    for split, first in (("train", 0), ("val", 4)):
        for offset, scene in enumerate(source.read(split, 0, 10)):
            s = render_sprites(cfg, first + offset)
            assert scene["meta"]["index"] == first + offset
            np.testing.assert_array_equal(scene["image"][0], s["image"])
            np.testing.assert_array_equal(scene["mask"][0], s["ids"])
            n = int(s["visibility"][1:].sum())
            assert [o["visible"] for o in scene["objects"]] == [k <= n for k in range(1, cfg.layout.entities)]
            for k, obj in enumerate(scene["objects"][:n], start=1):
                for name in ("x", "y", "shape", "orientation", "scale", "color"):
                    assert obj[name] == s[name][k].tolist(), name
            assert all(set(o) == {"id", "visible"} for o in scene["objects"][n:])


def test_convert_and_index(tmp_path: Path):
    from objdisc.data.convert import convert
    from objdisc.data.index import build_index

    raw = generate(SpritesConfig(scenes=10, background="colored", max_objects=4, seed=9), tmp_path / "raw", progress=False)
    options = {"variant": "colored_on_colored", "splits": {"train": [0, 7], "val": [7, 9], "test": [9, 10]}}
    result = convert("multi-dsprites", raw, tmp_path / "shards", options=options, shard_scenes=4, progress=False)
    assert {k: v["scenes"] for k, v in result.splits.items()} == {"train": 7, "val": 2, "test": 1}
    index = build_index(tmp_path / "shards", progress=False)
    assert {k: v["scenes"] for k, v in index["splits"].items()} == {"train": 7, "val": 2, "test": 1}
    assert len(index["splits"]["train"]["shards"]) == 2


@pytest.mark.parametrize("kwargs,field", [
    ({"size": 128}, "size"),
    ({"background": "colored"}, "max_objects"),  # 5 objects do not fit the colored layout
    ({"background": "colored", "max_objects": 4, "min_objects": 5}, "min_objects"),
    ({"min_objects": 4, "max_objects": 3}, "max_objects"),
    ({"min_objects": 0}, "min_objects"),
    ({"max_objects": 6}, "max_objects"),
    ({"min_scale": 0.3, "max_scale": 0.2}, "min_scale"),
    ({"max_scale": 1.5}, "max_scale"),
    ({"min_scale": 0.05}, "min_scale"),  # too small to keep min_visible pixels
    ({"scenes": 0}, "scenes"),
    ({"seed": -1}, "seed"),
    ({"background": "striped"}, "background"),
    ({"shapes": ("square", "circle")}, "shapes"),
    ({"shapes": ()}, "shapes"),
    ({"min_visible": 0}, "min_visible"),
])
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"SpritesConfig\.{field} ="):
        SpritesConfig(**kwargs)
    cfg = SpritesConfig()
    for name, value in kwargs.items():  # generate validates a config changed after construction
        setattr(cfg, name, value)
    with pytest.raises(ValueError, match=rf"SpritesConfig\.{field} ="):
        generate(cfg, Path("/nonexistent/never-written"), progress=False)


@pytest.mark.tf
def test_tensorflow_reads_the_file(generated):
    """TensorFlow's own GZIP TFRecord reader and Example parser, with the DeepMind feature spec."""
    tf = pytest.importorskip("tensorflow")
    cfg, out = generated
    spec = cfg.layout.features()
    tf_spec = {
        name: tf.io.FixedLenFeature(fixed.shape, tf.string if fixed.dtype == "uint8" else tf.float32)
        for name, fixed in spec.items()
    }
    records = list(tf.data.TFRecordDataset(str(out / cfg.layout.file), compression_type="GZIP"))
    assert len(records) == cfg.scenes
    for i, raw in enumerate(records):
        parsed = tf.io.parse_single_example(raw, tf_spec)
        s = render_sprites(cfg, i)
        for name, fixed in spec.items():
            value = parsed[name]
            if fixed.dtype == "uint8":
                value = tf.squeeze(tf.io.decode_raw(value, tf.uint8), -1)
            np.testing.assert_array_equal(value.numpy(), s[name], err_msg=name)
