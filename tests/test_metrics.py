"""Tests for objdisc.metrics: worked examples on an 8×8 toy scene, the ARI edge cases,
invariances, batching, and comparisons with independent reference implementations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from objdisc import metrics as M

# ---------------------------------------------------------------------------------------------
# Independent references (deliberately different formulas from the module under test)
# ---------------------------------------------------------------------------------------------


def pair_counting_ari(true: np.ndarray, pred: np.ndarray) -> float:
    """sklearn's adjusted_rand_score semantics from the pair confusion matrix, by brute force
    over all unordered point pairs: 1.0 when no pair disagrees (fn = fp = 0)."""
    n = true.size
    i, j = np.triu_indices(n, k=1)
    same_true = true[i] == true[j]
    same_pred = pred[i] == pred[j]
    tp = float(np.sum(same_true & same_pred))
    fn = float(np.sum(same_true & ~same_pred))
    fp = float(np.sum(~same_true & same_pred))
    tn = float(np.sum(~same_true & ~same_pred))
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def brute_force_matched_iou_sum(true: np.ndarray, pred: np.ndarray) -> float:
    """Best total IoU over every one-to-one assignment (itertools), small label sets only."""
    tl, pl = np.unique(true), np.unique(pred)
    iou = np.array([[np.sum((true == a) & (pred == b)) / np.sum((true == a) | (pred == b)) for b in pl] for a in tl])
    k = max(len(tl), len(pl))
    padded = np.zeros((k, k))
    padded[: len(tl), : len(pl)] = iou
    return max(sum(padded[r, c] for r, c in enumerate(perm)) for perm in itertools.permutations(range(k)))


# ---------------------------------------------------------------------------------------------
# Toy scene: an 8×8 label map, background and three objects
# ---------------------------------------------------------------------------------------------


def toy_truth() -> torch.Tensor:
    t = torch.zeros(8, 8, dtype=torch.long)
    t[0:2, 0:2] = 1  # object 1: 4 px
    t[0:3, 4:7] = 2  # object 2: 9 px
    t[4:7, 1:4] = 3  # object 3: 9 px
    return t


def toy_predictions() -> dict[str, torch.Tensor]:
    t = toy_truth()
    merge = t.clone()
    merge[t == 1] = 0  # object 1 absorbed by the background; slot 1 empty
    split = t.clone()
    split[6, 1:4] = 4  # bottom row of object 3 becomes a new segment
    return {"perfect": t.clone(), "permuted": torch.tensor([2, 0, 3, 1])[t], "merge": merge, "split": split}


CASES = ["perfect", "permuted", "merge", "split"]
# Expected values from the definitions, columns perfect / permuted / merge / split (mIoU_fg and
# ARI_FG of merge and split agree with the ClevrTex evaluator on the same toy).
EXPECTED = {
    "acc": [1, 1, 0, 0],
    "miou_bg": [1, 1, 0.7283, 0.7333],
    "miou": [1, 1, 0.6667, 0.6667],  # mIoU_fg, the reported mIoU
    "miou_gt": [1, 1, 0.7283, 0.9167],
    "dice": [1, 1, 0.7386, 0.7600],
    "dice_fg": [1, 1, 0.6667, 0.7000],
    "ari": [1, 1, 0.8344, 0.9820],
    "fg_ari": [1, 1, 1.0000, 0.8153],
    "mbo": [1, 1, 0.6957, 0.8889],
    "sc": [1, 1, 0.8859, 0.9531],
    "msc": [1, 1, 0.7500, 0.9167],
}


def toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    preds = toy_predictions()
    return toy_truth().expand(4, 8, 8).clone(), torch.stack([preds[c] for c in CASES])


def one_hot_masks(ids: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(ids, k).movedim(-1, 1).float()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_toy_worked_examples(name):
    true, pred = toy_batch()
    got = M.segmentation_metrics(true, pred)[name]
    assert got.shape == (4,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), EXPECTED[name], atol=1e-4)


def test_toy_from_one_hot_masks_each_case_alone():
    """Per case, one-hot masks with the case's K_pred (4, or 5 for split), batch of one."""
    preds = toy_predictions()
    for col, case in enumerate(CASES):
        k = 5 if case == "split" else 4
        out = M.segmentation_metrics(toy_truth()[None], one_hot_masks(preds[case][None], k))
        for name, values in EXPECTED.items():
            assert out[name].item() == pytest.approx(values[col], abs=1e-4), (case, name)


def test_standalone_functions_match_entry_point():
    true, pred = toy_batch()
    out = M.segmentation_metrics(true, pred)
    torch.testing.assert_close(M.ari(true.flatten(1), pred.flatten(1)), out["ari"])
    torch.testing.assert_close(M.fg_ari(true, pred), out["fg_ari"])
    h = M.hungarian_miou(true, pred)
    torch.testing.assert_close(h["miou_fg"], out["miou"])
    torch.testing.assert_close(h["miou"], out["miou_bg"])
    torch.testing.assert_close(h["miou_gt"], out["miou_gt"])
    d = M.hungarian_dice(true, pred)
    torch.testing.assert_close(d["dice"], out["dice"])
    torch.testing.assert_close(d["dice_fg"], out["dice_fg"])
    torch.testing.assert_close(M.count_accuracy(true, pred), out["acc"])
    torch.testing.assert_close(M.mbo(true, pred), out["mbo"])
    sc = M.segmentation_covering(true, pred)
    torch.testing.assert_close(sc["sc"], out["sc"])
    torch.testing.assert_close(sc["msc"], out["msc"])


def test_toy_derivations():
    """The exact fractions behind the toy scene's expected values."""
    preds = toy_predictions()
    merge = M.hungarian_miou(toy_truth()[None], preds["merge"][None])
    assert merge["miou_fg"].item() == pytest.approx(2 / 3)
    assert merge["miou"].item() == pytest.approx((42 / 46 + 2) / 4)
    split = M.hungarian_miou(toy_truth()[None], preds["split"][None])
    assert split["miou_fg"].item() == pytest.approx((2 + 6 / 9) / 4)
    assert split["miou_gt"].item() == pytest.approx((3 + 6 / 9) / 4)


# ---------------------------------------------------------------------------------------------
# ARI conventions
# ---------------------------------------------------------------------------------------------


def labels(*rows) -> torch.Tensor:
    return torch.tensor([list(rows)], dtype=torch.long)


# (true ids over the image, predicted ids), 0 = background excluded by FG-ARI; expected FG-ARI
# in our convention (sklearn's and stelzner/osrt's; DeepMind's TF ARI gives NaN in some cases).
EDGE_CASES = {
    "identical": (labels(0, 1, 1, 2, 2, 3), labels(0, 1, 1, 2, 2, 3), 1.0),
    "relabelled": (labels(0, 1, 1, 2, 2, 3), labels(5, 3, 3, 0, 0, 1), 1.0),
    "no_fg_pred_not_constant": (labels(0, 0, 0, 0), labels(0, 1, 2, 1), 1.0),
    "no_fg_pred_constant": (labels(0, 0, 0, 0), labels(2, 2, 2, 2), 1.0),
    "one_object_constant_everywhere": (labels(0, 0, 1, 1, 1), labels(3, 3, 3, 3, 3), 1.0),
    "one_object_constant_on_it_only": (labels(0, 0, 1, 1, 1), labels(0, 2, 1, 1, 1), 1.0),
    "one_object_split_in_two": (labels(0, 0, 1, 1, 1, 1), labels(0, 0, 1, 1, 2, 2), 0.0),
    "two_objects_one_cluster": (labels(0, 1, 1, 2, 2), labels(0, 1, 1, 1, 1), 0.0),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_fg_ari_edge_cases(case):
    true, pred, expected = EDGE_CASES[case]
    got = M.fg_ari(true, pred)
    assert got.item() == pytest.approx(expected, abs=1e-12)
    fg = true[0] > 0
    assert got.item() == pytest.approx(pair_counting_ari(true[0][fg].numpy(), pred[0][fg].numpy()), abs=1e-12)


def test_ari_degenerate_inputs_are_one():
    everything_ignored = torch.ones(1, 5, dtype=torch.bool)
    assert M.ari(labels(0, 1, 2, 3, 4), labels(0, 0, 0, 1, 1), ignore=everything_ignored).item() == 1.0
    assert M.ari(labels(7), labels(3)).item() == 1.0  # one point
    assert M.ari(labels(0, 1, 2, 3), labels(3, 2, 1, 0)).item() == 1.0  # both all singletons
    assert M.ari(labels(0, 1, 2, 3), labels(0, 0, 1, 1)).item() == pytest.approx(0.0)
    assert not torch.isnan(M.fg_ari(torch.zeros(3, 4, 4, dtype=torch.long), torch.randint(0, 3, (3, 4, 4)))).any()


def test_ari_matches_pair_counting_reference_on_random_cases():
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        n = int(torch.randint(2, 60, (1,), generator=g))
        kt, kp = (int(x) for x in torch.randint(1, 7, (2,), generator=g))
        true = torch.randint(0, kt, (1, n), generator=g)
        pred = torch.randint(0, kp, (1, n), generator=g)
        ignore = torch.rand(1, n, generator=g) < 0.3
        keep = ~ignore[0]
        expected = pair_counting_ari(true[0][keep].numpy(), pred[0][keep].numpy()) if keep.sum() else 1.0
        assert M.ari(true, pred, ignore).item() == pytest.approx(expected, abs=1e-10)
        assert M.ari(true, pred).item() == pytest.approx(pair_counting_ari(true[0].numpy(), pred[0].numpy()), abs=1e-10)


def test_ari_permutation_invariance():
    g = torch.Generator().manual_seed(1)
    true = torch.randint(0, 6, (4, 12, 12), generator=g)
    pred = torch.randint(0, 8, (4, 12, 12), generator=g)
    base, base_fg = M.ari(true, pred), M.fg_ari(true, pred)
    assert (base.abs() < 0.2).all()  # random labels: ARI near 0, so the test is not vacuous
    perm_true = torch.randperm(6, generator=g)[true]
    perm_pred = torch.randperm(8, generator=g)[pred]
    torch.testing.assert_close(M.ari(perm_true, perm_pred), base, rtol=0, atol=1e-12)
    # FG-ARI: background must stay 0, object ids may be permuted.
    fg_perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(5, generator=g)])
    torch.testing.assert_close(M.fg_ari(fg_perm[true], perm_pred), base_fg, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Overlap metrics
# ---------------------------------------------------------------------------------------------


def test_hungarian_matches_brute_force_assignment():
    g = torch.Generator().manual_seed(2)
    for _ in range(15):
        true = torch.randint(0, 4, (1, 6, 6), generator=g)
        pred = torch.randint(0, int(torch.randint(2, 6, (1,), generator=g)), (1, 6, 6), generator=g)
        n_pairs = max(true.unique().numel(), pred.unique().numel())
        got = M.hungarian_miou(true, pred)["miou"].item() * n_pairs
        assert got == pytest.approx(brute_force_matched_iou_sum(true[0].numpy(), pred[0].numpy()))


def test_miou_fg_zero_denominator_and_missing_background():
    background_only = torch.zeros(1, 4, 4, dtype=torch.long)
    one_segment = torch.full((1, 4, 4), 3)
    two_segments = one_segment.clone()
    two_segments[0, 0] = 1
    assert M.hungarian_miou(background_only, one_segment)["miou_fg"].item() == 1.0
    assert M.hungarian_miou(background_only, two_segments)["miou_fg"].item() == 0.0
    # No background pixels: every pair is a foreground pair, so a perfect prediction scores 1, not 2.
    objects_only = torch.ones(1, 4, 4, dtype=torch.long)
    objects_only[0, 2:] = 2
    out = M.hungarian_miou(objects_only, objects_only)
    assert out["miou_fg"].item() == 1.0 and out["miou"].item() == 1.0
    assert M.mbo(background_only, two_segments).item() == 1.0  # no objects to cover


def test_batched_equals_per_image():
    g = torch.Generator().manual_seed(3)
    true = torch.randint(0, 5, (5, 10, 10), generator=g)
    true[1] = torch.randint(0, 2, (10, 10), generator=g)  # fewer labels than the batch
    true[2] = 0  # no foreground
    masks = torch.rand(5, 6, 10, 10, generator=g)
    batched = M.segmentation_metrics(true, masks)
    for i in range(5):
        single = M.segmentation_metrics(true[i : i + 1], masks[i : i + 1])
        for name, value in batched.items():
            assert value.shape == (5,)
            assert value[i].item() == pytest.approx(single[name].item(), abs=1e-12), (i, name)
    image = M.image_metrics(masks[:, :3], masks[:, 3:])
    for i in range(5):
        single = M.image_metrics(masks[i : i + 1, :3], masks[i : i + 1, 3:])
        for name, value in image.items():
            assert value[i].item() == pytest.approx(single[name].item(), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# From model outputs to label maps
# ---------------------------------------------------------------------------------------------


def test_masks_to_ids_ties_go_to_lowest_index():
    masks = torch.tensor([[0.2, 0.4, 0.4], [0.5, 0.5, 0.0], [0.1, 0.3, 0.6]]).T.reshape(1, 3, 3)
    assert M.masks_to_ids(masks).tolist() == [[1, 0, 2]]
    assert torch.equal(M.masks_to_ids(torch.full((2, 4, 3, 3), 0.25)), torch.zeros(2, 3, 3, dtype=torch.long))


def test_object_only_masks_get_background():
    # Two object slots; pixel 0 is mostly empty (→ background), pixel 1 is slot 0, pixel 2 slot 1.
    masks = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7]]).reshape(1, 2, 3)
    with_bg = M.with_background(masks)
    torch.testing.assert_close(with_bg[0, 0], torch.tensor([0.7, 0.1, 0.2]))
    assert M.masks_to_ids(masks, masks_have_background=False).tolist() == [[0, 1, 2]]
    assert M.with_background(torch.full((1, 2, 1), 0.9))[0, 0].item() == 0.0  # clamped at 0
    true = torch.tensor([[0, 1, 2]])
    out = M.segmentation_metrics(true, masks, masks_have_background=False)
    assert out["ari"].item() == 1.0 and out["miou"].item() == 1.0 and out["acc"].item() == 1.0


def test_soft_masks_equal_label_map_and_ray_layout():
    g = torch.Generator().manual_seed(4)
    true = torch.randint(0, 4, (3, 8, 8), generator=g)
    masks = torch.softmax(torch.randn(3, 5, 8, 8, generator=g), dim=1)
    from_masks = M.segmentation_metrics(true, masks)
    from_ids = M.segmentation_metrics(true, masks.argmax(1))
    from_5d = M.segmentation_metrics(true, masks.unsqueeze(2))
    # 3D layout: target rays [B,P] and per-ray slot weights [B,P,K] moved to [B,K,P].
    from_rays = M.segmentation_metrics(true.flatten(1), masks.flatten(2).movedim(1, -1).movedim(-1, 1))
    for name in from_masks:
        torch.testing.assert_close(from_masks[name], from_ids[name])
        torch.testing.assert_close(from_masks[name], from_5d[name])
        torch.testing.assert_close(from_masks[name], from_rays[name])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        M.ari(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="negative"):
        M.ari(torch.tensor([[0, -1]]), torch.tensor([[0, 1]]))
    with pytest.raises(TypeError, match="integer"):
        M.ari(torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="soft masks"):
        M.segmentation_metrics(torch.zeros(1, 4, 4, dtype=torch.long), torch.rand(1, 3, 5, 5))


# ---------------------------------------------------------------------------------------------
# The image-blind floor of FG-ARI
# ---------------------------------------------------------------------------------------------


def test_fixed_cells_are_compact_equal_and_image_blind():
    assert M.fixed_cells(1, 5, 7).eq(0).all()
    halves = M.fixed_cells(2, 32, 32)
    assert torch.bincount(halves.flatten()).tolist() == [512, 512]
    for k, (h, w) in itertools.product((4, 6, 7, 11), ((32, 32), (48, 64))):
        cells = M.fixed_cells(k, h, w)
        area = torch.bincount(cells.flatten(), minlength=k).double()
        assert cells.shape == (h, w) and cells.dtype == torch.long
        assert area.min() > 0.6 * h * w / k and area.max() < 1.4 * h * w / k  # about equal areas
        # Compact: every cell is one 4-connected piece.
        for c in range(k):
            seen = {tuple(torch.nonzero(cells == c)[0].tolist())}
            todo = list(seen)
            while todo:
                y, x = todo.pop()
                for n in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= n[0] < h and 0 <= n[1] < w and n not in seen and cells[n] == c:
                        seen.add(n)
                        todo.append(n)
            assert len(seen) == int(area[c])
    torch.testing.assert_close(M.fixed_cells(7, 32, 32), M.fixed_cells(7, 32, 32), rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_cells"):
        M.fixed_cells(0, 8, 8)


def test_fg_ari_fixed_cells_known_values():
    cells = M.fixed_cells(2, 8, 8)
    a, b = torch.nonzero(cells == 0)[:3], torch.nonzero(cells == 1)[:3]
    apart = torch.zeros(1, 8, 8, dtype=torch.long)
    apart[0, a[:, 0], a[:, 1]] = 1
    apart[0, b[:, 0], b[:, 1]] = 2
    together = torch.zeros(1, 8, 8, dtype=torch.long)
    together[0, a[:2, 0], a[:2, 1]] = 1
    together[0, a[2, 0], a[2, 1]] = 2  # a second object in the same cell
    # Two objects in different cells: the blind partition separates them perfectly.
    assert M.fg_ari_fixed_cells(apart, 2).tolist() == [1.0]
    # Everything in one cell: one predicted cluster for two objects, chance level.
    assert M.fg_ari_fixed_cells(together, 2).tolist() == [0.0]
    # With one cell nothing is ever separated.
    assert M.fg_ari_fixed_cells(apart, 1).tolist() == [0.0]
    with pytest.raises(ValueError, match=r"\[B,H,W\]"):
        M.fg_ari_fixed_cells(apart[0], 2)


# ---------------------------------------------------------------------------------------------
# Image metrics
# ---------------------------------------------------------------------------------------------


def test_psnr_aggregation_example():
    mse = torch.tensor([0.01, 0.0001], dtype=torch.float64)
    torch.testing.assert_close(M.psnr(mse), torch.tensor([20.0, 40.0], dtype=torch.float64))
    assert M.mean_psnr(mse).item() == pytest.approx(30.00, abs=1e-9)
    assert M.psnr(mse.mean()).item() == pytest.approx(22.97, abs=5e-3)  # what mean_psnr must not do
    assert M.psnr(torch.tensor([4.0 * 0.01]), max_value=2.0).item() == pytest.approx(20.0)


def test_mse_scale_example():
    true = torch.zeros(2, 3, 128, 128)
    pred = true + 0.1
    out = M.image_metrics(pred, true)
    np.testing.assert_allclose(out["mse_sum"].numpy(), [491.52, 491.52], rtol=1e-6)
    np.testing.assert_allclose(out["mse"].numpy(), [0.01, 0.01], rtol=1e-6)
    np.testing.assert_allclose(out["psnr"].numpy(), [20.0, 20.0], rtol=1e-6)
    assert M.mse(pred, pred).tolist() == [0.0, 0.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    true, pred = toy_batch()
    cpu = M.segmentation_metrics(true, one_hot_masks(pred, 5))
    gpu = M.segmentation_metrics(true.cuda(), one_hot_masks(pred, 5).cuda())
    for name, value in cpu.items():
        assert gpu[name].device.type == "cuda"
        torch.testing.assert_close(gpu[name].cpu(), value)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(M.image_metrics(x.cuda(), (x * 0.5).cuda())["psnr"].cpu(), M.image_metrics(x, x * 0.5)["psnr"])


# ---------------------------------------------------------------------------------------------
# Per-object statistics and counts (ClevrTex evaluator's per-object part and counting accuracy)
# ---------------------------------------------------------------------------------------------


def test_matched_ious_are_the_evaluators_ious_on_the_toy_scene():
    """Hand derivation: merge ious = [42/46, 0, 1, 1]; split ious = [1, 1, 1, 6/9]."""
    t = toy_truth()[None]
    preds = toy_predictions()
    np.testing.assert_allclose(M.matched_ious(t, preds["merge"][None])[0].numpy(), [42 / 46, 0, 1, 1])
    np.testing.assert_allclose(M.matched_ious(t, preds["split"][None])[0].numpy(), [1, 1, 1, 6 / 9])
    np.testing.assert_allclose(M.matched_ious(t, preds["permuted"][None])[0].numpy(), [1, 1, 1, 1])
    # The mean over true objects of these ious, over the evaluator's pairs, is mIoU_fg.
    for case in ("merge", "split"):
        ious = M.matched_ious(t, preds[case][None])[0]
        pairs = max(4, int(preds[case].max()) + 1) - 1
        assert float(ious[1:].sum() / pairs) == pytest.approx(EXPECTED["miou"][CASES.index(case)], abs=1e-4)


def test_masked_sse_uses_the_true_mask_on_both_images_and_sums_to_mse_sum():
    t = toy_truth()[None]
    true = torch.zeros(1, 3, 8, 8)
    pred = torch.zeros(1, 3, 8, 8)
    pred[:, :, t[0] == 2] = 0.5  # object 2 off by 0.5 in every channel
    pred[:, 0, t[0] == 0] = 0.1  # background off by 0.1 in red
    sse = M.masked_sse(pred, true, t)[0]
    np.testing.assert_allclose(sse.numpy(), [42 * 0.01, 0.0, 9 * 3 * 0.25, 0.0], rtol=1e-6)
    assert float(sse.sum()) == pytest.approx(float(M.mse_sum(pred, true)[0]))


def test_object_statistics_give_object_only_masks_their_background():
    """A glimpse model's masks: where Σ masks < ½ the implicit background wins the argmax."""
    t = toy_truth()[None]
    masks = torch.zeros(1, 3, 8, 8)
    for k in (1, 2, 3):
        masks[0, k - 1][t[0] == k] = 0.9
    masks[0, 0, 7, 7] = 0.3  # weak: stays background
    image = torch.rand(1, 3, 8, 8)
    stats = M.object_statistics(image, image, t, masks, masks_have_background=False)
    np.testing.assert_allclose(stats["iou"][0].numpy(), [1, 1, 1, 1])
    np.testing.assert_allclose(stats["area"][0].numpy(), [42, 4, 9, 9])
    np.testing.assert_allclose(stats["mse"][0].numpy(), [0, 0, 0, 0])
    # Read as masks with a background channel, the ground's all-zero pixels tie and go to slot 0,
    # object 1's slot: one segment of 46 px that the Hungarian matching gives to the ground.
    with_bg = M.object_statistics(image, image, t, masks, masks_have_background=True)
    np.testing.assert_allclose(with_bg["iou"][0].numpy(), [42 / 46, 0, 1, 1])


def test_count_metrics_on_the_toy_scene():
    t = toy_truth()[None]
    preds = toy_predictions()
    counts = {case: M.count_metrics(t, preds[case][None]) for case in CASES}
    assert [float(c["count_true"][0]) for c in counts.values()] == [3, 3, 3, 3]
    assert [float(c["count_pred"][0]) for c in counts.values()] == [3, 3, 2, 4]
    # count_pred == count_true is the evaluator's acc (the true ground is visible here).
    for case in CASES:
        assert float(counts[case]["count_pred"][0] == counts[case]["count_true"][0]) == EXPECTED["acc"][CASES.index(case)]
    presence = torch.tensor([[0.6, 0.4, 0.9, 0.51]])
    masks = torch.nn.functional.one_hot(t, 4).permute(0, 3, 1, 2).float()[:, 1:]  # object-only masks
    glimpse = M.count_metrics(t, masks, masks_have_background=False, presence=presence)
    assert float(glimpse["count_presence"][0]) == 3 and float(glimpse["acc_presence"][0]) == 1.0
    assert float(glimpse["count_pred"][0]) == 3
