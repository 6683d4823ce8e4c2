"""MultiShapeNet as SRT (``msn``, Kubric ``multi_shapenet_frames`` 2.3.3) and OSRT (``msn-hard``,
``kubric_frames/multi_shapenet_conditional`` 2.8.0) read it: Kubric scenes in TFDS directories.

Reading needs tensorflow-datasets but not TensorFlow: ``tfds.builder_from_directory`` rebuilds the
feature spec from ``features.json``; TFRecord shards are framed by ``objdisc.data.tfrecord`` and each
record is decoded by ``features.deserialize_example_np`` (ArrayRecord builds go through
``as_data_source``). Examples come in shard order, which is the order ``as_dataset`` yields
without file shuffling, so a scene's index is its position in the split.

Two record layouts are understood, both with 10 cameras per scene:

* the sunds frame layout the Kubric builds are published in: ``scene_name``, ``pose`` {R, t}
  (frame → scene) and ``cameras/<name>/`` {``intrinsics`` {K, type, distortion}, ``extrinsics``
  {R, t} (frame → camera), ``color_image``, optionally ``instance_image``, ``depth_image`` and
  baked ``ray_origins``/``ray_directions``}. sunds' Nerf task shoots its rays through pixel centres
  of this pinhole K with ``world_from_camera = pose ∘ extrinsics⁻¹`` in OpenCV axes, which is
  exactly our camera convention, so K and that transform are taken as they are;
* the stacked layout of the Nerf task's output: ``color_image`` [V,H,W,3], ``ray_origins`` and
  ``ray_directions`` [V,H,W,3], ``scene_name`` (and ``instance_image`` [V,H,W,1]).

Where only rays are stored (stacked layout, or baked rays, which sunds prefers over K when present)
each view's pinhole is recovered from them: the ray direction through pixel centre p is ∝ B·p for
one 3×3 B, found by a direct linear fit (d × B·p = 0, least squares) and split into rotation and K
by QR. The largest difference between the refitted and the stored unit directions is kept in
``meta.ray_fit_error``; above ``ray_tolerance`` (default 1e-4) the rays are not a pinhole and the
scene is refused.

MSN-hard masks follow OSRT: ``clip(instance, 1, 34) − 1``, so raw 1 (and the rare raw 0) is the
background 0 and ids above 34 share id 33. Kubric's depth is the distance from the camera centre,
i.e. along the ray, and is kept when the build has it (2.4.0 and later).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from objdisc.data.schema import Scene, scene_key
from objdisc.data.sources.base import Source, SourceError, SourceInfo
from objdisc.data.sources.nmr import pinhole_from_ray_matrix
from objdisc.data.tfrecord import TFRecordError, iter_records

MAX_INSTANCE = 34  # OSRT clips instance ids to [1, 34] and subtracts 1: 34 mask channels


class KubricMSN(Source):
    """SRT's MultiShapeNet. Option ``ray_tolerance`` (1e-4): largest accepted difference between
    stored ray directions and the refitted pinhole's (only used where rays are stored)."""

    info = SourceInfo(
        name="msn",
        summary="SRT MultiShapeNet (Kubric multi_shapenet_frames 2.3.3): 10 views of 128x128 per scene, "
        "Kubric pinhole cameras, no masks; splits train/val/test",
        layout="data/raw/msn/multi_shapenet_frames/2.3.3/{dataset_info.json, features.json, "
        "multi_shapenet_frames-<split>.tfrecord-NNNNN-of-NNNNN}",
        origin="gs://kubric-public/tfds/multi_shapenet_frames/2.3.3/",
        needs="tensorflow-datasets (TensorFlow not needed)",
    )
    builder_paths: ClassVar[tuple[str, ...]] = ("multi_shapenet_frames/2.3.3",)
    with_masks: ClassVar[bool] = False

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        import tensorflow_datasets as tfds  # heavy import, only for these sources

        self.ray_tolerance = float(options.get("ray_tolerance", 1e-4))
        self.builder_dir = self._find_builder_dir()
        try:
            self.builder = tfds.builder_from_directory(str(self.builder_dir))
        except ImportError:
            raise
        except Exception as err:  # tfds raises many kinds of errors on a broken folder
            raise SourceError(f"{self.info.name}: cannot open the TFDS folder {self.builder_dir}: {err}") from None
        self.features = self.builder.info.features
        self.file_format = str(getattr(self.builder.info.file_format, "value", self.builder.info.file_format))

    def __getstate__(self) -> dict[str, Any]:
        # The TFDS builder holds open file and thread state; a pickled source (as the converter's
        # workers get it) re-opens it from the folder instead.
        state = dict(self.__dict__)
        del state["builder"], state["features"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import tensorflow_datasets as tfds

        self.__dict__.update(state)
        self.builder = tfds.builder_from_directory(str(self.builder_dir))
        self.features = self.builder.info.features

    def _find_builder_dir(self) -> Path:
        """The TFDS version folder: the published path if present, else the only folder with a
        ``dataset_info.json`` under the root."""
        for rel in self.builder_paths:
            if (self.root / rel / "dataset_info.json").is_file():
                return self.root / rel
        if (self.root / "dataset_info.json").is_file():
            return self.root
        found = sorted({p.parent for p in self.root.glob("**/dataset_info.json")})
        if len(found) == 1:
            return found[0]
        if not found:
            raise SourceError(f"{self.info.name}: no TFDS dataset (dataset_info.json) under {self.root}; "
                              f"expected {self.root / self.builder_paths[0]}")
        raise SourceError(f"{self.info.name}: several TFDS datasets under {self.root}: "
                          f"{', '.join(str(p) for p in found)}; point the input at one of them")

    def splits(self) -> dict[str, int]:
        return {name: int(split.num_examples) for name, split in self.builder.info.splits.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        count = self.check_split(split)
        start, stop = max(start, 0), min(stop, count)
        for position, example, where in self._examples(split, start, stop):
            yield self.to_scene(example, split, position, where)

    def _examples(self, split: str, start: int, stop: int) -> Iterator[tuple[int, dict, str]]:
        if start >= stop:
            return
        if "array_record" in self.file_format:
            source = self.builder.as_data_source(split=split)
            for position in range(start, stop):
                yield position, source[position], f"{self.builder_dir} {split} example {position}"
            return
        info = self.builder.info.splits[split]
        first = 0
        for path, length in zip(info.filepaths, info.shard_lengths):
            lo, hi = max(start, first), min(stop, first + length)
            if lo < hi:
                position = lo
                try:
                    for raw in iter_records(path, "auto", start=lo - first, stop=hi - first):
                        where = f"{path} record {position - first}"
                        try:
                            example = self.features.deserialize_example_np(raw)
                        except Exception as err:
                            raise SourceError(f"{self.info.name}: {where}: cannot decode: {err}") from None
                        yield position, example, where
                        position += 1
                except (TFRecordError, FileNotFoundError) as err:
                    raise SourceError(f"{self.info.name}: {err}") from None
                if position != hi:
                    raise SourceError(f"{self.info.name}: {path} ends after {position - first} records, "
                                      f"dataset_info.json says {length}")
            first += length

    def to_scene(self, example: dict, split: str, position: int, where: str) -> Scene:
        if "cameras" in example:
            views = _frame_layout(example, where, self.ray_tolerance)
        else:
            views = _stacked_layout(example, where, self.ray_tolerance)
        name = _text(example.get("scene_name", b""))
        match = re.fullmatch(r"scene_(\d+)", name)
        meta: dict[str, Any] = {
            "source": self.info.name,
            "split": split,
            "index": position,
            "views": list(range(len(views["image"]))),
            "scene_name": name,
            "sceneid": int(match.group(1)) if match else None,
        }
        if views["cameras"] is not None:
            meta["cameras"] = views["cameras"]
        if views["fit_error"] is not None:
            meta["ray_fit_error"] = views["fit_error"]
        scene: Scene = {
            "__key__": scene_key(position),
            "image": views["image"],
            "cam2world": views["cam2world"].astype(np.float32),
            "intrinsics": views["intrinsics"].astype(np.float32),
            "objects": [],
            "meta": meta,
        }
        if views["depth"] is not None:
            scene["depth"] = views["depth"]
        if self.with_masks:
            if views["instance"] is None:
                raise SourceError(f"{self.info.name}: {where}: no instance_image (MSN-hard needs the 2.8.0 build)")
            mask = (np.clip(views["instance"], 1, MAX_INSTANCE) - 1).astype(np.uint8)
            scene["mask"] = mask
            scene["objects"] = [{"id": int(k)} for k in np.unique(mask) if k > 0]
        return scene


class KubricMSNHard(KubricMSN):
    """OSRT's MultiShapeNet-hard (with instance masks). Option ``ray_tolerance`` as for ``msn``."""

    info = SourceInfo(
        name="msn-hard",
        summary="OSRT MultiShapeNet-hard (Kubric multi_shapenet_conditional 2.8.0): 10 views of 128x128, "
        "instance masks clip(id,1,34)-1 (0 = background), ray-distance depth; splits train/val/test",
        layout="data/raw/msn-hard/kubric_frames/multi_shapenet_conditional/2.8.0/{dataset_info.json, "
        "features.json, kubric_frames-<split>.tfrecord-NNNNN-of-NNNNN}",
        origin="gs://kubric-public/tfds/kubric_frames/multi_shapenet_conditional/2.8.0/",
        needs="tensorflow-datasets (TensorFlow not needed)",
    )
    builder_paths = ("kubric_frames/multi_shapenet_conditional/2.8.0", "multi_shapenet_frames/2.8.0")
    with_masks = True


def _frame_layout(example: dict, where: str, tolerance: float) -> dict[str, Any]:
    """Views of a sunds frame record, cameras in natural name order (camera_2 before camera_10)."""
    cameras = example["cameras"]
    names = sorted(cameras, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    if not names:
        raise SourceError(f"{where}: the record has no cameras")
    pose = example.get("pose")
    scene_from_frame = _isometry(pose["R"], pose["t"]) if pose is not None else np.eye(4)
    images, c2ws, ks, instances, depths, errors = [], [], [], [], [], []
    for name in names:
        cam = cameras[name]
        if "color_image" not in cam:
            raise SourceError(f"{where}: camera {name} has no color_image")
        image = np.asarray(cam["color_image"], dtype=np.uint8)
        height, width = image.shape[:2]
        if "ray_origins" in cam and "ray_directions" in cam:  # baked rays: sunds uses them as they are
            c2w, k, err = fit_pinhole(np.asarray(cam["ray_origins"]), np.asarray(cam["ray_directions"]),
                                      f"{where} camera {name}", tolerance)
            errors.append(err)
        else:
            intr = cam["intrinsics"]
            kind = _text(intr.get("type", b"PERSPECTIVE"))
            if kind != "PERSPECTIVE":
                raise SourceError(f"{where}: camera {name} is of type {kind}, only PERSPECTIVE is a pinhole")
            distortion = intr.get("distortion", {})
            if any(np.abs(np.asarray(v)).max(initial=0) > 1e-6 for v in distortion.values()):
                raise SourceError(f"{where}: camera {name} has lens distortion, which a pinhole cannot express")
            ext = cam["extrinsics"]
            c2w = scene_from_frame @ np.linalg.inv(_isometry(ext["R"], ext["t"]))
            k = np.asarray(intr["K"], dtype=np.float64)
        images.append(image)
        c2ws.append(c2w)
        ks.append(k)
        if "instance_image" in cam:
            instances.append(np.asarray(cam["instance_image"]).reshape(height, width))
        if "depth_image" in cam:
            depths.append(np.asarray(cam["depth_image"], dtype=np.float32).reshape(height, width))
    _check_same_shape(images, where)
    return {
        "image": np.stack(images),
        "cam2world": np.stack(c2ws),
        "intrinsics": np.stack(ks),
        "instance": np.stack(instances) if len(instances) == len(names) else None,
        "depth": np.stack(depths) if len(depths) == len(names) else None,
        "cameras": names,
        "fit_error": max(errors) if errors else None,
    }


def _stacked_layout(example: dict, where: str, tolerance: float) -> dict[str, Any]:
    for key in ("color_image", "ray_origins", "ray_directions"):
        if key not in example:
            raise SourceError(f"{where}: record has neither 'cameras' nor '{key}'")
    image = np.asarray(example["color_image"], dtype=np.uint8)
    origins = np.asarray(example["ray_origins"], dtype=np.float64)
    directions = np.asarray(example["ray_directions"], dtype=np.float64)
    if image.ndim != 4 or origins.shape != image.shape or directions.shape != image.shape:
        raise SourceError(f"{where}: color_image {image.shape}, ray_origins {origins.shape} and "
                          f"ray_directions {directions.shape} must all be [V,H,W,3]")
    c2ws, ks, errors = [], [], []
    for v in range(len(image)):
        c2w, k, err = fit_pinhole(origins[v], directions[v], f"{where} view {v}", tolerance)
        c2ws.append(c2w)
        ks.append(k)
        errors.append(err)
    instance = None
    if "instance_image" in example:
        instance = np.asarray(example["instance_image"]).reshape(image.shape[:3])
    return {
        "image": image,
        "cam2world": np.stack(c2ws),
        "intrinsics": np.stack(ks),
        "instance": instance,
        "depth": None,
        "cameras": None,
        "fit_error": max(errors),
    }


def fit_pinhole(origins: np.ndarray, directions: np.ndarray, where: str,
                tolerance: float) -> tuple[np.ndarray, np.ndarray, float]:
    """cam2world [4,4], K [3,3] (float64) and the max direction error of the pinhole through the
    stored rays of one view ([H,W,3] each); SourceError when they are not one pinhole."""
    height, width = directions.shape[:2]
    dirs = directions.reshape(-1, 3).astype(np.float64)
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    rows, cols = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    pix = np.stack([cols.ravel(), rows.ravel(), np.ones(height * width)], axis=-1)
    # Fit in coordinates scaled to [−1, 1] for conditioning, then undo the scaling.
    scale = np.array([[2.0 / width, 0, -1], [0, 2.0 / height, -1], [0, 0, 1]])
    q = pix @ scale.T
    # d × (B q) = 0 is linear in b = vec(B): [d]_× (I ⊗ qᵀ) b = 0. Its normal matrix sums
    # ([d]_×ᵀ[d]_×) ⊗ (q qᵀ) = (I − d dᵀ) ⊗ (q qᵀ) over pixels; b is its null vector.
    across = np.eye(3) - np.einsum("ni,nj->nij", dirs, dirs)
    outer = np.einsum("nk,nl->nkl", q, q)
    normal = (across.reshape(-1, 9).T @ outer.reshape(-1, 9)).reshape(3, 3, 3, 3)  # [i,j,k,l]
    normal = normal.transpose(0, 2, 1, 3).reshape(9, 9)  # rows (i,k), columns (j,l)
    _, eigvecs = np.linalg.eigh(normal)
    ray_matrix = eigvecs[:, 0].reshape(3, 3) @ scale
    if np.mean(np.einsum("ij,nj,ni->n", ray_matrix, pix, dirs)) < 0:
        ray_matrix = -ray_matrix
    rotation, k = pinhole_from_ray_matrix(ray_matrix, where)
    fitted = pix @ (rotation @ np.linalg.inv(k)).T
    fitted /= np.linalg.norm(fitted, axis=-1, keepdims=True)
    error = float(np.abs(fitted - dirs).max())
    origin = origins[0, 0].astype(np.float64)
    spread = float(np.abs(origins.reshape(-1, 3) - origin).max())
    if error > tolerance or spread > tolerance:
        raise SourceError(f"{where}: stored rays are not one pinhole camera (direction error {error:.3g}, "
                          f"origin spread {spread:.3g}, tolerance {tolerance:g})")
    c2w = np.eye(4)
    c2w[:3, :3] = rotation
    c2w[:3, 3] = origin
    return c2w, k, error


def _isometry(rotation: Any, translation: Any) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.asarray(rotation, dtype=np.float64)
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def _check_same_shape(images: list[np.ndarray], where: str) -> None:
    shapes = {im.shape for im in images}
    if len(shapes) != 1 or images[0].ndim != 3 or images[0].shape[2] != 3:
        raise SourceError(f"{where}: camera images must all be [H,W,3] of one size, got {sorted(shapes)}")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return _text(value.item())
    return str(value)
