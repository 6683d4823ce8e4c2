"""Cameras, rays and the frame / intrinsics helpers of objdisc.geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from objdisc.geometry import (
    canonical_transform,
    centre_ray,
    clevr_intrinsics,
    clip_far,
    look_at,
    pixel_rays,
    positional_encoding,
    ray_plane_distance,
    resize_intrinsics,
    stride_intrinsics,
    transform_points,
)


def _camera(eye=(7.0, -5.0, 6.0), height=6, width=8):
    c2w = torch.from_numpy(look_at(np.array(eye)))
    k = torch.from_numpy(clevr_intrinsics(height, width))
    return c2w, k


def test_look_at_is_a_level_rotation_facing_the_target():
    c2w = look_at(np.array([[3.0, 4.0, 5.0], [-2.0, 1.0, 7.0]]))
    rot = c2w[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-6)
    forward = -c2w[:, :3, 3] / np.linalg.norm(c2w[:, :3, 3], axis=-1, keepdims=True)
    np.testing.assert_allclose(rot[:, :, 2], forward, atol=1e-6)
    np.testing.assert_allclose(rot[:, 2, 0], 0.0, atol=1e-7)  # right axis is horizontal
    assert (rot[:, 2, 1] < 0).all()  # image "down" points downwards in the world


def test_pixel_rays_match_the_clevr_reference_formula():
    height, width = 6, 8
    eye = np.array([7.0, -5.0, 6.0])
    c2w, k = _camera(eye, height, width)
    origins, dirs = pixel_rays(c2w.double(), k.double(), height, width)
    d = -eye / np.linalg.norm(eye)
    r = np.cross(d, [0, 0, 1.0])
    r /= np.linalg.norm(r)
    u = np.cross(d, r)
    for i in range(height):
        for j in range(width):
            h = (-1 + (2 * j + 1) / width) * 0.016
            v = (-1 + (2 * i + 1) / height) * 0.012
            ray = 0.035 * d + h * r + v * u
            np.testing.assert_allclose(dirs[i, j].numpy(), ray / np.linalg.norm(ray), atol=1e-6)
    np.testing.assert_allclose(origins.numpy(), np.broadcast_to(eye, origins.shape), atol=1e-6)


def test_positional_encoding_layout_and_values():
    x = torch.tensor([[0.5, 0.25]])
    out = positional_encoding(x, num_octaves=2, start_octave=0)
    s = [math.sin(0.5 * math.pi), math.sin(math.pi), math.sin(0.25 * math.pi), math.sin(0.5 * math.pi)]
    c = [math.cos(0.5 * math.pi), math.cos(math.pi), math.cos(0.25 * math.pi), math.cos(0.5 * math.pi)]
    torch.testing.assert_close(out, torch.tensor([s + c]), atol=1e-6, rtol=0)


def test_transform_points_rotates_and_translates():
    t = torch.eye(4)
    t[:3, :3] = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    t[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    p = torch.tensor([[1.0, 0.0, 0.0]])
    torch.testing.assert_close(transform_points(p, t), torch.tensor([[1.0, 3.0, 3.0]]))
    torch.testing.assert_close(transform_points(p, t, translate=False), torch.tensor([[0.0, 1.0, 0.0]]))


@pytest.mark.parametrize(
    ("height", "width", "rows", "cols"), [(5, 7, [2], [3]), (4, 6, [1, 2], [2, 3]), (4, 5, [1, 2], [2])]
)
def test_centre_ray_averages_exactly_the_centre_pixels(height, width, rows, cols):
    rays = torch.zeros(height, width, 3)
    rays[..., 2] = 1.0
    for r in rows:
        for c in cols:
            rays[r, c] = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(centre_ray(rays), torch.tensor([1.0, 0.0, 0.0]))


def test_canonical_transform_is_the_inverse_of_a_level_camera():
    c2w, k = _camera()
    _, dirs = pixel_rays(c2w, k, 6, 8)
    transform = canonical_transform(c2w[:3, 3], centre_ray(dirs))
    torch.testing.assert_close(transform, torch.linalg.inv(c2w), atol=1e-5, rtol=0)
    torch.testing.assert_close(transform @ c2w, torch.eye(4), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="parallel"):
        canonical_transform(torch.tensor([0.0, 0.0, 5.0]), torch.tensor([0.0, 0.0, -1.0]))


@pytest.mark.parametrize("stride", [2, 4])
def test_stride_intrinsics_reproduce_the_strided_rays(stride):
    height, width = 8, 12
    c2w, k = _camera(height=height, width=width)
    _, full = pixel_rays(c2w, k, height, width)
    _, strided = pixel_rays(c2w, stride_intrinsics(k, stride), height // stride, width // stride)
    o = stride // 2
    torch.testing.assert_close(strided, full[o::stride, o::stride], atol=1e-6, rtol=0)


def test_resize_intrinsics_keeps_the_image_edges():
    _, k = _camera(height=6, width=8)
    k2 = resize_intrinsics(k, (6, 8), (12, 20))
    for (u, v), (u2, v2) in [((0, 0), (0, 0)), ((8, 6), (20, 12)), ((4, 3), (10, 6))]:
        a = torch.linalg.solve(k, torch.tensor([u, v, 1.0]))
        b = torch.linalg.solve(k2, torch.tensor([u2, v2, 1.0]))
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_clip_far_stops_at_the_ground_plane():
    origins = torch.tensor([[0.0, 0.0, 10.0], [0.0, 0.0, 10.0], [0.0, 0.0, 10.0]])
    s = math.sqrt(0.5)
    dirs = torch.tensor([[s, 0.0, -s], [s, 0.0, s], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(ray_plane_distance(origins, dirs, -0.1)[0], torch.tensor(10.1 / s))
    assert torch.isinf(ray_plane_distance(origins, dirs, -0.1)[1:]).all()
    torch.testing.assert_close(clip_far(origins, dirs, 30.0, -0.1), torch.tensor([10.1 / s, 30.0, 30.0]))
    torch.testing.assert_close(clip_far(origins, dirs, 12.0, None), torch.full((3,), 12.0))
