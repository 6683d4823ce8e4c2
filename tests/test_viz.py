import numpy as np
import pytest
import torch
from PIL import Image

from objdisc.viz import colorize_ids, image_grid, overlay, palette, save_png, slot_grid, to_image


def test_palette_black_background_distinct_and_stable():
    colours = palette(7)
    assert colours.shape == (7, 3) and colours.dtype == np.uint8
    np.testing.assert_array_equal(colours[0], [0, 0, 0])
    assert len({tuple(c) for c in colours}) == 7
    np.testing.assert_array_equal(palette(7), colours)
    # HSV(0, 0.45, 0.8) and HSV(0.5, 0.45, 0.8), truncated to uint8 as the osrt renders
    np.testing.assert_array_equal(palette(3)[1:], [[204, 112, 112], [112, 204, 204]])
    with pytest.raises(ValueError):
        palette(0)


def test_colorize_ids_known_values():
    ids = np.array([[0, 1], [2, 1]])
    out = colorize_ids(ids, 3)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [204, 112, 112])
    np.testing.assert_array_equal(out[1, 1], [204, 112, 112])
    np.testing.assert_array_equal(out[1, 0], [112, 204, 204])
    np.testing.assert_array_equal(colorize_ids(torch.tensor(ids)), out)  # n defaults to max + 1
    with pytest.raises(ValueError, match="ids must lie"):
        colorize_ids(ids, 2)


def test_overlay_tints_objects_only():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    ids = np.array([[0, 1], [1, 0]])
    out = overlay(image, ids, alpha=1.0, n=3)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[0, 1], palette(3)[1])
    half = overlay(image, ids, alpha=0.5, n=3)
    np.testing.assert_array_equal(half[1, 0], [152, 106, 106])  # (100 + 204)/2, (100 + 112)/2
    np.testing.assert_array_equal(overlay(image, ids, alpha=0.0), image)


def test_to_image_accepts_tensors_and_layouts():
    chw = torch.zeros(3, 4, 5)
    chw[0] = 1.0
    out = to_image(chw)
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    assert to_image(np.zeros((4, 5))).shape == (4, 5, 3)


def test_image_grid_layout():
    rng = np.random.default_rng(0)
    images = [[rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)] for _ in range(2)]
    grid = image_grid(images, pad=2, scale=1)
    assert grid.shape == (2 * 10 + 2, 3 * 10 + 2, 3)
    np.testing.assert_array_equal(grid[12:20, 22:30], images[1][2])
    assert (grid[:2] == 255).all()  # padding is white
    big = image_grid(images, pad=2, scale=3)
    np.testing.assert_array_equal(big[2:26:3, 2:26:3], images[0][0])  # nearest upscaling


def test_image_grid_labels_and_auto_scale():
    tiny = [[np.zeros((32, 32, 3), dtype=np.uint8)] * 2]
    plain = image_grid(tiny, pad=2)
    assert plain.shape[1] == 2 * (96 + 2) + 2  # 32-px images upscaled ×3
    labelled = image_grid(tiny, labels=["input", "recon"], row_labels=["scene 0"], pad=2)
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    header = labelled[: labelled.shape[0] - plain.shape[0]]
    assert (header < 128).any()  # text was drawn
    with pytest.raises(ValueError, match="column labels"):
        image_grid(tiny, labels=["a", "b", "c"])


def test_slot_grid_columns_and_contents():
    k, h, w = 4, 16, 16
    image = torch.rand(3, h, w)
    recon = np.full((h, w, 3), 0.5, dtype=np.float32)
    ids = np.zeros((h, w), dtype=np.int64)
    ids[:, 8:] = 1
    slot_of_pixel = np.arange(w)[None, :].repeat(h, 0) // 4  # slot j owns columns 4j..4j+3
    masks = np.eye(k)[slot_of_pixel].transpose(2, 0, 1)  # hard [K,H,W]
    pad = 2
    grid = slot_grid(image, recon, torch.tensor(masks), true_ids=ids, pad=pad, scale=1)
    columns = 3 + 1 + k
    assert grid.shape[1] == columns * (w + pad) + pad
    header = grid.shape[0] - (h + 2 * pad)
    assert header > 0

    def cell(j):
        y, x = header + pad, pad + j * (w + pad)
        return grid[y : y + h, x : x + w]

    np.testing.assert_array_equal(cell(0), to_image(image))
    np.testing.assert_array_equal(cell(1), np.full((h, w, 3), 128))
    np.testing.assert_array_equal(cell(2), colorize_ids(slot_of_pixel + 1, k + 1))
    np.testing.assert_array_equal(cell(3), colorize_ids(ids, k + 1))
    slot2 = cell(4 + 2)
    assert (slot2[:, 8:12] == 128).all() and (slot2[:, :8] == 255).all() and (slot2[:, 12:] == 255).all()

    batched = slot_grid(torch.rand(2, 3, h, w), torch.rand(2, 3, h, w), torch.rand(2, k, h, w), scale=1)
    assert batched.shape[1] == (3 + k) * (w + pad) + pad
    assert batched.shape[0] == header + 2 * (h + pad) + pad


def test_save_png_atomic_round_trip(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save_png(tmp_path / "sub" / "a.png", array)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), array)
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]
