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


# --------------------------------------------------------------------- cells (glimpse models)

from objdisc.models.blocks.glimpse import (
    cell_offsets,
    cell_shift,
    extract_cells,
    place_cells,
)


def test_cell_shift_puts_local_centre_half_at_the_cell_centres_in_raster_order():
    grid = (2, 3)  # 2 rows, 3 columns
    shift = cell_shift(torch.full((6, 2), 0.5), grid)
    xs = torch.tensor([-2 / 3, 0.0, 2 / 3] * 2)
    ys = torch.tensor([-0.5] * 3 + [0.5] * 3)
    torch.testing.assert_close(shift, torch.stack([xs, ys], -1))
    torch.testing.assert_close(cell_offsets(grid)[4], torch.tensor([1.0, 1.0]))  # row 1, column 1
    # local 0 and 1 are the cell's edges: cell (0, 0) spans [−1, −1/3] in x and [−1, 0] in y
    edges = cell_shift(torch.tensor([[0.0, 0.0], [1.0, 1.0]]).unsqueeze(1).expand(2, 6, 2), grid)[:, 0]
    torch.testing.assert_close(edges, torch.tensor([[-1.0, -1.0], [-1 / 3, 0.0]]))


def test_batched_cells_match_one_by_one_and_paste_back_inside_boxes():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 24, 24, generator=g)
    scale = torch.rand(2, 4, 2, generator=g) * 0.4 + 0.2
    shift = (torch.rand(2, 4, 2, generator=g) * 2 - 1) * 0.5
    cells = extract_cells(image, scale, shift, 6)
    assert cells.shape == (2, 4, 3, 6, 6)
    torch.testing.assert_close(cells[1, 2], extract(image[1:2], scale[1, 2:3], shift[1, 2:3], 6)[0])
    canvases = place_cells(torch.ones(2, 4, 1, 6, 6), scale, shift, (24, 24))
    assert canvases.shape == (2, 4, 1, 24, 24)
    b = boxes(scale, shift, (24, 24))
    ys, xs = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(24) + 0.5, indexing="ij")
    for i in range(2):
        for k in range(4):
            x0, y0, x1, y1 = b[i, k].tolist()
            mx, my = (x1 - x0) / 6 / 2 + 0.5, (y1 - y0) / 6 / 2 + 0.5  # bilinear bleed: half a glimpse pixel
            outside = (xs < x0 - mx) | (xs > x1 + mx) | (ys < y0 - my) | (ys > y1 + my)
            assert canvases[i, k, 0][outside].abs().max() == 0  # nothing lands outside the box
            inside = (xs > x0 + mx) & (xs < x1 - mx) & (ys > y0 + my) & (ys < y1 - my)
            assert canvases[i, k, 0][inside].min() > 0.99  # and the box is filled


def test_clipped_boxes_stay_in_the_image():
    scale = torch.tensor([[0.8, 0.8], [0.1, 0.1]])
    shift = torch.tensor([[0.9, -0.9], [0.0, 0.0]])
    b = boxes(scale, shift, (32, 16), clip=True)
    assert (b >= 0).all() and (b[:, [0, 2]] <= 16).all() and (b[:, [1, 3]] <= 32).all()
    torch.testing.assert_close(b[1], boxes(scale[1], shift[1], (32, 16)))  # inside: unchanged


def test_background_slot_for_pictures():
    from objdisc.models.blocks.glimpse import with_background_slot
    from objdisc.models.output import ModelOutput

    masks = torch.rand(2, 3, 8, 8) / 3
    out = ModelOutput(
        loss=torch.tensor(0.0), recon=torch.rand(2, 3, 8, 8), masks=masks, masks_have_background=False,
        slot_rgb=torch.rand(2, 3, 3, 8, 8), boxes=torch.rand(2, 3, 4), presence=torch.rand(2, 3),
        extras={"background": torch.rand(2, 3, 8, 8)},
    )  # fmt: skip
    shown = with_background_slot(out)
    assert shown.masks_have_background and shown.masks.shape == (2, 4, 8, 8)
    torch.testing.assert_close(shown.masks[:, 0], 1 - masks.sum(1))
    torch.testing.assert_close(shown.slot_rgb[:, 0], out.extras["background"])
    assert shown.boxes.shape == (2, 4, 4) and (shown.presence[:, 0] == 0).all()  # box k+1 ↔ segment k+1


def test_glimpse_models_draw_their_pictures_with_the_background_as_slot_0(monkeypatch):
    """SPAIR, SPACE and GNM share one ``picture``: the family's grid of the output redrawn with the
    background channel first, so the grid shows one column more than the model has cells."""
    from objdisc.models.gnm import GNM
    from objdisc.models.space import SPACE
    from objdisc.models.spair import SPAIR

    from .scenes import squares
    from .test_gnm import tiny as tiny_gnm
    from .test_space import tiny as tiny_space
    from .test_spair import tiny as tiny_spair

    for cls, cfg in ((SPAIR, tiny_spair()), (SPACE, tiny_space()), (GNM, tiny_gnm())):
        torch.manual_seed(0)
        model = cls(cfg).eval()
        image = squares(2, cfg.image_size)
        with torch.no_grad():
            out = model({"image": image}, step=0)
        seen = {}
        monkeypatch.setattr(type(model.family), "picture", lambda self, m, b, o, limit: seen.setdefault("out", o))
        model.picture({"image": image}, out, limit=2)
        shown = seen["out"]
        assert shown.masks_have_background and not out.masks_have_background, cls.__name__
        assert shown.masks.shape[1] == out.masks.shape[1] + 1, cls.__name__
        torch.testing.assert_close(shown.masks[:, 0], 1 - out.masks.sum(1))
        torch.testing.assert_close(shown.slot_rgb[:, 0], out.extras["background"].to(shown.slot_rgb.dtype))
        monkeypatch.undo()
