"""Evaluation metrics for object discovery and novel-view synthesis, batched in torch.

Every metric returns one value per scene (a ``[B]`` float64 tensor on the input's device), so
evaluation can write a per-scene table and average it afterwards. The definitions follow the
original codebases (DeepMind's multi_object_datasets ARI, the ClevrTex evaluator, stelzner/osrt
and stelzner/obsurf); where they disagree, the convention chosen here is stated in the function's
docstring.

Segmentation metrics work on hard label maps: an integer id per pixel, ``0`` = background in the
ground truth. Soft model masks are binarised by argmax over slots (ties go to the lowest slot),
as every reference implementation does. All overlap metrics start from one contingency table
per image (``contingency_table``), built with a single ``bincount`` over the batch, so there is
no Python loop over pixels; the only loop over the batch is the Hungarian matching (scipy).

Empty-input convention, used throughout: a score whose denominator is zero because there is
nothing to get wrong (no counted points, no objects, both sides a single segment) is 1.0. This is
sklearn's and osrt/obsurf's convention for ARI (DeepMind's TF code gives NaN instead).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# From model outputs to label maps
# ---------------------------------------------------------------------------------------------


def with_background(masks: Tensor) -> Tensor:
    """Prepend a background channel ``1 − Σ_k masks_k`` (clamped at 0) to object-only masks.

    Object-only models (GNM, SPACE, SPAIR, glimpse models) explain the background implicitly; the
    ClevrTex protocol gives them this channel so the argmax can pick "no object".
    masks: [B,K,...] → [B,K+1,...].
    """
    background = (1.0 - masks.sum(dim=1, keepdim=True)).clamp_min(0.0)
    return torch.cat([background, masks], dim=1)


def masks_to_ids(masks: Tensor, masks_have_background: bool = True) -> Tensor:
    """Hard label map from soft masks: argmax over the slot axis (dim 1), ties → lowest index.

    masks: [B,K,...] float. With ``masks_have_background=False`` a background channel is
    prepended first (``with_background``), so id 0 is that background and slot k becomes id k+1.
    Returns long [B,...].
    """
    if masks.dim() < 2:
        raise ValueError(f"masks must be [B,K,...], got shape {tuple(masks.shape)}")
    if not masks_have_background:
        masks = with_background(masks)
    # torch.argmax returns the first maximal index on CPU and CUDA: ties go to the lowest slot.
    return masks.argmax(dim=1)


def flatten_spatial(x: Tensor, start_dim: int = 1) -> Tensor:
    """Merge every axis from ``start_dim`` on into one: ids [B,H,W] → [B,N]; masks [B,K,H,W] →
    [B,K,N] with ``start_dim=2``."""
    return x.flatten(start_dim) if x.dim() > start_dim else x.unsqueeze(-1)


# ---------------------------------------------------------------------------------------------
# Contingency table
# ---------------------------------------------------------------------------------------------


def _check_ids(true_ids: Tensor, pred_ids: Tensor) -> None:
    if true_ids.shape != pred_ids.shape:
        raise ValueError(f"true_ids {tuple(true_ids.shape)} and pred_ids {tuple(pred_ids.shape)} differ in shape")
    for name, ids in (("true_ids", true_ids), ("pred_ids", pred_ids)):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer label map, got {ids.dtype}")
        if ids.numel() and int(ids.min()) < 0:
            raise ValueError(f"{name} has negative labels (min {int(ids.min())}); labels must be >= 0")


def contingency_table(
    true_ids: Tensor,
    pred_ids: Tensor,
    ignore: Tensor | None = None,
    num_true: int | None = None,
    num_pred: int | None = None,
) -> Tensor:
    """Per-image counts n[b, t, p] = #pixels with true label t and predicted label p.

    true_ids, pred_ids: integer [B,...] (any spatial shape); ignore: bool [B,...], True = not
    counted. Returns float64 [B,T,P] with T = num_true (default max true label + 1 over the
    batch) and P likewise. Counts are integers in float64, exact up to 2^53.

    Ignored points are sent to one extra bin that is then dropped, so ``bincount`` runs without
    weights (deterministic on CUDA, integer counts).
    """
    _check_ids(true_ids, pred_ids)
    batch = true_ids.shape[0]
    t = flatten_spatial(true_ids).long()
    p = flatten_spatial(pred_ids).long()
    T = int(num_true) if num_true is not None else (int(t.max()) + 1 if t.numel() else 1)
    P = int(num_pred) if num_pred is not None else (int(p.max()) + 1 if p.numel() else 1)
    if t.numel() and (int(t.max()) >= T or int(p.max()) >= P):
        raise ValueError(f"labels exceed num_true={T} / num_pred={P}")
    b = torch.arange(batch, device=t.device).unsqueeze(1)
    index = (b * T + t) * P + p
    size = batch * T * P
    if ignore is not None:
        if ignore.shape != true_ids.shape:
            raise ValueError(f"ignore {tuple(ignore.shape)} must have the shape of true_ids {tuple(true_ids.shape)}")
        index = torch.where(flatten_spatial(ignore).bool(), torch.full_like(index, size), index)
    counts = torch.bincount(index.reshape(-1), minlength=size + 1)[:size]
    return counts.reshape(batch, T, P).to(torch.float64)


# ---------------------------------------------------------------------------------------------
# ARI and FG-ARI
# ---------------------------------------------------------------------------------------------


def ari_from_contingency(table: Tensor) -> Tensor:
    """Adjusted Rand index per image from a contingency table [B,T,P] (DeepMind's formula).

    With a_t, b_p the row/column sums and N' the number of counted points (ordered-pair form,
    the ½ factors cancel):
        RI = Σ n(n−1), A = Σ a(a−1), B = Σ b(b−1), E = A·B / (N'(N'−1)), M = (A + B)/2,
        ARI = (RI − E) / (M − E).
    Convention: 1.0 when no pair of counted points disagrees (RI = A = B), which is sklearn's
    ``adjusted_rand_score`` rule. It covers every zero denominator: no or one counted point,
    both sides a single cluster (osrt/obsurf's special case), both sides all singletons; for
    non-identical partitions M − E > 0. DeepMind's TF code returns NaN when nothing is counted.
    """
    n = table.to(torch.float64)
    a = n.sum(dim=2)
    b = n.sum(dim=1)
    total = n.sum(dim=(1, 2))
    ri = (n * (n - 1)).sum(dim=(1, 2))
    pairs_true = (a * (a - 1)).sum(dim=1)
    pairs_pred = (b * (b - 1)).sum(dim=1)
    all_pairs = total * (total - 1)
    expected = pairs_true * pairs_pred / all_pairs.clamp_min(1.0)
    maximum = (pairs_true + pairs_pred) / 2
    # Counts are exact integers in float64, so this equality test is exact.
    agree = (ri == pairs_true) & (ri == pairs_pred)
    denominator = torch.where(agree, torch.ones_like(maximum), maximum - expected)
    return torch.where(agree, torch.ones_like(ri), (ri - expected) / denominator)


def ari(true_ids: Tensor, pred_ids: Tensor, ignore: Tensor | None = None) -> Tensor:
    """ARI per image over the points not ignored. true_ids, pred_ids: integer [B,N] (or [B,H,W]);
    ignore: bool of the same shape or None. Returns float64 [B]. See ``ari_from_contingency``."""
    return ari_from_contingency(contingency_table(true_ids, pred_ids, ignore))


def fg_ari(true_ids: Tensor, pred_ids: Tensor) -> Tensor:
    """Foreground ARI: ARI over pixels whose true label is > 0; the prediction is unchanged, so
    a predicted background slot is just another cluster. Blind to objects merged into the
    background: report it with ARI or mIoU. Scenes without foreground score 1.0."""
    return ari(true_ids, pred_ids, ignore=true_ids == 0)


def fixed_cells(num_cells: int, height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """An image-blind partition: [H, W] long labels 0..num_cells−1 that cut the image into
    ``num_cells`` compact cells of about equal area, the same for every image. The cells are a
    centroidal Voronoi tiling of the pixel centres: K points of a golden-ratio lattice, point i at
    ((i + ½)/K, frac(i/φ + ½)) in (y, x) on the unit square, moved by 20 Lloyd iterations to the
    centroid of their cell."""
    if num_cells < 1 or height < 1 or width < 1:
        raise ValueError(f"fixed_cells needs num_cells, height and width >= 1, got {num_cells}, {height}, {width}")
    i = torch.arange(num_cells, dtype=torch.float64, device=device)
    points = torch.stack([(i + 0.5) / num_cells, torch.remainder(i * 2.0 / (1.0 + 5.0**0.5) + 0.5, 1.0)], dim=-1)
    ys = (torch.arange(height, dtype=torch.float64, device=device) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float64, device=device) + 0.5) / width
    pixels = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)
    for _ in range(20):
        labels = torch.cdist(pixels, points).argmin(dim=1)
        sums = torch.zeros_like(points).index_add_(0, labels, pixels)
        counts = torch.bincount(labels, minlength=num_cells).to(pixels.dtype)
        points = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], points)
    return torch.cdist(pixels, points).argmin(dim=1).reshape(height, width)


def fg_ari_fixed_cells(true_ids: Tensor, num_cells: int) -> Tensor:
    """FG-ARI [B] of ``fixed_cells`` (num_cells = the model's number of segments) against true_ids
    [B,H,W]: the floor a segmentation must clear before its FG-ARI says it found objects. FG-ARI
    scores object pixels only, and small objects far apart mostly fall into one cell each, so this
    floor is far above 0 on scenes of small objects: 0.53 with 7 cells on objdisc's 32×32
    synthetic test scenes, 0.51 with 6 cells on its 64×64 sprites. It is low only where objects
    span several cells or sit close together."""
    if true_ids.dim() != 3:
        raise ValueError(f"fg_ari_fixed_cells expects true_ids [B,H,W], got {tuple(true_ids.shape)}")
    b, h, w = true_ids.shape
    cells = fixed_cells(num_cells, h, w, true_ids.device)
    return fg_ari(true_ids, cells.expand(b, h, w))


# ---------------------------------------------------------------------------------------------
# Overlap metrics (ClevrTex evaluator protocol, mBO, segmentation covering)
# ---------------------------------------------------------------------------------------------


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, and 1.0 where the denominator is 0 (nothing to get wrong)."""
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, torch.ones_like(numerator))


def _overlaps(table: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """IoU and DICE matrices [B,T,P] plus the true [B,T] and predicted [B,P] mask areas.
    Both scores are 0 when either mask is empty (ClevrTex: NaN → 0)."""
    true_area = table.sum(dim=2)
    pred_area = table.sum(dim=1)
    area_sum = true_area.unsqueeze(2) + pred_area.unsqueeze(1)
    both = (true_area.unsqueeze(2) > 0) & (pred_area.unsqueeze(1) > 0)
    zero = torch.zeros_like(table)
    iou = torch.where(both, table / (area_sum - table).clamp_min(1.0), zero)
    dice = torch.where(both, 2 * table / area_sum.clamp_min(1.0), zero)
    return iou, dice, true_area, pred_area


def _hungarian(iou: Tensor, true_area: Tensor, pred_area: Tensor) -> Tensor:
    """Predicted label matched to each true label ([B,T] long, −1 = unmatched), maximising the
    total IoU one-to-one between non-empty true and non-empty predicted masks (scipy, per image).

    Restricting the matching to non-empty masks gives the ClevrTex evaluator's optimum on its
    zero-padded square matrix, without its dependence on the padding size and on how ties among
    zero-IoU pairs are broken.
    """
    iou_np = iou.detach().cpu().numpy()
    true_np = (true_area > 0).cpu().numpy()
    pred_np = (pred_area > 0).cpu().numpy()
    match = np.full(true_np.shape, -1, dtype=np.int64)
    for i in range(iou_np.shape[0]):
        rows, cols = np.flatnonzero(true_np[i]), np.flatnonzero(pred_np[i])
        if rows.size and cols.size:
            r, c = linear_sum_assignment(iou_np[i][np.ix_(rows, cols)], maximize=True)
            match[i, rows[r]] = cols[c]
    return torch.from_numpy(match).to(iou.device)


def _matched_scores(table: Tensor) -> dict[str, Tensor]:
    """Hungarian-matched IoU and DICE scores and count accuracy from one contingency table.

    Pairs: every matched (true, predicted) pair of non-empty masks, every unmatched non-empty
    true mask (score 0) and every unmatched non-empty predicted mask (score 0), so
    num_pairs = max(#non-empty true, #non-empty predicted), background included.
      miou     = Σ_t iou_t / num_pairs                 (ClevrTex "mIoU", background included)
      miou_fg  = Σ_{t≥1} iou_t / num_fg_pairs          (ClevrTex "mIoU_fg", the reported mIoU)
      miou_gt  = Σ_t iou_t / #non-empty true masks
      dice, dice_fg: the same with DICE of the IoU-matched pairs.
      acc      = 1 if #non-empty predicted == #non-empty true masks (background included).
    num_fg_pairs = num_pairs − 1 when the true background is non-empty (the evaluator's
    "num_pairs − 1"); when a scene has no background pixels every pair is a foreground pair
    (the evaluator would still subtract one and could exceed 1). A zero denominator scores 1.0:
    for miou_fg that means neither side has more than one segment covering the image, i.e.
    true background only and the prediction one segment (or an empty image).
    """
    iou, dice, true_area, pred_area = _overlaps(table)
    match = _hungarian(iou, true_area, pred_area)
    matched = match >= 0
    index = match.clamp_min(0).unsqueeze(2)
    iou_t = torch.where(matched, iou.gather(2, index).squeeze(2), torch.zeros_like(true_area))
    dice_t = torch.where(matched, dice.gather(2, index).squeeze(2), torch.zeros_like(true_area))
    n_true = (true_area > 0).sum(dim=1).to(torch.float64)
    n_pred = (pred_area > 0).sum(dim=1).to(torch.float64)
    num_pairs = torch.maximum(n_true, n_pred)
    num_fg_pairs = num_pairs - (true_area[:, 0] > 0).to(torch.float64)
    return {
        "miou": _ratio(iou_t.sum(dim=1), num_pairs),
        "miou_fg": _ratio(iou_t[:, 1:].sum(dim=1), num_fg_pairs),
        "miou_gt": _ratio(iou_t.sum(dim=1), n_true),
        "dice": _ratio(dice_t.sum(dim=1), num_pairs),
        "dice_fg": _ratio(dice_t[:, 1:].sum(dim=1), num_fg_pairs),
        "acc": (n_true == n_pred).to(torch.float64),
    }


def _mbo_from_table(table: Tensor) -> Tensor:
    iou, _, true_area, _ = _overlaps(table)
    best = iou.max(dim=2).values[:, 1:]
    present = (true_area[:, 1:] > 0).to(torch.float64)
    return _ratio((best * present).sum(dim=1), present.sum(dim=1))


def _covering_from_table(table: Tensor) -> dict[str, Tensor]:
    iou, _, true_area, _ = _overlaps(table)
    best = iou.max(dim=2).values
    present = (true_area > 0).to(torch.float64)
    return {
        "sc": _ratio((best * true_area).sum(dim=1), true_area.sum(dim=1)),
        "msc": _ratio((best * present).sum(dim=1), present.sum(dim=1)),
    }


def hungarian_miou(true_ids: Tensor, pred_ids: Tensor) -> dict[str, Tensor]:
    """ClevrTex-evaluator mIoU with one-to-one Hungarian matching, per image: ``miou`` (background
    included), ``miou_fg`` (the number papers report as mIoU) and ``miou_gt`` (normalised by the
    true masks). true_ids, pred_ids: integer [B,...]. See ``_matched_scores`` for the pairs and
    the zero-denominator convention."""
    scores = _matched_scores(contingency_table(true_ids, pred_ids))
    return {k: scores[k] for k in ("miou", "miou_fg", "miou_gt")}


def hungarian_dice(true_ids: Tensor, pred_ids: Tensor) -> dict[str, Tensor]:
    """ClevrTex-evaluator DICE and DICE_FG: 2·#(P∩T)/(#P + #T) of the IoU-matched pairs, with the
    denominators of mIoU and mIoU_fg. Returns dict(dice, dice_fg) of [B]."""
    scores = _matched_scores(contingency_table(true_ids, pred_ids))
    return {k: scores[k] for k in ("dice", "dice_fg")}


def count_accuracy(true_ids: Tensor, pred_ids: Tensor) -> Tensor:
    """ClevrTex ``acc``: 1.0 where the number of non-empty predicted segments equals the number of
    non-empty true segments (background included), else 0.0. [B] float64."""
    table = contingency_table(true_ids, pred_ids)
    n_true = (table.sum(dim=2) > 0).sum(dim=1)
    n_pred = (table.sum(dim=1) > 0).sum(dim=1)
    return (n_true == n_pred).to(torch.float64)


def mbo(true_ids: Tensor, pred_ids: Tensor) -> Tensor:
    """Mean best overlap: for each foreground true object (label ≥ 1, non-empty) the best IoU over
    all predicted segments (background slot included, no one-to-one constraint), averaged over
    the image's objects. Aggregate by averaging these per-image means over images (not pooled
    over objects). Images without foreground objects score 1.0."""
    return _mbo_from_table(contingency_table(true_ids, pred_ids))


def segmentation_covering(true_ids: Tensor, pred_ids: Tensor) -> dict[str, Tensor]:
    """Segmentation covering over every true segment, background included:
    ``sc`` = Σ_t #t · max_p IoU(t, p) / Σ_t #t (size-weighted) and ``msc`` = mean_t max_p IoU(t, p)
    (unweighted). Unlike the ClevrTex evaluator's mSC loop, no label is skipped and B = 1 works.
    Empty images score 1.0."""
    return _covering_from_table(contingency_table(true_ids, pred_ids))


# ---------------------------------------------------------------------------------------------
# Image metrics
# ---------------------------------------------------------------------------------------------


def _squared_error(pred: Tensor, true: Tensor) -> Tensor:
    if pred.shape != true.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and true {tuple(true.shape)} differ in shape")
    return (pred.to(torch.float64) - true.to(torch.float64)).square().flatten(1)


def mse_sum(pred: Tensor, true: Tensor) -> Tensor:
    """Per-image sum of squared errors over every non-batch axis (ClevrTex's "MSE": hundreds for
    128×128 images in [0,1]). pred, true: [B,...]. Returns float64 [B]."""
    return _squared_error(pred, true).sum(dim=1)


def mse(pred: Tensor, true: Tensor) -> Tensor:
    """Per-image mean squared error over every non-batch axis (pixels and channels; the
    srt/osrt convention that PSNR is computed from). pred, true: [B,...] → float64 [B]."""
    return _squared_error(pred, true).mean(dim=1)


def psnr(mse_per_scene: Tensor, max_value: float = 1.0) -> Tensor:
    """PSNR per scene: 10·log10(max_value² / mse), i.e. −10·log10(mse) for images in [0,1].
    A perfect scene (mse = 0) gives +inf."""
    return 10.0 * torch.log10(max_value**2 / mse_per_scene.to(torch.float64))


def mean_psnr(mse_per_scene: Tensor, max_value: float = 1.0) -> Tensor:
    """The reported PSNR: the mean over scenes of per-scene PSNRs (srt/osrt), not the PSNR of the
    pooled MSE. E.g. MSEs 0.01 and 0.0001 → (20 + 40)/2 = 30 dB (pooled MSE would give 22.97 dB)."""
    return psnr(mse_per_scene, max_value).mean()


# ---------------------------------------------------------------------------------------------
# Entry points for evaluation code
# ---------------------------------------------------------------------------------------------


def segmentation_metrics(
    true_ids: Tensor, pred: Tensor, masks_have_background: bool = True
) -> dict[str, Tensor]:
    """Every segmentation metric per scene from one contingency table.

    true_ids: long [B,H,W] (0 = background; any spatial shape works, e.g. [B,P] target rays).
    pred: soft masks [B,K,H,W] (also [B,K,1,H,W]) binarised by argmax, or a label map [B,H,W].
    masks_have_background=False: object-only masks get a background channel 1 − Σ masks first.
    3D models' per-ray weights [B,P,K] must be passed as ``weights.movedim(-1, 1)``.

    Returns float64 [B] tensors: ``ari``, ``fg_ari``, ``miou`` (= mIoU_fg, the number reported
    as mIoU), ``miou_bg`` (mIoU with background), ``miou_gt``, ``dice``, ``dice_fg``, ``mbo``,
    ``sc``, ``msc``, ``acc``.
    """
    num_pred = None
    if pred.is_floating_point():
        if pred.dim() == true_ids.dim() + 2 and pred.shape[2] == 1:
            pred = pred.squeeze(2)
        if pred.dim() != true_ids.dim() + 1 or pred.shape[2:] != true_ids.shape[1:]:
            raise ValueError(
                f"soft masks must be [B,K,*spatial] with spatial {tuple(true_ids.shape[1:])}, got {tuple(pred.shape)}"
            )
        num_pred = pred.shape[1] + (0 if masks_have_background else 1)
        pred = masks_to_ids(pred, masks_have_background)
    elif not masks_have_background:
        raise ValueError("masks_have_background=False needs soft masks, not a label map")
    table = contingency_table(true_ids, pred, num_pred=num_pred)
    matched = _matched_scores(table)
    covering = _covering_from_table(table)
    return {
        "ari": ari_from_contingency(table),
        "fg_ari": ari_from_contingency(table[:, 1:, :]),
        "miou": matched["miou_fg"],
        "miou_bg": matched["miou"],
        "miou_gt": matched["miou_gt"],
        "dice": matched["dice"],
        "dice_fg": matched["dice_fg"],
        "mbo": _mbo_from_table(table),
        "sc": covering["sc"],
        "msc": covering["msc"],
        "acc": matched["acc"],
    }


def image_metrics(pred: Tensor, true: Tensor, max_value: float = 1.0) -> dict[str, Tensor]:
    """Reconstruction metrics per scene: ``mse`` (per-element mean), ``mse_sum`` (ClevrTex's
    per-image sum) and ``psnr`` (from the per-element mse). pred, true: [B,3,H,W] in [0,1] (any
    [B,...] works, e.g. [B,P,3] rays). Average ``psnr`` over scenes to report it."""
    err = mse(pred, true)
    return {"mse": err, "mse_sum": mse_sum(pred, true), "psnr": psnr(err, max_value)}


# ---------------------------------------------------------------------------------------------
# Per-object statistics and counts (ClevrTex evaluator: masked per-object errors, counting accuracy)
# ---------------------------------------------------------------------------------------------


def matched_ious(true_ids: Tensor, pred_ids: Tensor, num_true: int | None = None, num_pred: int | None = None) -> Tensor:
    """IoU of each true label with the predicted segment the Hungarian matching gives it (the
    evaluator's ``ious[b, j]``): float64 [B,T], T = ``num_true`` (default max true label + 1).
    An unmatched or empty true label scores 0. The matching is the one of ``hungarian_miou``."""
    table = contingency_table(true_ids, pred_ids, num_true=num_true, num_pred=num_pred)
    iou, _, true_area, pred_area = _overlaps(table)
    match = _hungarian(iou, true_area, pred_area)
    matched = match >= 0
    scores = iou.gather(2, match.clamp_min(0).unsqueeze(2)).squeeze(2)
    return torch.where(matched, scores, torch.zeros_like(scores))


def masked_sse(pred: Tensor, true: Tensor, true_ids: Tensor, num_true: int | None = None) -> Tensor:
    """Per true label t the sum of squared errors over its pixels and channels, with the TRUE mask
    applied to both images: Σ (pred·T_t − true·T_t)² (the evaluator's ``smses``; ``ground_mse`` is
    t = 0). pred, true: [B,C,H,W]; true_ids: integer [B,H,W]. Returns float64 [B,T]; the row
    sums to ``mse_sum``."""
    if pred.shape != true.shape or pred.dim() != 4 or pred.shape[0] != true_ids.shape[0] or pred.shape[2:] != true_ids.shape[1:]:
        raise ValueError(
            f"pred {tuple(pred.shape)} and true {tuple(true.shape)} must be [B,C,H,W] over true_ids {tuple(true_ids.shape)}"
        )
    err = (pred.to(torch.float64) - true.to(torch.float64)).square().sum(dim=1).flatten(1)  # [B,N]
    ids = flatten_spatial(true_ids).long()
    T = int(num_true) if num_true is not None else (int(ids.max()) + 1 if ids.numel() else 1)
    out = torch.zeros(ids.shape[0], T, dtype=torch.float64, device=err.device)
    return out.scatter_add_(1, ids, err)


def object_statistics(
    pred_image: Tensor,
    true_image: Tensor,
    true_ids: Tensor,
    pred: Tensor,
    masks_have_background: bool = True,
    num_true: int | None = None,
) -> dict[str, Tensor]:
    """The ClevrTex evaluator's per-object statistics of one batch, per true label t (0 = ground):

    * ``mse`` [B,T]: masked SSE of t (``masked_sse``);
    * ``iou`` [B,T]: IoU of t with its Hungarian-matched prediction (``matched_ious``), after the
      same argmax as the metrics (object-only masks first get the background 1 − Σ masks);
    * ``area`` [B,T]: pixels of t (the evaluator reports an object only where its true mask is
      non-empty after the crop: ``area > 0``).

    pred: soft masks [B,K,H,W] (or [B,K,1,H,W]) or a label map [B,H,W]. T = ``num_true`` (default
    the batch's max true label + 1)."""
    num_pred = None
    if pred.is_floating_point():
        if pred.dim() == true_ids.dim() + 2 and pred.shape[2] == 1:
            pred = pred.squeeze(2)
        num_pred = pred.shape[1] + (0 if masks_have_background else 1)
        pred = masks_to_ids(pred, masks_have_background)
    elif not masks_have_background:
        raise ValueError("masks_have_background=False needs soft masks, not a label map")
    ids = true_ids.long()
    T = int(num_true) if num_true is not None else int(ids.max()) + 1
    area = torch.zeros(ids.shape[0], T, dtype=torch.float64, device=ids.device)
    area.scatter_add_(1, flatten_spatial(ids), torch.ones_like(flatten_spatial(ids), dtype=torch.float64))
    return {
        "mse": masked_sse(pred_image, true_image, ids, T),
        "iou": matched_ious(ids, pred, num_true=T, num_pred=num_pred),
        "area": area,
    }


def count_metrics(true_ids: Tensor, pred: Tensor, masks_have_background: bool = True, presence: Tensor | None = None) -> dict[str, Tensor]:
    """Object counts per scene, as the ClevrTex evaluator's ``acc`` counts them, float64 [B]:

    * ``count_true``: true objects visible in the image (non-empty labels ≥ 1);
    * ``count_pred``: non-empty predicted segments after the argmax, less one for the background
      segment, so ``count_pred == count_true`` is the evaluator's ``acc`` whenever the true ground
      is visible (object-only masks get their background channel first);
    * with ``presence`` [B,K] (glimpse models): ``count_presence`` = Σ round(presence) and
      ``acc_presence`` = 1 where it equals ``count_true``.
    """
    if pred.is_floating_point():
        if pred.dim() == true_ids.dim() + 2 and pred.shape[2] == 1:
            pred = pred.squeeze(2)
        num_pred = pred.shape[1] + (0 if masks_have_background else 1)
        pred = masks_to_ids(pred, masks_have_background)
    else:
        num_pred = None
    table = contingency_table(true_ids, pred, num_pred=num_pred)
    n_true = (table.sum(dim=2)[:, 1:] > 0).sum(dim=1).to(torch.float64)
    n_pred = (table.sum(dim=1) > 0).sum(dim=1).to(torch.float64) - 1
    out = {"count_true": n_true, "count_pred": n_pred}
    if presence is not None:
        counted = presence.detach().to(torch.float64).round().flatten(1).sum(dim=1)
        out["count_presence"] = counted
        out["acc_presence"] = (counted == n_true).to(torch.float64)
    return out
