"""``NormalMetrics`` and ``DepthMetrics``: dense-regression scores accumulated over a dataset.

The definitions follow the authors' released benchmark (``pyscripts/benchmark/benchmark_stanford_scenes.py``
in twke18/Adversarial_Structure_Matching): every score averages over all valid pixels of the dataset, not
over images. All states are sums (``dist_reduce_fx="sum"``), so under ``torchrun`` torchmetrics reduces them
across processes and every process computes the same dataset-level result. The integer states (pixel
counts, threshold counts, the angle histogram) equal those of a one-process run exactly; the float64 sums
can differ from it in the last bits, because floating-point addition depends on the order of the terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from asml.metrics.segmentation import _plain

__all__ = ["DepthMetrics", "NormalMetrics", "format_depth_table", "format_normals_table", "regression_to_json"]

# Below this length a predicted normal counts as the zero vector (x / max(|x|, eps)).
_NORM_EPS = 1e-12
# The delta thresholds of the depth literature: max(p / g, g / p) < 1.25 ** k.
_DELTA_POWERS = (1, 2, 3)


def _check_mask(valid: Tensor | None, shape: tuple[int, ...], name: str) -> None:
    """Raise unless ``valid`` is None or a bool tensor of ``shape`` ([B, H, W])."""
    if valid is None:
        return
    if tuple(valid.shape) != shape:
        raise ValueError(f"{name}: valid must have shape {list(shape)} ([B, H, W]), got {list(valid.shape)}")
    if valid.dtype != torch.bool:
        # A 0/1 float mask would work, but a label map passed by mistake would silently select pixels.
        raise ValueError(f"{name}: valid must be a bool tensor, got {valid.dtype}")


def _normalise(vectors: Tensor) -> Tensor:
    """``[N, 3]`` -> ``x / max(|x|, 1e-12)``: unit vectors, and a zero vector stays zero."""
    length: Tensor = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    return vectors / length.clamp_min(_NORM_EPS)


def _angles_degrees(preds: Tensor, target: Tensor) -> Tensor:
    """Angles in degrees (float64) between ``[N, 3]`` preds and target, both normalised here."""
    cos = (_normalise(preds.double()) * _normalise(target.double())).sum(dim=-1)
    # Rounding can push |cos| of (anti)parallel vectors just past 1, where arccos is NaN.
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def _histogram_median(histogram: Tensor, bin_width: float) -> Tensor:
    """``np.median`` of binned angles: the mean of the two middle angles' bin centres, in degrees.

    ``histogram`` [bins] int64 counts, bin ``b`` covering ``[b, b + 1) * bin_width``; at least one count.
    """
    cumulative = histogram.cumsum(0)
    count = cumulative[-1]
    ranks = torch.stack([(count - 1) // 2, count // 2])  # 0-based ranks of the middle angles (equal if odd)
    bins = torch.searchsorted(cumulative, ranks, right=True)  # first bin whose cumulative count exceeds the rank
    # The true angles lie in [0, 180]; clamping the last bin's centre can only bring it closer.
    centres = ((bins.double() + 0.5) * bin_width).clamp(0.0, 180.0)
    return centres.mean()


class NormalMetrics(Metric):
    """Angular error of predicted surface normals over a dataset, in degrees.

    Args:
        thresholds: the "within t degrees" scores to count (``angle <= t``, as the release counts).
        bin_width: width in degrees of the angle histogram the median is read from.

    ``update(preds, target, valid=None)``:

    * ``preds`` ``[B, 3, H, W]`` normals of any length, normalised here as ``x / max(|x|, 1e-12)``: a zero
      vector stays zero, so its cosine with any target is 0 and it scores 90 degrees;
    * ``target`` ``[B, 3, H, W]`` unit normals (renormalised the same way, as the release does, so normals
      decoded from 8-bit images need not be exactly unit); a pixel whose vector is all zero or has a
      non-finite component is invalid;
    * ``valid`` optional ``[B, H, W]`` bool mask, ANDed with the target's own validity.

    Predictions at invalid pixels are never read, so they may be anything, NaN included; a non-finite
    prediction at a valid pixel raises ``ValueError`` (it has no angle). The cosine is clamped to [-1, 1]
    and the angle is ``arccos`` in degrees, in float64.

    ``compute()`` returns a dict of tensors: ``mean_angle`` and ``median_angle`` (degrees), ``within_<t>``
    for each threshold, named ``f"{t:g}"`` (``within_11.25``, ``within_30``, ...), as fractions of the valid
    pixels, ``pixels`` (their count) and ``thresholds`` [T]. The scores are NaN when no valid pixel was seen.

    The median has ``np.median``'s semantics (the mean of the two middle angles for an even count), but is
    read off a histogram of ``ceil(180 / bin_width) + 1`` bins: a sum state, where the exact median would
    need every angle of the dataset kept and gathered. Each middle angle is replaced by the centre of its
    bin, so the error is at most ``bin_width / 2`` (plus float rounding at the bin edges), and in any case
    ``|median_angle - np.median(angles)| <= bin_width``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None  # lower angles, higher "within" fractions
    # The sum states (registered with add_state), declared for type checkers.
    pixels: Tensor
    angle_sum: Tensor
    within: Tensor
    histogram: Tensor

    def __init__(
        self,
        thresholds: Sequence[float] = (2.8125, 5.625, 11.25, 22.5, 30.0),
        bin_width: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.thresholds = tuple(float(t) for t in thresholds)
        if any(not 0.0 <= t <= 180.0 for t in self.thresholds):
            raise ValueError(f"thresholds must lie in [0, 180] degrees, got {self.thresholds}")
        self.names = tuple(f"within_{t:g}" for t in self.thresholds)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"thresholds give duplicate names: {self.names}")
        if not 0.0 < bin_width <= 180.0:
            raise ValueError(f"bin_width must lie in (0, 180] degrees, got {bin_width}")
        self.bin_width = float(bin_width)
        # The last bin holds exactly 180 degrees, the upper end of arccos.
        self.bins = math.ceil(180.0 / self.bin_width) + 1
        self.add_state("pixels", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("angle_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("within", torch.zeros(len(self.thresholds), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("histogram", torch.zeros(self.bins, dtype=torch.long), dist_reduce_fx="sum")

    def _valid_vectors(self, preds: Tensor, target: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Check the shapes and return the ``[N, 3]`` pred and target vectors at the valid pixels."""
        if preds.dim() != 4 or preds.shape[1] != 3 or preds.shape != target.shape:
            raise ValueError(
                "NormalMetrics: preds and target must both have shape [B, 3, H, W], "
                f"got preds {list(preds.shape)} and target {list(target.shape)}"
            )
        batch, _, height, width = preds.shape
        _check_mask(valid, (batch, height, width), "NormalMetrics")
        preds, target = preds.permute(0, 2, 3, 1), target.permute(0, 2, 3, 1)  # [B, H, W, 3]
        mask = target.isfinite().all(dim=-1) & (target != 0).any(dim=-1)
        if valid is not None:
            mask &= valid
        preds, target = preds[mask], target[mask]
        bad = int((~preds.isfinite().all(dim=-1)).sum())
        if bad:
            raise ValueError(f"NormalMetrics: {bad} valid pixels have a non-finite predicted normal")
        return preds, target

    def update(self, preds: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add a batch: ``preds``, ``target`` ``[B, 3, H, W]``, ``valid`` optional ``[B, H, W]`` bool."""
        angles = _angles_degrees(*self._valid_vectors(preds, target, valid))  # [N] float64
        thresholds = torch.tensor(self.thresholds, dtype=torch.float64, device=angles.device)
        self.pixels += angles.numel()
        self.angle_sum += angles.sum()
        self.within += (angles[:, None] <= thresholds).sum(dim=0)
        index = torch.floor(angles / self.bin_width).long().clamp_(0, self.bins - 1)
        self.histogram += torch.bincount(index, minlength=self.bins)

    def compute(self) -> dict[str, Tensor]:
        """The dataset-level scores (see the class docstring); NaN when no valid pixel was seen."""
        device = self.angle_sum.device
        result: dict[str, Tensor] = {}
        if self.pixels > 0:
            count = self.pixels.double()
            result["mean_angle"] = self.angle_sum / count
            result["median_angle"] = _histogram_median(self.histogram, self.bin_width)
            fractions = self.within.double() / count
        else:
            nan = torch.tensor(math.nan, dtype=torch.float64, device=device)
            result["mean_angle"], result["median_angle"] = nan, nan.clone()
            fractions = torch.full((len(self.thresholds),), math.nan, dtype=torch.float64, device=device)
        for name, fraction in zip(self.names, fractions, strict=True):
            result[name] = fraction
        result["pixels"] = self.pixels.clone()
        result["thresholds"] = torch.tensor(self.thresholds, dtype=torch.float64, device=device)
        return result


class DepthMetrics(Metric):
    """Depth errors over a dataset, in metres (per pixel, as the release averages).

    Args:
        min_depth: predictions are clamped to at least this (> 0, so the log error is defined).
        max_depth: if set, predictions are clamped to at most this and target pixels deeper than it are
            invalid. The usual NYU protocol uses ``min_depth=1e-3, max_depth=10``; the release clamps its
            predictions to [0.1, 51.9] m (``[51, 26560] / 512``) without dropping deep targets.

    ``update(preds, target, valid=None)``: ``preds`` and ``target`` ``[B, 1, H, W]`` or ``[B, H, W]`` (each
    either way), ``valid`` optional ``[B, H, W]`` bool, ANDed with the target's own validity: a target that
    is <= 0 or non-finite is invalid. Predictions at invalid pixels are never read (NaN is fine there); a
    non-finite prediction at a valid pixel raises ``ValueError``.

    ``compute()`` returns a dict of tensors, with ``p`` the clamped prediction and ``g`` the target at the
    valid pixels: ``abs_rel`` = mean |p - g| / g, ``sq_rel`` = mean (p - g)^2 / g, ``rmse`` = sqrt of the
    mean (p - g)^2, ``rmse_log`` = sqrt of the mean (log p - log g)^2, ``delta1``/``2``/``3`` = the fraction
    with max(p / g, g / p) < 1.25, 1.25^2, 1.25^3 (strict, as the release), and ``pixels``. The scores are
    NaN when no valid pixel was seen.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None  # lower errors, higher delta fractions
    # The sum states (registered with add_state), declared for type checkers.
    pixels: Tensor
    abs_rel_sum: Tensor
    sq_rel_sum: Tensor
    sq_error_sum: Tensor
    log_sq_error_sum: Tensor
    delta_counts: Tensor

    def __init__(self, min_depth: float = 1e-3, max_depth: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not min_depth > 0:
            raise ValueError(f"min_depth must be > 0 (the log error needs it), got {min_depth}")
        if max_depth is not None and not max_depth > min_depth:
            raise ValueError(f"max_depth must exceed min_depth {min_depth}, got {max_depth}")
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        self.add_state("pixels", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        for name in ("abs_rel_sum", "sq_rel_sum", "sq_error_sum", "log_sq_error_sum"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("delta_counts", torch.zeros(len(_DELTA_POWERS), dtype=torch.long), dist_reduce_fx="sum")

    def _valid_depths(self, preds: Tensor, target: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Check the shapes and return the ``[N]`` float64 clamped predictions and targets at valid pixels."""

        def squeeze(depth: Tensor) -> Tensor:
            return depth[:, 0] if depth.dim() == 4 and depth.shape[1] == 1 else depth

        shapes = f"got preds {list(preds.shape)} and target {list(target.shape)}"
        preds, target = squeeze(preds), squeeze(target)
        if preds.dim() != 3 or preds.shape != target.shape:
            raise ValueError(f"DepthMetrics: preds and target must have shape [B, 1, H, W] or [B, H, W], {shapes}")
        _check_mask(valid, tuple(target.shape), "DepthMetrics")
        # In float64 before comparing: a float32 target would be compared with float32(max_depth).
        target = target.double()
        mask = target.isfinite() & (target > 0)
        if self.max_depth is not None:
            mask &= target <= self.max_depth
        if valid is not None:
            mask &= valid
        preds, target = preds[mask].double(), target[mask]
        bad = int((~preds.isfinite()).sum())
        if bad:
            raise ValueError(f"DepthMetrics: {bad} valid pixels have a non-finite predicted depth")
        return preds.clamp(self.min_depth, self.max_depth), target

    def update(self, preds: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add a batch: ``preds``, ``target`` ``[B, 1, H, W]`` or ``[B, H, W]``, ``valid`` optional ``[B, H, W]``."""
        pred, gt = self._valid_depths(preds, target, valid)  # [N] float64, both > 0
        error = pred - gt
        self.pixels += gt.numel()
        self.abs_rel_sum += (error.abs() / gt).sum()
        self.sq_rel_sum += (error.square() / gt).sum()
        self.sq_error_sum += error.square().sum()
        self.log_sq_error_sum += (pred.log() - gt.log()).square().sum()
        ratio = torch.maximum(pred / gt, gt / pred)
        limits = torch.tensor([1.25**k for k in _DELTA_POWERS], dtype=torch.float64, device=ratio.device)
        self.delta_counts += (ratio[:, None] < limits).sum(dim=0)

    def compute(self) -> dict[str, Tensor]:
        """The dataset-level scores (see the class docstring); NaN when no valid pixel was seen."""
        # Dividing by a zero count gives NaN for the sums (0 / 0) without a special case.
        count = self.pixels.double()
        deltas = self.delta_counts.double() / count
        return {
            "abs_rel": self.abs_rel_sum / count,
            "sq_rel": self.sq_rel_sum / count,
            "rmse": (self.sq_error_sum / count).sqrt(),
            "rmse_log": (self.log_sq_error_sum / count).sqrt(),
            **{f"delta{k}": deltas[index] for index, k in enumerate(_DELTA_POWERS)},
            "pixels": self.pixels.clone(),
        }


def _percent(value: Tensor) -> str:
    """A fraction as ``"12.34%"``, NaN as ``"-"``."""
    number = float(value)
    return "-" if math.isnan(number) else f"{100 * number:.2f}%"


def _number(value: Tensor) -> str:
    """A score with 4 decimals (as the release prints), NaN as ``"-"``."""
    number = float(value)
    return "-" if math.isnan(number) else f"{number:.4f}"


def format_normals_table(result: dict[str, Tensor]) -> str:
    """``NormalMetrics.compute()``'s result as one line: mean, median (degrees), within-t fractions (%)."""
    within = "  ".join(f"<={t:g} {_percent(result[f'within_{t:g}'])}" for t in result["thresholds"].tolist())
    return (
        f"angle mean {_number(result['mean_angle'])}  median {_number(result['median_angle'])}  "
        f"within {within}  ({int(result['pixels'])} pixels)"
    )


def format_depth_table(result: dict[str, Tensor]) -> str:
    """``DepthMetrics.compute()``'s result as one line: the errors (metres) and the delta fractions (%)."""
    errors = "  ".join(f"{name} {_number(result[name])}" for name in ("abs_rel", "sq_rel", "rmse", "rmse_log"))
    deltas = "  ".join(f"d<1.25^{k} {_percent(result[f'delta{k}'])}" for k in _DELTA_POWERS)
    return f"{errors}  {deltas}  ({int(result['pixels'])} pixels)"


def regression_to_json(result: dict[str, Tensor]) -> dict[str, Any]:
    """A JSON-serialisable copy of either metric's ``compute()`` result (NaN becomes null)."""
    return {name: _plain(value) for name, value in result.items()}
