"""The ray caster of the procedural scenes: known hit distances, ids, normals and shadows."""

from __future__ import annotations

import numpy as np

from objdisc.data.raytrace import cast, intersect, occluded, surface_normal

SPHERE = dict(shape="sphere", size=1.0, position=[0.0, 0.0, 1.0], rotation=0.0)
CUBE = dict(shape="cube", size=0.5, position=[3.0, 0.0, 0.5], rotation=45.0)


def test_hits_distances_and_ids() -> None:
    down = np.array([0.0, 0.0, -1.0])
    o = np.array([[0.0, 0.0, 10.0], [3.0, 0.0, 10.0], [6.0, 0.0, 10.0], [0.0, 0.0, 10.0]])
    d = np.stack([down, down, down, -down])
    t, ids = cast([SPHERE, CUBE], o, d)
    np.testing.assert_allclose(t[:3], [8.0, 9.0, 10.0])  # sphere top z=2, cube top z=1, ground z=0
    assert ids.tolist() == [1, 2, 0, 0] and np.isinf(t[3])  # an upward ray sees sky
    # A 45°-turned cube of half-size 0.5 reaches its corner at x = 3 + 0.5·√2 along the x axis.
    side = intersect(CUBE, np.array([[10.0, 0.0, 0.5]]), np.array([-1.0, 0.0, 0.0]))
    np.testing.assert_allclose(side, [10.0 - 3.0 - 0.5 * np.sqrt(2)])


def test_normals_are_unit_and_outward() -> None:
    top = surface_normal(SPHERE, np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 1.0]]))
    np.testing.assert_allclose(top, [[0, 0, 1], [1, 0, 0]], atol=1e-12)


def test_shadow_rays() -> None:
    ground = np.array([[0.5, 0.0, 0.0], [5.0, 5.0, 0.0]])  # under the sphere (it enters at z 0.13), and in the open
    assert occluded([SPHERE], ground, np.array([0.0, 0.0, 1.0])).tolist() == [True, False]
