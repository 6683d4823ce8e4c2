"""Benchmark-sized fixtures in the exact original formats: CLEVR with masks, ClevrTex, Tetrominoes.

The pictures are simple (a shaded floor, 3-10 flat ellipses and boxes with a little pixel noise),
but every byte around them is laid out as in the published files, so the converter and the
loaders do exactly the work they do on the real data:

* CLEVR with masks: one GZIP TFRecord file ``clevr_with_masks_train.tfrecords`` of
  ``tf.train.Example`` records, 240×320 image and 11 entity masks stored one 1-byte string per
  element (about a million strings per record), per-entity factors and visibility, written by
  ``tf.io.TFRecordWriter(options="GZIP")``. Building a million-string Example through the protobuf
  API takes seconds, so the records are serialized directly in the protobuf wire format with
  numpy; the first record is checked to parse to the same ``tf.train.Example`` as one built with
  the TensorFlow API. Without TensorFlow the file is framed by ``objdisc.data.tfrecord.write_records``
  (the same framing and GZIP stream) and the JSON says so.
* Tetrominoes (``streaming.py``): ``tetrominoes_train.tfrecords``, the same kind of file with
  35×35 pictures of 3 objects and 4 entity masks.
* ClevrTex: ``clevrtex_full/<idx // 1000>/CLEVRTEX_full_<idx:06d>{.png,_flat.png,.json}`` with an
  RGB render, a palette ('P') mask whose bytes are entity indices, and the metadata JSON.

Fixtures are cached under the work folder; ``fixture.json`` is written last, so a folder without
it is unfinished and is rebuilt.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from objdisc.data.sources.multi_object import CLEVR, TETROMINOES, Layout

HEIGHT, WIDTH = 240, 320
MAX_OBJECTS = 10  # CLEVR: 3-10 objects per scene; 11 entities with the background
CLEVRTEX_PALETTE = [0, 0, 0, 255, 0, 0, 0, 128, 0, 0, 0, 255, 255, 255, 0, 0, 255, 255, 255, 0, 255,
                    128, 0, 0, 0, 64, 0, 0, 0, 128, 128, 128, 0, 128, 128, 128] + [255, 255, 255] * 244
SHAPES = ("cube", "sphere", "cylinder", "monkey")
MATERIALS = ("Metal", "Rubber", "Wood", "Marble", "Brick", "Concrete")


# ----------------------------------------------------------------------------- pictures


def draw_scene(
    rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH, max_objects: int = MAX_OBJECTS
) -> dict[str, Any]:
    """A picture and its id map: image uint8 [H,W,3], ids uint8 [H,W] (0 = floor, k = object k),
    count = number of objects (3 to ``max_objects``, later ones occlude earlier ones)."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    floor = rng.uniform(90, 160, 3).astype(np.float32)
    image = np.broadcast_to(floor * (0.7 + 0.4 * rows), (height, width, 3)).copy()
    ids = np.zeros((height, width), np.uint8)
    count = int(rng.integers(min(3, max_objects), max_objects + 1))
    scale = min(height / HEIGHT, 1.0) ** 0.5  # smaller pictures, smaller objects
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for k in range(1, count + 1):
        cy, cx = rng.uniform(0.3 * height, 0.95 * height), rng.uniform(0.05 * width, 0.95 * width)
        ry, rx = rng.uniform(8, 30) * scale, rng.uniform(8, 30) * scale
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        else:
            inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        colour = rng.uniform(20, 255, 3).astype(np.float32)
        shade = 0.75 + 0.35 * (xx[inside] - cx + rx) / (2 * rx)  # lit from the right
        image[inside] = colour * shade[:, None]
        ids[inside] = k
    image += rng.normal(0.0, 2.0, image.shape).astype(np.float32)  # render noise
    return {"image": np.clip(image, 0, 255).astype(np.uint8), "ids": ids, "count": count}


def clevr_arrays(rng: np.random.Generator, layout: Layout = CLEVR) -> dict[str, np.ndarray]:
    """One CLEVR-with-masks record as the DeepMind reader returns it: image [H,W,3], mask
    [E,H,W,1] 0/255, per-entity factors (zero for absent objects) and visibility."""
    h, w, _ = layout.image
    e = layout.entities
    drawn = draw_scene(rng, h, w, e - 1)
    present = np.zeros(e, bool)
    present[: drawn["count"] + 1] = True  # background and the objects
    arrays: dict[str, np.ndarray] = {
        "image": drawn["image"],
        "mask": ((np.arange(e, dtype=np.uint8)[:, None, None] == drawn["ids"][None]) * np.uint8(255))[..., None],
    }
    codes = {"size": 2, "material": 2, "shape": 3, "color": 8}
    for name, tail, dtype in layout.attributes:
        if dtype == "uint8":
            values = rng.integers(1, codes[name] + 1, (e, *tail)).astype(np.uint8)
        else:
            values = rng.uniform(-3, 3, (e, *tail)).astype(np.float32)
        values[~present] = 0
        values[0] = 0  # the background has no factors
        arrays[name] = values
    arrays["visibility"] = present.astype(np.float32)
    return arrays


# ----------------------------------------------------------------------------- tf.train.Example


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def example_bytes(layout: Layout, arrays: dict[str, np.ndarray]) -> bytes:
    """The serialized ``tf.train.Example`` of one record, built in the wire format.

    Example{features=1: Features{feature=1: map entry{key=1, value=2: Feature{bytes_list=1 |
    float_list=2}}}}; a BytesList holds each 1-byte string as its own field 1, a FloatList its
    values packed into one field 1 (proto3 packs repeated scalars).
    """
    entries = []
    for name, fixed in layout.features().items():
        flat = np.ascontiguousarray(arrays[name]).reshape(-1)
        if fixed.dtype == "uint8":
            strings = np.empty((flat.size, 3), np.uint8)
            strings[:, 0] = 0x0A  # field 1, length-delimited
            strings[:, 1] = 1  # length 1
            strings[:, 2] = flat
            feature = _field(1, strings.tobytes())
        else:
            feature = _field(2, _field(1, flat.astype("<f4").tobytes()))
        entries.append(_field(1, _field(1, name.encode()) + _field(2, feature)))
    return _field(1, b"".join(entries))


def tf_example(layout: Layout, arrays: dict[str, np.ndarray]) -> Any:
    """The same record built with the TensorFlow API (the check of ``example_bytes``)."""
    import tensorflow as tf

    feature = {}
    for name, fixed in layout.features().items():
        flat = np.asarray(arrays[name]).reshape(-1)
        if fixed.dtype == "uint8":
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes([v]) for v in flat.tolist()]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=flat.astype(np.float32).tolist()))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _have_tensorflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def write_multi_object(folder: Path, scenes: int, seed: int = 0, layout: Layout = CLEVR) -> dict[str, Any]:
    """``folder/<layout.file>`` (a DeepMind multi-object GZIP TFRecord) with ``scenes`` records."""
    path = folder / layout.file
    rng = np.random.default_rng([seed, 1])
    records = (example_bytes(layout, clevr_arrays(rng, layout)) for _ in range(scenes))
    if _have_tensorflow():
        import tensorflow as tf

        check_rng = np.random.default_rng([seed, 1])
        first = clevr_arrays(check_rng, layout)
        if tf.train.Example.FromString(example_bytes(layout, first)) != tf_example(layout, first):
            raise AssertionError("example_bytes does not match tf.train.Example (benchmarks/fixtures.py)")
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for payload in records:
                writer.write(payload)
        writer_name = f"tensorflow {tf.__version__} TFRecordWriter(GZIP)"
    else:
        from objdisc.data.tfrecord import write_records

        write_records(path, records, "GZIP")
        writer_name = "objdisc.data.tfrecord.write_records(GZIP) (TensorFlow not installed)"
    return {"writer": writer_name, "files": [path.name]}


def write_clevrtex(folder: Path, scenes: int, seed: int = 0, variant: str = "full") -> dict[str, Any]:
    """``folder/clevrtex_<variant>/<idx//1000>/CLEVRTEX_<variant>_<idx>{.png,_flat.png,.json}``."""
    rng = np.random.default_rng([seed, 2])
    for index in range(scenes):
        sub = folder / f"clevrtex_{variant}" / str(index // 1000)
        sub.mkdir(parents=True, exist_ok=True)
        stem = f"CLEVRTEX_{variant}_{index:06d}"
        drawn = draw_scene(rng)
        Image.fromarray(drawn["image"], mode="RGB").save(sub / f"{stem}.png")
        flat = Image.fromarray(drawn["ids"], mode="P")
        flat.putpalette(CLEVRTEX_PALETTE)
        flat.save(sub / f"{stem}_flat.png")
        objects = [
            {
                "shape": SHAPES[int(rng.integers(len(SHAPES)))],
                "size": float(rng.uniform(0.35, 0.7)),
                "material": MATERIALS[int(rng.integers(len(MATERIALS)))],
                "rotation": float(rng.uniform(0, 360)),
                "3d_coords": rng.uniform(-3, 3, 3).round(4).tolist(),
                "pixel_coords": [float(rng.uniform(0, WIDTH)), float(rng.uniform(0, HEIGHT)), float(rng.uniform(5, 15))],
                "index": k,
            }
            for k in range(drawn["count"])
        ]
        meta = {"num_objects": drawn["count"], "split": variant, "image_index": index,
                "image_filename": f"{stem}.png", "ground_material": MATERIALS[int(rng.integers(len(MATERIALS)))],
                "objects": objects}
        (sub / f"{stem}.json").write_text(json.dumps(meta))
    return {"writer": "PIL PNG (RGB render, palette mask) + json", "files": [f"clevrtex_{variant}"]}


WRITERS = {
    "clevr-with-masks": write_multi_object,
    "clevrtex": write_clevrtex,
    "tetrominoes": functools.partial(write_multi_object, layout=TETROMINOES),
}


def ensure_fixture(dataset: str, work: Path, scenes: int, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """The fixture folder of ``dataset`` with ``scenes`` scenes, generated unless cached."""
    folder = Path(work) / "fixtures" / f"{dataset}-{scenes}-seed{seed}"
    marker = folder / "fixture.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        info["cached"] = True
        return folder, info
    if folder.exists():  # an interrupted generation
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    info = WRITERS[dataset](folder, scenes, seed)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    info.update(dataset=dataset, scenes=scenes, seed=seed, bytes=size, generate_s=round(time.perf_counter() - t0, 2))
    tmp = marker.with_name("fixture.json.tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(marker)
    info["cached"] = False
    return folder, info
