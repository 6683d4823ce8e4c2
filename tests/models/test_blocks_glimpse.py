"""Glimpses: the whole-image box is the identity, a pasted glimpse lands where it was cut, boxes
are where the transform says."""

import torch

from objdisc.models.blocks.glimpse import boxes, extract, place


def test_whole_image_box_is_identity():
    image = torch.rand(2, 3, 16, 16)
    one, zero = torch.ones(2, 2), torch.zeros(2, 2)
    torch.testing.assert_close(extract(image, one, zero, 16), image, atol=1e-5, rtol=0)
    torch.testing.assert_close(place(image, one, zero, (16, 16)), image, atol=1e-5, rtol=0)


def test_cut_and_paste_round_trip_inside_the_box():
    image = torch.zeros(1, 1, 32, 32)
    image[0, 0, 8:16, 16:24] = torch.rand(8, 8)
    scale = torch.tensor([[0.25, 0.25]])  # 8 px of 32
    shift = torch.tensor([[0.25, -0.25]])  # centre at x = 20, y = 12 pixels
    glimpse = extract(image, scale, shift, 8)
    torch.testing.assert_close(glimpse[0, 0], image[0, 0, 8:16, 16:24], atol=1e-5, rtol=0)
    back = place(glimpse, scale, shift, (32, 32))
    torch.testing.assert_close(back, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(boxes(scale, shift, (32, 32)), torch.tensor([[16.0, 8.0, 24.0, 16.0]]))


def test_boxes_inside_the_image_for_boxes_inside():
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(100, 2, generator=g) * 0.5 + 0.05
    shift = (torch.rand(100, 2, generator=g) * 2 - 1) * (1 - scale)
    b = boxes(scale, shift, (64, 48))
    assert (b[:, 0] >= -1e-4).all() and (b[:, 2] <= 48 + 1e-4).all() and (b[:, 1] >= -1e-4).all() and (b[:, 3] <= 64 + 1e-4).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
