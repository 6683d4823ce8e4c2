import math

import numpy as np
import pytest

from objdisc.geometry import clevr_intrinsics, look_at
from objdisc.render.motions import MOTIONS, UNFADED, camera_path, ease_fade

POS = np.array([3.0, 4.0, 5.0])


@pytest.fixture
def camera():
    return look_at(POS).astype(np.float64), clevr_intrinsics(24, 32).astype(np.float64)


def assert_looks_at(c2w, target, eye=None):
    """Forward axis through ``target``, camera level (right axis horizontal) and upright."""
    if eye is not None:
        np.testing.assert_allclose(c2w[:3, 3], eye, atol=1e-9)
    direction = np.asarray(target, dtype=np.float64) - c2w[:3, 3]
    np.testing.assert_allclose(c2w[:3, 2], direction / np.linalg.norm(direction), atol=1e-6)
    assert abs(c2w[2, 0]) < 1e-6
    assert c2w[2, 1] < 0


def test_ease_fade_endpoints_continuity_and_rest():
    assert ease_fade(0.0) == 0.0
    assert ease_fade(1.0) == pytest.approx(1.0)
    eps = 1e-9
    for knot, value in ((0.2, 0.125), (0.8, 0.875)):
        assert ease_fade(knot - eps) == pytest.approx(value, abs=1e-7)
        assert ease_fade(knot + eps) == pytest.approx(value, abs=1e-7)
    h = 1e-5
    assert ease_fade(h) / h < 1e-3  # starts at rest
    assert (1.0 - ease_fade(1.0 - h)) / h < 1e-3  # stops at rest
    assert ease_fade(0.5) == pytest.approx(0.125 + 1.25 * 0.3)  # linear middle, speed 1.25
    ts = np.linspace(0, 1, 101)
    assert np.all(np.diff(ease_fade(ts)) > 0)


def test_rotate(camera):
    c2w, k = camera
    assert np.allclose(MOTIONS["rotate"](c2w, k, 0.0)[0], c2w)
    for t in (0.1, 0.37, 0.9):
        out, k_out = MOTIONS["rotate"](c2w, k, t)
        assert np.hypot(*out[:2, 3]) == pytest.approx(5.0)
        assert out[2, 3] == pytest.approx(5.0)
        assert np.allclose(k_out, k)
        assert_looks_at(out, np.zeros(3))
    quarter, _ = MOTIONS["rotate"](c2w, k, 0.25)
    np.testing.assert_allclose(quarter[:3, 3], [-4.0, 3.0, 5.0], atol=1e-12)  # (x, y) → (−y, x)


@pytest.mark.parametrize("name", sorted(MOTIONS))
def test_every_motion_gives_proper_rotations(camera, name):
    c2w, k = camera
    for t in np.linspace(0, 1, 9):
        out, k_out = MOTIONS[name](c2w, k, float(t))
        r = out[:3, :3]
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-6)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_array_equal(out[3], [0, 0, 0, 1])
        assert k_out.shape == (3, 3)


def test_closeup_follows_its_track_point(camera):
    c2w, k = camera
    closeup = MOTIONS["closeup"]
    assert_looks_at(closeup(c2w, k, 0.0)[0], np.zeros(3), eye=POS)
    # t = 0.5: xy halfway to 0.2·pos, z = 5 + (0.5 − 5)·easeout(0.5) with easeout(0.5) = 0.625,
    # track point halfway from the origin to pos + (0 − pos)·3 = −2·pos (z = 0).
    assert_looks_at(closeup(c2w, k, 0.5)[0], [-3.0, -4.0, 0.0], eye=[1.8, 2.4, 2.1875])
    end, _ = closeup(c2w, k, 1.0)
    assert_looks_at(end, [-6.0, -8.0, 0.0], eye=[0.6, 0.8, 0.5])


def test_rotate_and_closeup_half_way(camera):
    c2w, k = camera
    # t = 0.5: t_c = 0.5, closeup with lookup 1.5 (track → −0.5·pos), then a half turn.
    out, _ = MOTIONS["rotate_and_closeup"](c2w, k, 0.5)
    assert_looks_at(out, [0.75, 1.0, 0.0], eye=[-1.8, -2.4, 2.1875])
    assert np.allclose(MOTIONS["rotate_and_closeup"](c2w, k, 0.0)[0], c2w, atol=1e-6)


def test_obsurf_closeup(camera):
    c2w, k = camera
    fn = MOTIONS["obsurf_closeup"]
    assert_looks_at(fn(c2w, k, 0.0)[0], np.zeros(3), eye=POS)
    norm = math.sqrt(50.0)
    final_track = np.array([-1.5 * 3 / norm, -1.5 * 4 / norm, 0.0])
    assert_looks_at(fn(c2w, k, 1.0)[0], final_track, eye=[0.9, 1.2, 1.25])
    # t = 0.5: eye z = 5 + (1.25 − 5)·0.625; the gaze starts on the floor along the original
    # view axis through the current position: eye − pos·(eye_z/pos_z).
    eye = np.array([1.95, 2.6, 2.65625])
    floor = eye - POS * (eye[2] / POS[2])
    assert_looks_at(fn(c2w, k, 0.5)[0], 0.5 * (floor + final_track), eye=eye)


def test_eyeroll_fixed_camera_circling_gaze(camera):
    c2w, k = camera
    for t, target in ((0.0, [1.5, 0, 0]), (0.25, [0, -1.5, 0]), (0.5, [-1.5, 0, 0])):
        out, k_out = MOTIONS["eyeroll"](c2w, k, t)
        assert_looks_at(out, target, eye=POS)
        assert np.allclose(k_out, k)


def test_zoom_scales_focal_not_pose(camera):
    c2w, k = camera
    half, k_half = MOTIONS["zoom"](c2w, k, 0.5)
    assert np.allclose(half, c2w)
    assert k_half[0, 0] / k[0, 0] == pytest.approx(1 / 0.6)
    _, k_end = MOTIONS["zoom"](c2w, k, 1.0)
    np.testing.assert_allclose(np.diag(k_end)[:2] / np.diag(k)[:2], [5.0, 5.0])
    np.testing.assert_allclose(k_end[:2, 2], k[:2, 2])
    cams, ks = camera_path(c2w, k, "zoom", 100, fade=True)  # zoom ignores the fade
    assert ks[-1, 0, 0] / k[0, 0] == pytest.approx(1 / (1 - 0.8 * 0.99))
    assert ks[50, 0, 0] / k[0, 0] == pytest.approx(1 / 0.6)
    assert "zoom" in UNFADED


def test_static_and_graspnet(camera):
    c2w, k = camera
    cams, ks = camera_path(c2w, k, "graspnet", 5)
    assert np.allclose(cams, c2w) and np.allclose(ks, k)


def test_camera_path_timing_fade_and_dtype(camera):
    c2w, k = camera
    cams, ks = camera_path(c2w.astype(np.float32), k.astype(np.float32), "rotate", 4)
    assert cams.shape == (4, 4, 4) and ks.shape == (4, 3, 3) and cams.dtype == np.float32
    np.testing.assert_allclose(cams[0], c2w, atol=1e-6)
    np.testing.assert_allclose(cams[1, :3, 3], [-4.0, 3.0, 5.0], atol=1e-5)  # t = 1/4
    np.testing.assert_allclose(cams[2, :3, 3], [-3.0, -4.0, 5.0], atol=1e-5)
    faded, _ = camera_path(c2w, k, "rotate", 10, fade=True)
    angle = 2 * math.pi * ease_fade(0.1)  # 2π·0.03125
    expected = [3 * math.cos(angle) - 4 * math.sin(angle), 3 * math.sin(angle) + 4 * math.cos(angle), 5.0]
    np.testing.assert_allclose(faded[1, :3, 3], expected, atol=1e-9)


def test_unknown_motion_lists_known(camera):
    with pytest.raises(ValueError, match="rotate_and_closeup"):
        camera_path(*camera, "spin", 3)


def project(c2w, k, point):
    """Pixel (u, v) of a world point seen by an OpenCV camera."""
    cam = (np.linalg.inv(c2w) @ [*point, 1.0])[:3]
    return (k @ (cam / cam[2]))[:2]


def test_zoom2d_shrinks_the_window_around_the_offset_centre(camera):
    """ObSuRF's zoom2d: the window of the image, half-size 0.5 → 0.1 of its side, centred 1/128 of
    the side right of and below the middle, fills the frame; the camera does not move."""
    c2w, k = camera  # 32 × 24 image, principal point (16, 12)
    size = np.array([32.0, 24.0])
    zoom2d = MOTIONS["zoom2d"]
    for t, half in ((0.0, 0.5), (0.5, 0.3), (1.0, 0.1)):
        out, k_out = zoom2d(c2w, k, t)
        np.testing.assert_array_equal(out, c2w)
        np.testing.assert_allclose(np.diag(k_out)[:2] / np.diag(k)[:2], [0.5 / half] * 2)
        # The window's centre and corners (as pixels of the original image) land on the frame's
        # centre and corners: the same world points, seen through both cameras.
        for corner in ((0, 0), (-1, -1), (1, 1), (1, -1)):
            original = size * (0.5 + 1 / 128 + half * np.array(corner, dtype=np.float64))
            ray = np.linalg.solve(k, [*original, 1.0])
            point = c2w[:3, :3] @ ray * 7.0 + c2w[:3, 3]  # any depth along the pixel's ray
            np.testing.assert_allclose(project(out, k_out, point), size * (0.5 + 0.5 * np.array(corner)), atol=1e-9)
    # Already shifted by the offset at t = 0: half a pixel at 64 wide, i.e. 1/128 of any side.
    _, k0 = zoom2d(c2w, k, 0.0)
    np.testing.assert_allclose(k0[:2, 2], k[:2, 2] - size / 128)


def test_zoom2d_is_zoom_off_centre_and_ignores_the_fade(camera):
    c2w, k = camera
    for t in (0.1, 0.6, 0.99):
        focal = [0, 1], [0, 1]
        np.testing.assert_allclose(MOTIONS["zoom2d"](c2w, k, t)[1][focal], MOTIONS["zoom"](c2w, k, t)[1][focal])
    assert "zoom2d" in UNFADED
    _, plain = camera_path(c2w, k, "zoom2d", 10)
    _, faded = camera_path(c2w, k, "zoom2d", 10, fade=True)
    np.testing.assert_array_equal(plain, faded)
    np.testing.assert_allclose(plain[5, 0, 0] / k[0, 0], 0.5 / 0.3)  # t = 0.5
