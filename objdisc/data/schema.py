"""The canonical scene: one schema for every dataset.

A scene is a plain ``dict`` of numpy arrays and JSON-able values. A 2D dataset is a scene with one
view. Sources produce scenes, storage formats write and read them unchanged, loaders turn them into
tensors. ``validate_scene`` is the single place that says what a well-formed scene is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

Scene = dict[str, Any]


class SchemaError(ValueError):
    """A scene does not match the canonical schema."""


@dataclass(frozen=True)
class Field:
    name: str
    dtype: str | None  # numpy dtype name, or None for JSON values
    ndim: int | None  # number of axes, the first being the view axis V
    required: bool
    meaning: str


FIELDS: dict[str, Field] = {
    f.name: f
    for f in [
        Field("__key__", None, None, True, "stable id derived from the source index (%08d)"),
        Field("image", "uint8", 4, True, "RGB views [V,H,W,3]"),
        Field("mask", "uint8", 3, False, "instance id per pixel [V,H,W], 0 = background"),
        Field("depth", "float32", 3, False, "distance along the ray [V,H,W] in scene units"),
        Field("cam2world", "float32", 3, False, "camera-to-world [V,4,4], OpenCV axes"),
        Field("intrinsics", "float32", 3, False, "pinhole K in pixels [V,3,3]"),
        Field("objects", None, None, True, "per-object attributes (list of dicts)"),
        Field("meta", None, None, True, "source, version, source index, split, view ids"),
    ]
}
ARRAY_FIELDS = [n for n, f in FIELDS.items() if f.dtype is not None]
JSON_FIELDS = ["objects", "meta"]


def scene_key(index: int) -> str:
    """The ``__key__`` of the scene with this source index."""
    return f"{int(index):08d}"


def validate_scene(scene: Scene, where: str = "scene") -> Scene:
    """Check ``scene`` against the schema and return it; raise ``SchemaError`` naming the field."""
    unknown = set(scene) - set(FIELDS)
    if unknown:
        raise SchemaError(f"{where}: unknown fields {sorted(unknown)}")
    for name, field in FIELDS.items():
        if name not in scene:
            if field.required:
                raise SchemaError(f"{where}: missing field '{name}'")
            continue
        value = scene[name]
        if field.dtype is None:
            if name == "__key__" and not isinstance(value, str):
                raise SchemaError(f"{where}: __key__ must be a str, got {type(value).__name__}")
            if name == "objects" and not isinstance(value, list):
                raise SchemaError(f"{where}: objects must be a list")
            if name == "meta" and not isinstance(value, dict):
                raise SchemaError(f"{where}: meta must be a dict")
            if name in JSON_FIELDS:
                try:
                    json.dumps(value)
                except TypeError as err:
                    raise SchemaError(f"{where}: {name} is not JSON-serialisable: {err}") from None
            continue
        if not isinstance(value, np.ndarray):
            raise SchemaError(f"{where}: {name} must be a numpy array, got {type(value).__name__}")
        if value.dtype != np.dtype(field.dtype):
            raise SchemaError(f"{where}: {name} has dtype {value.dtype}, expected {field.dtype}")
        if value.ndim != field.ndim:
            raise SchemaError(f"{where}: {name} has shape {value.shape}, expected {field.ndim} axes")
    image = scene["image"]
    if image.shape[-1] != 3:
        raise SchemaError(f"{where}: image has shape {image.shape}, expected [V,H,W,3]")
    v, h, w = image.shape[:3]
    for name, tail in [("mask", ()), ("depth", ()), ("cam2world", None), ("intrinsics", None)]:
        if name not in scene:
            continue
        shape = scene[name].shape
        if tail is not None and shape != (v, h, w):
            raise SchemaError(f"{where}: {name} has shape {shape}, expected {(v, h, w)}")
        if name == "cam2world" and shape != (v, 4, 4):
            raise SchemaError(f"{where}: cam2world has shape {shape}, expected {(v, 4, 4)}")
        if name == "intrinsics" and shape != (v, 3, 3):
            raise SchemaError(f"{where}: intrinsics has shape {shape}, expected {(v, 3, 3)}")
    if ("cam2world" in scene) != ("intrinsics" in scene):
        raise SchemaError(f"{where}: cam2world and intrinsics come together")
    return scene


def scene_signature(scene: Scene) -> dict[str, dict[str, Any]]:
    """Field → {dtype, shape} of the array fields present (the index records it)."""
    return {
        name: {"dtype": str(scene[name].dtype), "shape": list(scene[name].shape)}
        for name in ARRAY_FIELDS
        if name in scene
    }
