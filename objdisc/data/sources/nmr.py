"""NMR: the ShapeNet renders of DVR (Niemeyer et al. 2020) as SRT reads them, 24 views of one object.

On disk (DVR's NMR_Dataset): ``metadata.yaml`` (class entries with ``id`` = class folder),
``<class>/softras_{train,val,test}.lst`` (scene ids), ``<class>/<scene>/image/0000.png … 0023.png``
(64×64 RGB) and ``<class>/<scene>/cameras.npz`` (``world_mat_i``, ``world_mat_inv_i``,
``camera_mat_i``, ``camera_mat_inv_i``, all 4×4).

The reference builds ray directions from an *endpoint* grid, not pixel centres:
``x, y = linspace(−1, 1, 64)`` and ``d = first3(R_fix · world_mat_inv · camera_mat_inv · (x, y, 1, 0))``.
Both steps are linear in (x, y, 1), and the endpoint grid is an affine function of the pixel-centre
coordinates (u, v) = (j + ½, i + ½):  x = (u − ½)·2/(W−1) − 1.  So the reference ray through pixel
(i, j) is ``B · (u, v, 1)`` with ``B = A · M`` (A the 3×3 block, M that affine map). Writing
B = R · K⁻¹ with R a rotation and K upper triangular (a QR decomposition) gives an OpenCV camera
whose ``pixel_rays`` are exactly the reference rays, with the camera at ``world_mat_inv[:3, 3]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from objdisc.data.schema import Scene, scene_key
from objdisc.data.sources.base import Source, SourceError, SourceInfo

SPLITS = ("train", "val", "test")
NUM_VIEWS = 24
SIZE = 64
# SRT's axis fix making z the up axis (a rotation of +90° about x; orthogonal, not symmetric).
Z_UP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


class NMR(Source):
    """No options. The root holds ``metadata.yaml`` (or an ``NMR_Dataset/`` folder holding it)."""

    info = SourceInfo(
        name="nmr",
        summary="NMR ShapeNet renders (DVR/SoftRas), 24 views of 64x64 per object, softras splits",
        layout="data/raw/nmr/NMR_Dataset/{metadata.yaml, <class>/softras_<split>.lst, "
        "<class>/<scene>/{image/00NN.png, cameras.npz}}",
        origin="https://s3.eu-central-1.amazonaws.com/avg-projects/differentiable_volumetric_rendering/"
        "data/NMR_Dataset.zip",
    )

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        self.base = self.root if (self.root / "metadata.yaml").is_file() else self.root / "NMR_Dataset"
        meta_path = self.base / "metadata.yaml"
        if not meta_path.is_file():
            raise SourceError(f"nmr: missing {self.root / 'metadata.yaml'} (or NMR_Dataset/metadata.yaml)")
        with open(meta_path) as f:
            metadata = yaml.safe_load(f)
        if not isinstance(metadata, dict):
            raise SourceError(f"nmr: {meta_path} is not a mapping of classes")
        try:
            classes = [str(entry["id"]) for entry in metadata.values()]
        except (TypeError, KeyError):
            raise SourceError(f"nmr: {meta_path}: every class entry needs an 'id'") from None
        self.scenes: dict[str, list[tuple[str, str]]] = {}
        for split in SPLITS:
            scenes = []
            for class_id in classes:
                path = self.base / class_id / f"softras_{split}.lst"
                try:
                    lines = path.read_text().splitlines(keepends=True)
                except FileNotFoundError:
                    raise SourceError(f"nmr: missing split list {path}") from None
                # The reference skips lines of length ≤ 1 (counting the newline).
                scenes.extend((class_id, line.rstrip()) for line in lines if len(line) > 1)
            self.scenes[split] = scenes

    def splits(self) -> dict[str, int]:
        return {split: len(scenes) for split, scenes in self.scenes.items()}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        count = self.check_split(split)
        for index in range(max(start, 0), min(stop, count)):
            class_id, scene_id = self.scenes[split][index]
            yield self.read_scene(index, split, class_id, scene_id)

    def read_scene(self, index: int, split: str, class_id: str, scene_id: str) -> Scene:
        folder = self.base / class_id / scene_id
        images = np.stack([_read_image(folder / "image" / f"{v:04d}.png") for v in range(NUM_VIEWS)])
        cam_path = folder / "cameras.npz"
        try:
            with np.load(cam_path) as cams:
                matrices = {k: cams[k].astype(np.float64) for k in cams.files}
        except FileNotFoundError:
            raise SourceError(f"nmr: missing {cam_path}") from None
        cam2world = np.zeros((NUM_VIEWS, 4, 4))
        intrinsics = np.zeros((NUM_VIEWS, 3, 3))
        for v in range(NUM_VIEWS):
            try:
                world_mat_inv = matrices[f"world_mat_inv_{v}"]
                camera_mat_inv = matrices[f"camera_mat_inv_{v}"]
            except KeyError as err:
                raise SourceError(f"nmr: {cam_path} has no {err.args[0]}") from None
            cam2world[v], intrinsics[v] = nmr_camera(world_mat_inv, camera_mat_inv, SIZE, SIZE,
                                                     where=f"{cam_path} view {v}")
        return {
            "__key__": scene_key(index),
            "image": images,
            "cam2world": cam2world.astype(np.float32),
            "intrinsics": intrinsics.astype(np.float32),
            "objects": [{"class": class_id, "model": scene_id}],
            "meta": {"source": "nmr", "split": split, "index": index, "views": list(range(NUM_VIEWS)),
                     "class": class_id, "scene": scene_id},
        }


def endpoint_grid_map(height: int, width: int) -> np.ndarray:
    """M [3,3] with (x, y, 1) = M · (u, v, 1): pixel centres (u, v) → the endpoint grid in [−1, 1]."""
    sx, sy = 2.0 / (width - 1), 2.0 / (height - 1)
    return np.array([[sx, 0.0, -1.0 - sx / 2], [0.0, sy, -1.0 - sy / 2], [0.0, 0.0, 1.0]])


def nmr_camera(world_mat_inv: np.ndarray, camera_mat_inv: np.ndarray, height: int, width: int,
               where: str = "camera") -> tuple[np.ndarray, np.ndarray]:
    """cam2world [4,4] and K [3,3] (float64) reproducing the reference rays of one NMR view."""
    cam_to_world = Z_UP @ world_mat_inv
    ray_matrix = (cam_to_world @ camera_mat_inv)[:3, :3] @ endpoint_grid_map(height, width)
    rotation, k = pinhole_from_ray_matrix(ray_matrix, where)
    c2w = np.eye(4)
    c2w[:3, :3] = rotation
    c2w[:3, 3] = cam_to_world[:3, 3]
    return c2w, k


def pinhole_from_ray_matrix(ray_matrix: np.ndarray, where: str = "camera") -> tuple[np.ndarray, np.ndarray]:
    """Split B (ray direction ∝ B · (u, v, 1)) into a rotation R and intrinsics K with B ∝ R · K⁻¹.

    QR gives B = Q · U with U upper triangular; fixing the signs so U's diagonal is positive makes
    the split unique, K = inv(U / U[2,2]) then has positive focal lengths and K[2,2] = 1. A B with
    negative determinant is a mirrored camera, which no rotation with positive focals can express.
    """
    q, u = np.linalg.qr(ray_matrix)
    signs = np.sign(np.diag(u))
    if np.any(signs == 0):
        raise SourceError(f"{where}: degenerate ray matrix (rank < 3)")
    q, u = q * signs, signs[:, None] * u
    if np.linalg.det(q) < 0:
        raise SourceError(f"{where}: mirrored camera (ray matrix has negative determinant)")
    k = np.linalg.inv(u / u[2, 2])
    return q, k


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            if img.mode != "RGB":
                raise SourceError(f"nmr: {path} has mode {img.mode}, expected RGB")
            array = np.asarray(img)
    except FileNotFoundError:
        raise SourceError(f"nmr: missing image {path}") from None
    except OSError as err:
        raise SourceError(f"nmr: cannot decode {path}: {err}") from None
    if array.shape != (SIZE, SIZE, 3):
        raise SourceError(f"nmr: {path} is {array.shape[1]}x{array.shape[0]}, expected {SIZE}x{SIZE}")
    return array
