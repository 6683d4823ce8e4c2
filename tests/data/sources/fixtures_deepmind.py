"""Fixture writers for the DeepMind multi-object formats and their exports.

Scenes are drawn as the datasets are made: an id map partitions the image (background 0, entities
painted as rectangles on top), the masks are 0/255 per entity channel, absent objects are
zero-padded with visibility 0. ``write_tf`` writes them with TensorFlow itself
(``tf.io.TFRecordWriter(options="GZIP")`` + ``tf.train.Example``, every image/mask element a
1-byte string as the readers declare); ``write_py`` writes byte-identical records without
TensorFlow (TFDS's Example copy + ``objdisc.data.tfrecord.write_records``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from objdisc.data.sources.multi_object import Layout
from objdisc.data.tfrecord import write_records

_BYTES = [bytes([v]) for v in range(256)]


def random_scene(layout: Layout, rng: np.random.Generator, num_objects: int | None = None) -> dict:
    """Arrays as the DeepMind reader returns them (mask in the on-disk axis order) plus ``ids``,
    the [H,W] entity id map the masks encode."""
    h, w, c = layout.image
    e = layout.entities
    ids = np.zeros((h, w), np.uint8)
    if layout.roles:  # Objects Room: sky 0 above, floor 1 below, two wall halves 2, 3
        ids[h // 3 : 2 * h // 3, : w // 2] = 2
        ids[h // 3 : 2 * h // 3, w // 2 :] = 3
        ids[2 * h // 3 :] = 1
        first = 4
    else:
        first = 1
    slots = e - first
    count = slots if num_objects is None else num_objects
    visible = np.zeros(e, bool)
    visible[first : first + count] = True
    for k in range(first, first + count):
        top, left = rng.integers(0, h - 3), rng.integers(0, w - 3)
        ids[top : top + rng.integers(2, max(3, h // 3)), left : left + rng.integers(2, max(3, w // 3))] = k
    masks = (np.arange(e)[:, None, None] == ids[None]).astype(np.uint8) * 255  # [E,H,W]
    mask = masks.transpose(1, 2, 0)[..., None] if layout.mask_last else masks[..., None]
    arrays = {"image": rng.integers(0, 256, (h, w, c), dtype=np.uint8), "mask": mask, "ids": ids}
    for name, tail, dtype in layout.attributes:
        if dtype == "uint8":
            values = rng.integers(1, 8, (e, *tail)).astype(np.uint8)
        else:
            values = rng.uniform(-3, 3, (e, *tail)).astype(np.float32)
        values[~visible] = 0
        arrays[name] = values
    if layout.visibility:
        vis = visible.astype(np.float32)
        vis[0] = 1.0  # the background entity is "visible", as in CLEVR
        arrays["visibility"] = vis
    return arrays


def feature_items(layout: Layout, arrays: dict) -> list[tuple[str, str, list]]:
    """(name, kind, values) of every feature in the reader's order: image/mask and uint8 factors
    as lists of 1-byte strings, floats as flat lists."""
    items = []
    for name, fixed in layout.features().items():
        flat = np.asarray(arrays[name]).reshape(-1)
        if fixed.dtype == "uint8":
            items.append((name, "bytes", [_BYTES[v] for v in flat.tolist()]))
        else:
            items.append((name, "float", flat.astype(np.float32).tolist()))
    return items


def write_tf(path: Path, layout: Layout, scenes: list[dict]) -> None:
    """Write ``scenes`` with TensorFlow, exactly as the published GZIP TFRecord files are."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for arrays in scenes:
            feature = {}
            for name, kind, values in feature_items(layout, arrays):
                if kind == "bytes":
                    feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
                else:
                    feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def encode_py(layout: Layout, arrays: dict) -> bytes:
    """A serialized tf.train.Example built without TensorFlow (TFDS's wire-compatible copy)."""
    from tensorflow_datasets.proto import tf_example_pb2

    example = tf_example_pb2.Example()
    for name, kind, values in feature_items(layout, arrays):
        feature = example.features.feature[name]
        if kind == "bytes":
            feature.bytes_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    return example.SerializeToString()


def write_py(path: Path, layout: Layout, scenes: list[dict], compression: str | None = "GZIP") -> None:
    write_records(path, (encode_py(layout, arrays) for arrays in scenes), compression)


def expected_objects(layout: Layout, arrays: dict) -> list[dict]:
    """What the source must put in ``objects``, computed independently of the source code."""
    e = layout.entities
    objects = []
    for k in range(1, e):
        if layout.roles:
            objects.append({"id": k, "visible": bool((arrays["ids"] == k).any()), "role": layout.roles[k]})
            continue
        entry = {"id": k, "visible": bool(arrays["visibility"][k] == 1.0)}
        if entry["visible"]:
            for name, _, _ in layout.attributes:
                entry[name] = np.asarray(arrays[name][k]).tolist()
        objects.append(entry)
    return objects


def expected_image(arrays: dict) -> np.ndarray:
    image = arrays["image"]
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
