"""ObSuRF's own exports (Stelzner et al. 2021): MultiShapeNet in the npz + png layout, and sprites.

``obsurf-msn`` (the CLEVR3D layout): ``metadata.npz`` with ``shape`` [N, max_objs] (> 0 = present),
``camera_pos`` [N, V, 3] and ``shape_file`` (ShapeNet model paths); per scene and view
``images/img_{s}_{v}.png`` (240×320 RGB or RGBA), ``masks/masks_{s}_{v}.png`` (uint8 entity index,
0 = background, < 5) and ``depths/depths_{s}_{v}.png`` (uint16). Cameras are CLEVR's pinhole at
``camera_pos`` looking at the origin with +z up. The MSN depth PNGs store camera-space z
(value / 1638.4); the distance along the ray is z / (ray · normalise(−camera_pos)), the same
conversion ObSuRF applies (``zs_to_depths``). Splits are ObSuRF's scene-id ranges, keeping scenes
with at most 6 objects.

``obsurf-sprites``: ``{variant}-{mode}.npz`` with ``image`` [N,64,64,C] uint8
and ``mask`` [N,E,64,64,1] (0/255 per entity channel, channel 0 = background). The channels must
partition the image; the mask id of a pixel is its channel, and ``objects`` has one entry per
channel 1..E−1 (``visible`` = the channel has pixels, plus any extra [N,E,...] arrays of the file).

Helpers for the npz + png layout (``read_png``, ``load_metadata``, ``npz_member``) live here.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from objdisc.data.schema import Scene, scene_key
from objdisc.data.sources.base import Source, SourceError, SourceInfo
from objdisc.geometry import clevr_intrinsics, look_at, pixel_rays

# ObSuRF's Clevr3dDataset(shapenet=True) scene-id ranges.
MSN_SPLITS = {"train": (0, 80000), "val": (80000, 80500), "test": (90000, 100000)}
MSN_ENTITIES = 5
DEPTH_SCALE = 1638.4  # = 65536 · 0.025, the factor the depth PNGs were drawn with
HEIGHT, WIDTH = 240, 320
SPRITE_VARIANTS = ("binarized", "colored_on_grayscale")
SPRITE_SIZE = 64


class ObsurfMSN(Source):
    """Option ``max_objects`` (6: ObSuRF's ``max_n``). Split ranges past the end of
    ``metadata.npz`` are cut at its last scene, so a partial download converts what it has."""

    info = SourceInfo(
        name="obsurf-msn",
        summary="ObSuRF MultiShapeNet: 240x320 multi-view, 5-entity masks, camera-space-z depth "
        "(converted to ray distance), CLEVR look-at cameras; train 0-80000 / val 80000-80500 / "
        "test 90000-100000, at most 6 objects",
        layout="data/raw/obsurf-msn/{metadata.npz, images/img_<scene>_<view>.png, "
        "masks/masks_<scene>_<view>.png, depths/depths_<scene>_<view>.png}",
        origin="ObSuRF project (stelzner/obsurf README: MultiShapeNet download)",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        self.metadata = load_metadata(self.root / "metadata.npz", ("shape", "camera_pos"), self.info.name)
        self.num_scenes = len(self.metadata["shape"])
        self.max_objects = int(options.get("max_objects", 6))
        counts = (self.metadata["shape"] > 0).sum(axis=1)
        self.split_ids = {}
        for split, (lo, hi) in MSN_SPLITS.items():
            ids = np.arange(min(lo, self.num_scenes), min(hi, self.num_scenes))
            self.split_ids[split] = ids[counts[ids] <= self.max_objects]

    def splits(self) -> dict[str, int]:
        return {split: len(ids) for split, ids in self.split_ids.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        self.check_split(split)
        for index in self.split_ids[split][max(start, 0) : stop]:
            yield self.read_scene(int(index), split)

    def read_scene(self, index: int, split: str) -> Scene:
        name = self.info.name
        positions = self.metadata["camera_pos"][index].astype(np.float64)
        views = list(range(len(positions)))
        images, masks, zs = [], [], []
        for v in views:
            images.append(read_png(self.root / "images" / f"img_{index}_{v}.png", name, "rgb", (HEIGHT, WIDTH)))
            mask_path = self.root / "masks" / f"masks_{index}_{v}.png"
            mask = read_png(mask_path, name, "index", (HEIGHT, WIDTH))
            if int(mask.max()) >= MSN_ENTITIES:
                raise SourceError(f"{name}: {mask_path}: mask id {int(mask.max())} beyond the entity count "
                                  f"{MSN_ENTITIES}")
            masks.append(mask)
            zs.append(read_png(self.root / "depths" / f"depths_{index}_{v}.png", name, "uint16", (HEIGHT, WIDTH)))
        cam2world = look_at(positions)
        intrinsics = np.repeat(clevr_intrinsics(HEIGHT, WIDTH)[None], len(views), axis=0)
        _, rays = pixel_rays(torch.from_numpy(cam2world).double(), torch.from_numpy(intrinsics).double(),
                             HEIGHT, WIDTH)
        forward = -positions / np.linalg.norm(positions, axis=-1, keepdims=True)
        cosines = np.einsum("vhwc,vc->vhw", rays.numpy(), forward)
        depth = np.stack(zs).astype(np.float64) / DEPTH_SCALE / cosines
        return {
            "__key__": scene_key(index),
            "image": np.stack(images),
            "mask": np.stack(masks),
            "depth": depth.astype(np.float32),
            "cam2world": cam2world,
            "intrinsics": intrinsics,
            "objects": present_objects(self.metadata, index, self.num_scenes),
            "meta": {"source": name, "split": split, "index": index, "views": views},
        }


class ObsurfSprites(Source):
    """Option ``variant``: ``colored_on_grayscale`` (default, ObSuRF's "sprites" run) or
    ``binarized`` ("binsprites"). Splits are the ``<mode>`` parts of the files present.
    Single-channel (binarized) images are repeated to RGB; pixel values are kept as stored."""

    info = SourceInfo(
        name="obsurf-sprites",
        summary="ObSuRF's Multi-dSprites export: 64x64 images, one-hot entity masks (channel 0 = "
        "background) turned into index masks; variants colored_on_grayscale / binarized",
        layout="data/raw/obsurf-sprites/<variant>-<mode>.npz  (keys image [N,64,64,C], mask [N,E,64,64,1])",
        origin="ObSuRF project (stelzner/obsurf README: sprites data), exported from DeepMind "
        "multi_object_datasets multi_dsprites",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        self.variant = str(options.get("variant", "colored_on_grayscale"))
        if self.variant not in SPRITE_VARIANTS:
            raise SourceError(f"obsurf-sprites: unknown variant '{self.variant}' (known: {', '.join(SPRITE_VARIANTS)})")
        prefix = f"{self.variant}-"
        self.files = {
            p.name[len(prefix) : -len(".npz")]: p
            for p in sorted(self.root.glob(f"{prefix}*.npz"))
            if p.name[len(prefix) : -len(".npz")] != "dummy"
        }
        if not self.files:
            raise SourceError(f"obsurf-sprites: no {prefix}<mode>.npz files in {self.root}")
        self.counts = {}
        for mode, path in self.files.items():
            image = npz_member(path, "image", self.info.name)
            mask = npz_member(path, "mask", self.info.name)
            if image.ndim != 4 or image.shape[1:3] != (SPRITE_SIZE, SPRITE_SIZE) or image.shape[3] not in (1, 3):
                raise SourceError(f"obsurf-sprites: {path}: image has shape {image.shape}, expected [N,64,64,1|3]")
            if mask.shape[:1] != image.shape[:1] or mask.shape[2:4] != image.shape[1:3] or mask.ndim not in (4, 5):
                raise SourceError(f"obsurf-sprites: {path}: mask has shape {mask.shape}, expected [N,E,64,64,1]")
            if mask.ndim == 5 and mask.shape[4] != 1:
                raise SourceError(f"obsurf-sprites: {path}: mask has shape {mask.shape}, expected [N,E,64,64,1]")
            self.counts[mode] = int(image.shape[0])

    def splits(self) -> dict[str, int]:
        return dict(self.counts)

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        count = self.check_split(split)
        path = self.files[split]
        images = npz_member(path, "image", self.info.name)
        masks = npz_member(path, "mask", self.info.name)
        extras = _per_object_arrays(path, count, masks.shape[1], self.info.name)
        for index in range(max(start, 0), min(stop, count)):
            image = np.asarray(images[index])
            if image.shape[-1] == 1:
                image = np.repeat(image, 3, axis=-1)
            onehot = np.asarray(masks[index]).reshape(masks.shape[1:4]) // 255
            if np.any(onehot.sum(axis=0) != 1):
                raise SourceError(f"obsurf-sprites: {path} record {index}: mask channels do not partition the image")
            mask = onehot.argmax(axis=0).astype(np.uint8)
            # One entry per entity channel k ≥ 1, so mask id k is objects[k − 1].
            objects = [{"id": k, "visible": bool(onehot[k].any()),
                        **{key: values[index, k].tolist() for key, values in extras.items()}}
                       for k in range(1, onehot.shape[0])]
            yield {
                "__key__": scene_key(index),
                "image": np.ascontiguousarray(image[None], dtype=np.uint8),
                "mask": mask[None],
                "objects": objects,
                "meta": {"source": self.info.name, "variant": self.variant, "split": split, "index": index,
                         "views": [0]},
            }


def read_png(path: Path, source: str, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """One PNG as ``kind``: "rgb" (uint8 [H,W,3], alpha dropped), "index" (uint8 [H,W] raw values)
    or "uint16" ([H,W]); ``shape`` is the required (H, W). Errors name the file."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.asarray(img)
    except FileNotFoundError:
        raise SourceError(f"{source}: missing file {path}") from None
    except OSError as err:
        raise SourceError(f"{source}: cannot decode {path}: {err}") from None
    allowed = {"rgb": ("RGB", "RGBA"), "index": ("L", "P"), "uint16": ("I;16", "I;16B", "I")}[kind]
    if mode not in allowed:
        raise SourceError(f"{source}: {path} has mode {mode}, expected one of {', '.join(allowed)}")
    if array.shape[:2] != shape:
        raise SourceError(f"{source}: {path} is {array.shape[1]}x{array.shape[0]}, expected {shape[1]}x{shape[0]}")
    if kind == "rgb":
        return np.ascontiguousarray(array[..., :3])
    if kind == "index":
        return np.array(array, dtype=np.uint8)
    return array.astype(np.uint16)


def load_metadata(path: Path, required: tuple[str, ...], source: str) -> dict[str, np.ndarray]:
    """All arrays of a ``metadata.npz`` (no pickles), checking that ``required`` keys are there."""
    try:
        with np.load(path, allow_pickle=False) as data:
            metadata = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SourceError(f"{source}: missing {path}") from None
    except ValueError as err:
        raise SourceError(f"{source}: cannot read {path}: {err}") from None
    for key in required:
        if key not in metadata:
            raise SourceError(f"{source}: {path} has no '{key}' array")
    n = len(metadata[required[0]])
    for key in required:
        if len(metadata[key]) != n:
            raise SourceError(f"{source}: {path}: '{key}' has {len(metadata[key])} rows, '{required[0]}' has {n}")
    return metadata


def present_objects(metadata: dict[str, np.ndarray], index: int, num_scenes: int) -> list[dict]:
    """Objects with ``shape > 0`` and every per-object metadata array; ``id`` = slot + 1, the
    convention of the CLEVR3D source (mask id k ↔ metadata slot k − 1)."""
    shape = metadata["shape"][index]
    objects = []
    for slot in np.flatnonzero(shape > 0):
        obj: dict[str, Any] = {"id": int(slot) + 1}
        for key, values in metadata.items():
            if key != "camera_pos" and values.ndim >= 2 and values.shape[:2] == (num_scenes, len(shape)):
                obj[key] = values[index, slot].tolist()
        objects.append(obj)
    return objects


def npz_member(path: Path, key: str, source: str) -> np.ndarray:
    """Array ``key`` of an npz file, memory-mapped when stored uncompressed (``np.savez``).

    Sprites files hold up to a million scenes; mapping the member lets each conversion worker read
    only its range. A compressed member (``np.savez_compressed``) has to be inflated whole.
    """
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise SourceError(f"{source}: missing {path}") from None
    except zipfile.BadZipFile as err:
        raise SourceError(f"{source}: {path} is not an npz archive: {err}") from None
    with archive:
        try:
            info = archive.getinfo(f"{key}.npy")
        except KeyError:
            raise SourceError(f"{source}: {path} has no '{key}' array") from None
        if info.compress_type != zipfile.ZIP_STORED:
            return _inflated_member(str(path), key)
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            else:  # format 3.0 (utf-8 field names) has no public header reader
                return _inflated_member(str(path), key)
            header_size = member.tell()
    if dtype.hasobject:
        raise SourceError(f"{source}: {path}: '{key}' holds Python objects")
    with open(path, "rb") as f:  # the member's data start: local header + name + extra field
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
    offset = info.header_offset + 30 + int(name_len) + int(extra_len) + header_size
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


@functools.lru_cache(maxsize=4)
def _inflated_member(path: str, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return data[key]


def _per_object_arrays(path: Path, count: int, entities: int, source: str) -> dict[str, np.ndarray]:
    """Extra npz keys shaped [N, E, ...] (e.g. an export's visibility or colours), read whole."""
    with zipfile.ZipFile(path) as archive:
        keys = [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
    extras = {}
    for key in keys:
        if key in ("image", "mask"):
            continue
        values = npz_member(path, key, source)
        if values.ndim >= 2 and values.shape[:2] == (count, entities):
            extras[key] = np.asarray(values)
    return extras
