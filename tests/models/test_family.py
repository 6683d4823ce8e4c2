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
