"""Per-slot renders (``SceneModel.decode_slots``, ``objdisc render --slots``): what each slot
renders alone, how the slot renders compose into the full render under each model's composition
rule, and the extra panels of the render frames."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from objdisc.config import DatasetConfig, ImageConfig, RenderConfig
from objdisc.data.synth import SynthConfig, render_scene
from objdisc.models.family import VIEWS, ViewsFamily
from objdisc.models.obsurf import ObSuRF, ObSuRFConfig
from objdisc.models.osrt import OSRT, OSRTConfig
from objdisc.models.srt import SRT, SRTConfig


SYNTH = SynthConfig(scenes=2, views=3, height=24, width=32, seed=1)
DATA = DatasetConfig(source="synth", image=ImageConfig(size=32), views={"num_input_views": 1})


class Scenes:
    """The bits of ``SceneDataset`` that rendering reads: ``scene(i)`` and ``[(i, seed)]``."""

    def __init__(self, data: DatasetConfig = DATA) -> None:
        self.transform = VIEWS.transform(data, train=False)

    def scene(self, i: int) -> dict:
        return render_scene(SYNTH, i) | {"__key__": f"{i:08d}", "objects": [], "meta": {}}

    def __len__(self) -> int:
        return SYNTH.scenes

    def __getitem__(self, item):
        position, seed = item
        sample = self.transform(self.scene(position), torch.Generator().manual_seed(seed))
        sample["index"] = position
        return sample


def batch_of(dataset: Scenes, i: int = 0) -> dict:
    return {k: v[None] if torch.is_tensor(v) else v for k, v in dataset[(i, 0)].items()}


def obsurf(**overrides) -> ObSuRF:
    torch.manual_seed(0)
    return ObSuRF(ObSuRFConfig.cpu(**overrides)).eval()


# ---------------------------------------------------------------------------------------------
# The protocol


def test_only_models_with_per_slot_decoding_offer_it():
    assert ObSuRF.has_slot_decoding() and OSRT.has_slot_decoding()
    assert not SRT.has_slot_decoding()
    model = SRT(SRTConfig.cpu())
    with pytest.raises(NotImplementedError, match="SRT cannot render its slots"):
        model.decode_slots(None, torch.zeros(1, 1, 3), torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="model SRT cannot render its slots one by one"):
        ViewsFamily.check_slot_decoding(model)


# ---------------------------------------------------------------------------------------------
# ObSuRF: the scene is the density-weighted mixture of the slots' fields


def test_obsurf_field_is_the_density_weighted_mixture_of_the_single_slot_fields():
    model = obsurf()
    dataset = Scenes()
    with torch.no_grad():
        latent = model.encode(batch_of(dataset))
        points = torch.randn(1, 50, 3) * 3
        dirs = torch.nn.functional.normalize(torch.randn(1, 50, 3), dim=-1)
        full = model.field(latent, points, dirs)
        alone = [model.field({**latent, "slots": latent["slots"][:, s : s + 1]}, points, dirs) for s in range(4)]
    density = torch.stack([a["density"] for a in alone], 1)  # [B,S,N]
    colour = torch.stack([a["colour"] for a in alone], 1)  # [B,S,N,3]
    torch.testing.assert_close(full["slot_density"], density)
    torch.testing.assert_close(full["density"], density.sum(1))
    torch.testing.assert_close(full["colour"], (density[..., None] * colour).sum(1) / density.sum(1)[..., None])


def test_obsurf_decode_slots_renders_each_slot_alone():
    model = obsurf(render_chunk=5)
    dataset = Scenes()
    batch = batch_of(dataset)
    o, d = batch["target_camera_pos"][:, :12], batch["target_rays"][:, :12]
    with torch.no_grad():
        latent = model.encode(batch)
        slots = model.decode_slots(latent, o, d)
        one = model.decode({**latent, "slots": latent["slots"][:, 2:3]}, o, d)
        model.cfg.render_chunk = 512
        whole = model.decode_slots(latent, o, d)
    assert slots["rgb"].shape == (1, 12, 4, 3) and slots["alpha"].shape == (1, 12, 4) and slots["depth"].shape == (1, 12, 4)
    assert ((slots["alpha"] >= 0) & (slots["alpha"] <= 1)).all()
    torch.testing.assert_close(slots["rgb"][:, :, 2], one["rgb"])
    torch.testing.assert_close(slots["alpha"][:, :, 2], one["alpha"])
    for key in ("rgb", "alpha", "depth"):  # rays are independent: any chunking renders the same
        torch.testing.assert_close(slots[key], whole[key], atol=1e-5, rtol=1e-5)


CENTRES = torch.tensor([[0.0, 0.0, 1.0], [3.0, 0.0, 1.0], [-3.0, 0.0, 1.0], [0.0, 50.0, 1.0]])
COLOURS = torch.tensor([[4.0, -4.0, -4.0], [-4.0, 4.0, -4.0], [-4.0, -4.0, 4.0], [4.0, 4.0, -4.0]])


class Spheres(nn.Module):
    """Stand-in for ObSuRF's AIN decoder: slot s (the argmax of its latent) is a ball of radius
    0.8 around CENTRES[s], density logit +20 inside and −40 outside, colour logits COLOURS[s]."""

    def forward(self, slots, points_enc, dirs, pixel_features):
        ids = slots.argmax(-1)  # [B,S]
        points = points_enc[..., :3]  # ObSuRF's point encoding starts with the raw coordinates
        inside = (points[:, None] - CENTRES[ids][:, :, None]).norm(dim=-1) < 0.8  # [B,S,N]
        density = torch.where(inside, 20.0, -40.0)
        colour = COLOURS[ids][:, :, None].expand(*inside.shape, 3)
        return density, colour


def test_obsurf_slot_renders_compose_into_the_full_render_where_slots_do_not_overlap():
    """Four slots, each a ball (one out of sight); rays straight down through each ball and one
    through none. Along every ray at most one slot has density, so by the mixture rule the full
    render is the slot renders composited: α = Σₛ αₛ, rgb·α = Σₛ rgbₛ·αₛ, masksₛ = αₛ/α."""
    model = obsurf(use_pixel_features=False)
    model.decoder = Spheres()
    latent = {"slots": torch.eye(4, model.cfg.c_dim)[None]}
    origins = torch.tensor([[[0.0, 0.0, 6.0], [3.0, 0.0, 6.0], [-3.0, 0.0, 6.0], [6.0, 0.0, 6.0]]])
    dirs = torch.tensor([0.0, 0.0, -1.0]).expand(1, 4, 3)
    with torch.no_grad():
        full = model.decode(latent, origins, dirs)
        slots = model.decode_slots(latent, origins, dirs)
    alpha = slots["alpha"]
    torch.testing.assert_close(alpha[0, :3].diagonal(), torch.ones(3), atol=1e-4, rtol=0)  # each ball is opaque
    torch.testing.assert_close(full["alpha"], alpha.sum(-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(full["rgb"] * full["alpha"][..., None], (slots["rgb"] * alpha[..., None]).sum(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(full["masks"][0, :3], alpha[0, :3] / alpha[0, :3].sum(-1, keepdim=True), atol=1e-4, rtol=0)
    torch.testing.assert_close(full["rgb"][0, :3], torch.sigmoid(COLOURS[:3]), atol=1e-4, rtol=0)
    assert full["alpha"][0, 3] < 1e-6  # the fourth ray meets nothing
    torch.testing.assert_close(slots["depth"][0, :3].diagonal(), torch.full((3,), 6.0 - 1.8), atol=0.2, rtol=0)


# ---------------------------------------------------------------------------------------------
# OSRT


def osrt(**overrides) -> OSRT:
    torch.manual_seed(0)
    return OSRT(replace(OSRTConfig.cpu(num_slots=3), **overrides)).eval()


def test_osrt_spatial_broadcast_mixes_the_slot_renders_by_its_weights():
    model = osrt(decoder="spatial_broadcast")
    batch = batch_of(Scenes())
    with torch.no_grad():
        latent = model.encode(batch)
        full = model.decode(latent, batch["target_camera_pos"], batch["target_rays"])
        slots = model.decode_slots(latent, batch["target_camera_pos"], batch["target_rays"])
    p = batch["target_rays"].shape[1]
    assert slots["rgb"].shape == (1, p, 3, 3) and "alpha" not in slots
    torch.testing.assert_close(full["rgb"], (full["masks"][..., None] * slots["rgb"]).sum(2), atol=1e-6, rtol=0)


def test_osrt_slot_mixer_renders_the_winning_slot_where_its_weights_are_one_hot():
    """The Slot Mixer mixes slot latents, not colours: only with one-hot mixing weights is the
    full render the winning slot's render."""
    model = osrt()
    batch = batch_of(Scenes())
    o, d = batch["target_camera_pos"][:, :64], batch["target_rays"][:, :64]
    with torch.no_grad():
        model.decoder.mix_k.weight.mul_(1e4)  # sharpen the mixing softmax to one-hot
        latent = model.encode(batch)
        full = model.decode(latent, o, d)
        slots = model.decode_slots(latent, o, d)
    assert (full["masks"].max(-1).values > 1 - 1e-6).all()
    winner = full["masks"].argmax(-1)
    picked = slots["rgb"].gather(2, winner[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
    torch.testing.assert_close(full["rgb"], picked, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Frames


def frame_cells(frame: np.ndarray, columns: int, height: int, width: int, pad: int = 2) -> list[np.ndarray]:
    """Cut a one-row ``image_grid`` picture of ``columns`` equal cells back into its cells,
    downsampled to height × width (the grid upscales small images by an integer factor)."""
    cell_w = (frame.shape[1] - pad) // columns - pad
    assert frame.shape[1] == columns * (cell_w + pad) + pad
    scale = cell_w // width
    cell_h = height * scale
    top = frame.shape[0] - pad - cell_h
    return [frame[top : top + cell_h : scale, pad + j * (cell_w + pad) :][:, : cell_w : scale] for j in range(columns)]


def test_frames_get_one_panel_per_slot_showing_it_alone_over_white():
    from objdisc.data.views import make_render_rays

    model = obsurf()
    dataset = Scenes()
    cfg = RenderConfig(num_frames=2, chunk_rays=200)
    plain = VIEWS.camera_frames(model, dataset, 0, cfg, "cpu")
    with_slots = VIEWS.camera_frames(model, dataset, 0, replace(cfg, slots=True), "cpu")
    assert len(with_slots) == 2
    h, w = SYNTH.height, SYNTH.width
    assert len(frame_cells(plain[0], 3, h, w)) == 3  # input, render, segmentation
    cells = frame_cells(with_slots[0], 3 + 4, h, w)  # + slot 0 … slot 3
    np.testing.assert_array_equal(cells[1], frame_cells(plain[0], 3, h, w)[1])  # same render panel
    # The slot panels of frame 0 (t = 0: the input camera) are what each slot renders alone,
    # composited over white with its own alpha.
    batch = batch_of(dataset)
    scene = dataset.scene(0)
    origins, dirs = make_render_rays(
        torch.from_numpy(scene["cam2world"][0]), torch.from_numpy(scene["intrinsics"][0]), h, w, batch["transform"][0]
    )
    torch.manual_seed(0)  # as camera_frames before it encodes (ObSuRF samples its initial slots)
    with torch.no_grad():
        slots = model.decode_slots(model.encode(batch), origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3))
    rgb, alpha = slots["rgb"][0].clamp(0, 1), slots["alpha"][0, ..., None]
    expected = np.round(((rgb * alpha + 1 - alpha) * 255).numpy()).astype(np.uint8)  # [P,S,3]
    for s in range(4):
        np.testing.assert_array_equal(cells[3 + s], expected[:, s].reshape(h, w, 3))


def test_render_writes_videos_with_the_slot_panels(tmp_path):
    cfg = RenderConfig(scene_ids=[1], num_frames=2, slots=True)
    [video] = VIEWS.render(obsurf(), Scenes(), DATA, cfg, tmp_path, "cpu", step=0, progress=False)
    assert video == tmp_path / "scene_1.mp4" and video.stat().st_size > 0
    frames = sorted((tmp_path / "scene_1" / "frames").glob("*.png"))
    assert [f.name for f in frames] == ["0.png", "1.png"]


def test_osrt_frames_show_each_slot_under_its_weight():
    model = osrt()
    frames = VIEWS.camera_frames(model, Scenes(), 1, RenderConfig(num_frames=1, slots=True), "cpu")
    cells = frame_cells(frames[0], 3 + 3, SYNTH.height, SYNTH.width)
    assert all(c.shape == (SYNTH.height, SYNTH.width, 3) for c in cells)


def test_slots_option_names_a_model_without_per_slot_renders(tmp_path):
    model = SRT(SRTConfig.cpu())
    cfg = RenderConfig(num_frames=1, slots=True)
    with pytest.raises(ValueError, match="model SRT cannot render its slots one by one"):
        VIEWS.render(model, Scenes(), DATA, cfg, tmp_path, "cpu", step=0, progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything was rendered
    with pytest.raises(ValueError, match="model SRT"):
        VIEWS.camera_frames(model, Scenes(), 0, cfg, "cpu")


def test_slots_option_on_a_2d_model_is_an_error(tmp_path):
    """2D pictures already show each slot: render.slots there is a mistake, said before rendering."""
    from objdisc.models import build_model
    from objdisc.models.family import IMAGE

    model = build_model("slot_attention", {"resolution": 16, "num_slots": 3})
    with pytest.raises(ValueError, match="renders 2D pictures, which already show each slot"):
        IMAGE.render(model, Scenes(), DATA, RenderConfig(num_frames=1, slots=True), tmp_path, "cpu", step=0, progress=False)
    assert not any(tmp_path.iterdir())
