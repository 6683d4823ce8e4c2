"""The evaluation families' scores (objdisc.models.family)."""

import torch

from objdisc.models.family import ViewsFamily
from objdisc.models.output import ModelOutput


def test_views_metrics_report_the_input_views_mean_colour_baseline():
    # Input views of one flat colour; targets 0.1 brighter in every channel: the baseline's error
    # is 0.01 per element (20 dB), whatever the model renders.
    colour = torch.tensor([0.2, 0.4, 0.6])
    batch = {
        "input_images": colour.view(1, 1, 3, 1, 1).expand(2, 1, 3, 4, 5).clone(),
        "target_pixels": (colour + 0.1).expand(2, 7, 3).clone(),
    }
    perfect = ModelOutput(loss=torch.zeros(()), recon=batch["target_pixels"].clone())
    scores = ViewsFamily().metrics(batch, perfect)
    torch.testing.assert_close(scores["psnr_mean_colour"], torch.full((2,), 20.0, dtype=torch.float64), rtol=0, atol=1e-4)
    assert scores["mse"].max().item() == 0.0
    # A baseline from two differently coloured input views is their mean, not either one.
    batch["input_images"] = torch.stack([torch.zeros(3, 4, 5), torch.full((3, 4, 5), 0.2)]).unsqueeze(0).expand(2, 2, 3, 4, 5)
    batch["target_pixels"] = torch.full((2, 7, 3), 0.1)
    scores = ViewsFamily().metrics(batch, perfect)
    assert (scores["psnr_mean_colour"] > 60).all()  # exact up to rounding (+inf when exact)


def test_views_frame_follows_the_model_unless_the_dataset_sets_it():
    # SRT and OSRT ask for the canonical frame of the first input camera, ObSuRF for world coordinates;
    # a dataset block that sets views.canonical decides for every model.
    from objdisc.config import DatasetConfig
    from objdisc.data.synth import SynthConfig, render_scene
    from objdisc.models.obsurf import ObSuRF
    from objdisc.models.osrt import OSRT
    from objdisc.models.srt import SRT

    s = render_scene(SynthConfig(), 0)
    scene = {k: s[k] for k in ("image", "mask", "depth", "cam2world", "intrinsics")} | {"__key__": "0", "objects": [], "meta": {}}

    def canonical(views: dict, model) -> bool:
        data = DatasetConfig(source="clevr3d", views=views)
        sample = ViewsFamily().transform(data, train=True, model=model)(scene, torch.Generator().manual_seed(0))
        identity = torch.allclose(sample["transform"], torch.eye(4))
        if not identity:  # the first input camera sits at the origin
            assert sample["input_camera_pos"][0].abs().max().item() < 1e-5
        return not identity

    views = {"num_input_views": 1, "num_target_rays": 16, "targets": "all"}
    assert canonical(views, SRT)
    assert not canonical(views, ObSuRF)
    assert canonical(views, OSRT)
    assert not canonical(views, None)
    assert not canonical(views | {"canonical": False}, SRT)
    assert not canonical(views | {"canonical": False}, OSRT)
    assert canonical(views | {"canonical": True}, ObSuRF)  # the dataset decides; ViewsFamily.check_dataset then refuses it (test_cli)


def test_image_metrics_report_the_image_blind_fg_ari_floor():
    # The floor is FG-ARI of the image cut into as many fixed cells as the model has segments:
    # K masks with a background slot, K + 1 for object-only masks (their implicit background).
    from objdisc import metrics
    from objdisc.models.family import ImageFamily

    true = torch.zeros(2, 16, 16, dtype=torch.long)
    true[:, 2:5, 2:5], true[:, 10:14, 9:13], true[1, 3:6, 11:14] = 1, 2, 3
    batch = {"image": torch.rand(2, 3, 16, 16), "mask": true}
    for k, with_background in ((7, True), (4, False)):
        masks = torch.rand(2, k, 16, 16).softmax(dim=1)
        out = ModelOutput(loss=torch.zeros(()), recon=batch["image"].clone(), masks=masks, masks_have_background=with_background)
        scores = ImageFamily().metrics(batch, out)
        segments = k if with_background else k + 1
        torch.testing.assert_close(scores["fg_ari_fixed_cells"], metrics.fg_ari_fixed_cells(true, segments), rtol=0, atol=0)
        # ... and it does not depend on what the model predicted.
        out.masks = masks.flip(1)
        torch.testing.assert_close(ImageFamily().metrics(batch, out)["fg_ari_fixed_cells"], scores["fg_ari_fixed_cells"], rtol=0, atol=0)
    assert not torch.equal(metrics.fg_ari_fixed_cells(true, 1), metrics.fg_ari_fixed_cells(true, 7))
