"""A small vectorised ray caster (numpy, float64) for the procedural scenes of ``objdisc synth``:
a ground plane z = 0 and objects (cubes, spheres, cylinders) resting on it, each given as a dict
with ``shape``, ``size``, ``position`` and ``rotation`` (degrees about z).

Every object is intersected in its own frame: centred, and turned by -rotation about z so a cube
is axis-aligned. Rays are [R,3] arrays (directions may broadcast from [3]).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_EPS = 1e-6  # smallest accepted ray parameter




def _to_local(obj: dict[str, Any], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(math.radians(obj["rotation"])), math.sin(math.radians(obj["rotation"]))
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # world → object (R_z(-θ))
    return (o - np.asarray(obj["position"], dtype=np.float64)) @ rot.T, d @ rot.T


def _from_local(obj: dict[str, Any], n: np.ndarray) -> np.ndarray:
    c, s = math.cos(math.radians(obj["rotation"])), math.sin(math.radians(obj["rotation"]))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # object → world (R_z(θ))
    return n @ rot.T


def _hit_sphere(p: np.ndarray, q: np.ndarray, r: float) -> np.ndarray:
    b = np.einsum("...i,...i->...", p, q)
    disc = b * b - (np.einsum("...i,...i->...", p, p) - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _hit_box(p: np.ndarray, q: np.ndarray, h: float) -> np.ndarray:
    """Slab test for the axis-aligned cube [-h, h]^3."""
    q = np.where(np.abs(q) < 1e-12, 1e-12, q)  # a ray parallel to a slab: ±inf instead of 0/0
    t1, t2 = (-h - p) / q, (h - p) / q
    near = np.minimum(t1, t2).max(-1)
    far = np.maximum(t1, t2).min(-1)
    return np.where((near <= far) & (near > _EPS), near, np.inf)


def _hit_cylinder(p: np.ndarray, q: np.ndarray, r: float, h: float) -> np.ndarray:
    """Vertical cylinder of radius r, z ∈ [-h, h]: the nearer of the side and the facing cap."""
    a = q[..., 0] ** 2 + q[..., 1] ** 2
    b = p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1]
    c = p[..., 0] ** 2 + p[..., 1] ** 2 - r * r
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        z = p[..., 2] + side * q[..., 2]
        side = np.where((a > 1e-12) & (disc >= 0) & (side > _EPS) & (np.abs(z) <= h), side, np.inf)
        qz = np.where(np.abs(q[..., 2]) < 1e-12, 1e-12, q[..., 2])
        cap = (np.where(qz < 0, h, -h) - p[..., 2]) / qz  # the cap the ray looks at
    x, y = p[..., 0] + cap * q[..., 0], p[..., 1] + cap * q[..., 1]
    cap = np.where((cap > _EPS) & (x * x + y * y <= r * r), cap, np.inf)
    return np.minimum(side, cap)


def intersect(obj: dict[str, Any], o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distance along each unit ray to its first hit with ``obj`` (inf for a miss)."""
    p, q = _to_local(obj, o, d)
    size = obj["size"]
    if obj["shape"] == "sphere":
        return _hit_sphere(p, q, size)
    if obj["shape"] == "cube":
        return _hit_box(p, q, size)
    return _hit_cylinder(p, q, size, size)


def surface_normal(obj: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """World-space unit normals [R,3] at points ``x`` on the surface of ``obj``."""
    p, _ = _to_local(obj, x, np.zeros(3))
    size = obj["size"]
    if obj["shape"] == "sphere":
        n = p
    elif obj["shape"] == "cube":  # the face is the axis on which the point is farthest out
        n = np.zeros_like(p)
        axis = np.abs(p).argmax(-1)
        rows = np.arange(len(p))
        n[rows, axis] = np.sign(p[rows, axis])
    else:
        radial = np.hypot(p[:, 0], p[:, 1])
        on_cap = (size - np.abs(p[:, 2])) < (size - radial)
        n = np.where(on_cap[:, None], np.stack([0 * radial, 0 * radial, np.sign(p[:, 2])], -1), p * [1, 1, 0])
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return _from_local(obj, n)


def cast(objects: list[dict[str, Any]], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of rays [R,3] against ground and objects: (t [R], id [R]).

    id 0 = ground or sky (t = inf for sky), id i + 1 = ``objects[i]``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ground = -o[:, 2] / d[:, 2]
    t = np.where((d[:, 2] < 0) & (ground > _EPS), ground, np.inf)
    ids = np.zeros(len(o), dtype=np.uint8)
    for i, obj in enumerate(objects):
        ti = intersect(obj, o, d)
        nearer = ti < t
        t = np.where(nearer, ti, t)
        ids[nearer] = i + 1
    return t, ids


def occluded(objects: list[dict[str, Any]], x: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Whether the shadow ray from each point towards the light hits any object."""
    hit = np.zeros(len(x), dtype=bool)
    for obj in objects:
        hit |= np.isfinite(intersect(obj, x, light))
    return hit


__all__ = ["cast", "intersect", "occluded", "surface_normal"]
