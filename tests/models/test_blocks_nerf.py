"""``render_along_rays``: NeRF's hierarchical sampling shared by V-SRT and ObSuRF
(objdisc.models.blocks.nerf), on hand-made scene functions."""

from __future__ import annotations

import math

import torch

from objdisc.models.blocks.nerf import (
    alpha_composite,
    over_background,
    render_along_rays,
    stratified_depths,
    surface_density_composite,
)


def slab_field(calls: list, origins: torch.Tensor, dirs: torch.Tensor, density: float = 10.0):
    """A scene function: density inside the slab 1 ≤ z ≤ 2, colour (z/4, 0.5, 1), and an extra
    per-sample value ``masks`` (two "slots": above / below z = 1.5). Records its calls."""

    def field(depths: torch.Tensor, fine: bool) -> dict[str, torch.Tensor]:
        calls.append((depths, fine))
        points = origins[..., None, :] + dirs[..., None, :] * depths[..., None]
        z = points[..., 2]
        inside = ((z >= 1.0) & (z <= 2.0)).float()
        colour = torch.stack([z / 4, torch.full_like(z, 0.5), torch.ones_like(z)], dim=-1)
        upper = (z > 1.5).float()
        return {"density": density * inside, "colour": colour, "masks": torch.stack([upper, 1 - upper], -1)}

    return field


def rays():
    origins = torch.tensor([[[0.0, 0.0, 5.0], [1.0, 0.0, 5.0], [0.0, 0.0, 5.0]]])
    dirs = torch.nn.functional.normalize(torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.3, -1.0], [1.0, 0.0, 0.0]]]), dim=-1)
    return origins, dirs  # two rays cross the slab, the third runs level above it


def test_hierarchical_sampling_merges_sorted_samples_and_reuses_the_coarse_values():
    origins, dirs = rays()
    calls: list = []
    fine, coarse = render_along_rays(slab_field(calls, origins, dirs), origins, dirs, 0.5, 10.0, 32, 16, False)
    assert [(d.shape[-1], f) for d, f in calls] == [(32, False), (16, True)]  # coarse values not re-evaluated
    assert fine["weights"].shape == (1, 3, 48) and coarse["weights"].shape == (1, 3, 32)
    t_coarse, t_fine = calls[0][0], calls[1][0]
    assert not t_fine.requires_grad  # importance samples carry no gradient
    # Fine samples cluster where the coarse weights are: inside the slab for the crossing rays.
    assert ((t_fine[0, 0] > 2.5) & (t_fine[0, 0] < 4.5)).float().mean() > 0.8
    assert (t_coarse >= 0.5).all() and (t_coarse <= 10.0).all()
    # Compositing sees the merged depths in order: the depth estimate lands inside the slab.
    assert 3.0 <= fine["depth"][0, 0] <= 4.0
    # Extra values are composited with the weights: the crossing rays meet the upper half first.
    torch.testing.assert_close(fine["masks"].sum(-1), fine["alpha"], atol=1e-5, rtol=0)
    assert fine["masks"][0, 0, 0] > 0.9 and fine["alpha"][0, 0] > 0.99
    assert fine["alpha"][0, 2] == 0 and torch.equal(fine["masks"][0, 2], torch.zeros(2))


def test_gradients_reach_the_density_through_both_composites():
    origins, dirs = rays()
    scale = torch.tensor(1.0, requires_grad=True)
    base = slab_field([], origins, dirs)

    def field(depths, fine):
        out = base(depths, fine)
        return {**out, "density": out["density"] * scale}

    fine, coarse = render_along_rays(field, origins, dirs, 0.5, 10.0, 16, 8, False)
    (fine["rgb"].sum() + coarse["rgb"].sum()).backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)


def test_min_z_clips_the_far_bound():
    origins, dirs = rays()
    calls: list = []
    render_along_rays(slab_field(calls, origins, dirs), origins, dirs, 0.5, 40.0, 16, 8, True, min_z=1.5)
    for depths, _ in calls:
        z = (origins[..., None, :] + dirs[..., None, :] * depths[..., None])[..., 2]
        assert (z[0, :2] >= 1.5 - 1e-4).all()  # the rays that go down stop at z = 1.5
        assert depths[0, 2].max() > 30.0  # the level ray never meets the plane: far stays 40


def test_without_fine_samples_both_composites_are_the_coarse_one():
    origins, dirs = rays()
    fine, coarse = render_along_rays(slab_field([], origins, dirs), origins, dirs, 0.5, 10.0, 16, 0, True)
    assert fine is coarse and fine["weights"].shape[-1] == 16


def test_deterministic_rendering_is_reproducible_and_chunkable():
    origins, dirs = rays()
    whole, _ = render_along_rays(slab_field([], origins, dirs), origins, dirs, 0.5, 10.0, 16, 8, True)
    o1, d1 = origins[:, :1], dirs[:, :1]
    part, _ = render_along_rays(slab_field([], o1, d1), o1, d1, 0.5, 10.0, 16, 8, True)
    torch.testing.assert_close(part["rgb"], whole["rgb"][:, :1])
    torch.testing.assert_close(part["depth"], whole["depth"][:, :1])


def test_alpha_composite_invariants_on_random_fields():
    torch.manual_seed(0)
    depths = stratified_depths(0.0, torch.full((6, 20), 10.0), 64, deterministic=False)
    density = torch.rand(6, 20, 64) * torch.rand(6, 20, 1) * 4
    colour = torch.rand(6, 20, 64, 3)
    out = alpha_composite(density, colour, depths)
    total = out["weights"].sum(-1)
    assert (out["weights"] >= 0).all() and (total <= 1 + 1e-6).all()
    torch.testing.assert_close(total, out["alpha"], atol=1e-5, rtol=0)
    rgb = over_background(out["rgb"], out["alpha"])
    assert (rgb >= 0).all() and (rgb <= 1 + 1e-6).all()
    # No density: transparent, white over a white background.
    empty = alpha_composite(torch.zeros(2, 8), torch.rand(2, 8, 3), torch.arange(8.0).expand(2, 8))
    torch.testing.assert_close(over_background(empty["rgb"], empty["alpha"]), torch.ones(2, 3), atol=1e-6, rtol=0)
    # Density only in the last sample (δ = 10¹⁰): fully opaque there.
    last = alpha_composite(torch.tensor([[0.0, 0.0, 1e-3]]), torch.zeros(1, 3, 3), torch.tensor([[1.0, 2.0, 3.0]]))
    assert math.isclose(last["alpha"].item(), 1.0) and math.isclose(last["depth"].item(), 3.0, rel_tol=1e-6)


def test_surface_composite_through_the_renderer():
    origins, dirs = rays()
    fine, _ = render_along_rays(
        slab_field([], origins, dirs), origins, dirs, 0.5, 10.0, 16, 16, True, composite=surface_density_composite
    )
    torch.testing.assert_close(fine["weights"][0, :2].sum(-1), torch.ones(2))  # normalised where there is density
    assert 3.0 <= fine["depth"][0, 0] <= 4.2
