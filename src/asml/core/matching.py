"""``AdversarialStructureMatching``: the whole method as one drop-in loss module.

One call per training step, ``loss = asm(logits, target)``:

1. (training mode, gradients enabled; on every ``analyzer_every``-th call, every call by default)
   the analyzer's update on this batch: the adversarial hinge
   between the ground truth and the hard negative ``one_hot(argmax(logits))`` with the decaying
   weight ``w_adv(t)``, plus the reconstruction loss R(A(y)) vs y; SGD step of the analyzer's own
   optimizer and LR schedule. Nothing of it reaches the segmenter (the negative is detached).
2. the segmenter's loss with the *updated* analyzer, as the released code orders the two updates:
   ``matching_weight * L_S + ce_weight * CE``, where ``L_S`` compares analyzer features of the
   softmax prediction and of the one-hot ground truth. The analyzer's parameters are detached in
   this pass, so ``loss.backward()`` never produces gradients on the analyzer.

Cost (see ``benchmarks/step_time.py``): only the ground truth runs the whole U-Net (for the
reconstruction); the hard negatives, and both inputs of the segmenter's pass, stop at the deepest
matched layer (conv2 by default), and the ground truth of the segmenter's pass runs without autograd.
The softmax is computed once and serves both the matching loss and the hard negative's argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from asml.core.adversary import (
    ANALYZER_PRECISIONS,
    AnalyzerAdversary,
    PolyDecay,
    check_cadence_and_precision,
    check_common_options,
)
from asml.core.analyzer import RELEASED_WIDTHS, AnalyzerOutput, StructureAnalyzer
from asml.core.cell_softmax import softmax_cell_means
from asml.core.label_maps import (
    CoarseGrid,
    as_class_logits,
    class_probabilities,
    ignored_pixels,
    loss_dtype,
    one_hot_target,
    validate_logits_and_target,
)
from asml.core.losses import (
    cross_entropy_over_valid,
    hinge_maps,
    layer_matching_distances,
    masked_mean,
    reconstruction_loss,
    soft_reconstruction_loss,
    structure_distance,
)

__all__ = ["ANALYZER_PRECISIONS", "HINGE_PIXELS", "AdversarialStructureMatching", "PolyDecay"]

HINGE_PIXELS = ("all", "errors")


class AdversarialStructureMatching(AnalyzerAdversary):
    """Adversarial Structure Matching loss with its own structure analyzer, optimizer and schedule.

    Args:
        num_classes: number of classes of the label maps (2 for figure-ground; a binary segmenter
            may then emit 1-channel sigmoid logits).
        ignore_index: label of void pixels (None: none). An ignored pixel's logits change no loss.
        matched_layers: analyzer layers compared by the matching and hinge losses (released: conv1, conv2).
        margin: hinge margin of the analyzer's adversarial loss; distances lie in [0, 4] (released 0.8).
        adversarial_weight: initial weight ``w_adv`` of the hinge (released 0.012).
        adversarial_decay: ``w_adv`` decays geometrically to this fraction of its initial value over
            ``total_steps`` (released 0.1, i.e. ``w_adv(t) = 0.012 * 10**(-t/T)``).
        hinge_pixels: where the hinge is averaged: ``"all"`` valid positions (released) or ``"errors"``,
            the positions whose encoder window holds a pixel where the hard negative differs from the
            ground truth. With few errors the released mean is mostly the constant ``margin`` of
            the correct positions, so ``"errors"`` makes the same weight a much stronger adversary.
            For decoder layers (conv6...) the window is their level's encoder window, a subset of
            what they see. Under ``torch.distributed`` each process averages over its own error
            positions before the gradients are averaged.
        total_steps: length of training T, for the weight decay and the analyzer's poly LR. None: both
            stay constant (pass it to reproduce the released schedule).
        reconstruction_weight: weight of the analyzer's reconstruction (structure-regularisation) loss (released 1).
        matching_weight: weight of the matching loss in the segmenter's loss (released 1).
        ce_weight: weight of an added cross-entropy term on the segmenter (released 0: off).
        analyzer_lr, analyzer_momentum, lr_power: the analyzer's SGD (released 1e-2, 0.9, poly power 0.9).
        analyzer_weight_decay: L2 on the analyzer's convolution kernels, not biases (released 5e-4).
        analyzer_widths: encoder widths of the default analyzer (released 16, 64, 128, 128, 128).
        analyzer: a ready ``StructureAnalyzer`` to use instead (its ``in_channels`` must be ``(num_classes,)``).
        analyzer_every: update the analyzer on every k-th training call only (released 1: every
            call). The segmenter's loss is computed on every call; the analyzer's LR schedule and
            ``w_adv(t)`` still follow the call count, so ``total_steps`` keeps its meaning. The
            update is most of what ASM adds to a step: k = 2 takes a third off what ASM adds, k = 4
            about half (``benchmarks/step_time.py``); what it costs in quality is in docs/speed. On a
            call without an update, ``latest`` keeps the last update's terms (not saved in the
            state: after a resume they reappear with the next update).
        analyzer_precision: ``"float32"`` (default): the analyzer's update runs in float32 whatever
            the caller's autocast, its pass for the segmenter's loss in the caller's precision.
            ``"bfloat16"``: both run their convolutions under bf16 autocast (the normalisations,
            distances, hinge and reconstruction loss stay float32); needs a CPU or an Ampere or
            newer GPU with bf16 support.
        analyzer_stride: the analyzer reads the label maps averaged over ``s x s`` cells of valid
            pixels (``asml.core.label_maps.CoarseGrid``): one-hot ground truth becomes class shares,
            probabilities and the hard negative are averaged alike, a cell without a valid pixel is
            ignored, and the reconstruction is scored against the cells' class shares (soft
            cross-entropy). 1 (released, default): full resolution. 2 does a quarter of the
            analyzer's work; it changes the training signal (what it costs is in docs/speed).
        fused_softmax: with ``analyzer_stride`` > 1, compute the cell means of the softmax and the CE
            term in one fused pass (``asml.core.cell_softmax``; the default): the same quantities
            to float32 rounding with about a third of the full-size memory traffic. False: op by op
            (softmax, its cell means, CE of the logits), as before; no effect at full resolution.

    Example (one training step; see the README for the whole loop):
        >>> asm = AdversarialStructureMatching(num_classes=3, total_steps=1000)
        >>> logits = torch.randn(2, 3, 64, 64, requires_grad=True)
        >>> loss = asm(logits, torch.randint(0, 3, (2, 64, 64)))
        >>> loss.backward()

    Under ``torch.distributed`` the analyzer's gradients are averaged across processes, so every
    process holds the same analyzer; do not wrap this module in DistributedDataParallel.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int | None = 255,
        matched_layers: Sequence[str] = ("conv1", "conv2"),
        margin: float = 0.8,
        adversarial_weight: float = 0.012,
        adversarial_decay: float = 0.1,
        hinge_pixels: Literal["all", "errors"] = "all",
        total_steps: int | None = None,
        reconstruction_weight: float = 1.0,
        matching_weight: float = 1.0,
        ce_weight: float = 0.0,
        analyzer_lr: float = 1e-2,
        analyzer_momentum: float = 0.9,
        analyzer_weight_decay: float = 5e-4,
        lr_power: float = 0.9,
        analyzer_widths: Sequence[int] = RELEASED_WIDTHS,
        analyzer: StructureAnalyzer | None = None,
        analyzer_every: int = 1,
        analyzer_precision: Literal["float32", "bfloat16"] = "float32",
        analyzer_stride: int = 1,
        fused_softmax: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"num_classes must be >= 2, got {num_classes}; binary segmentation has 2 classes "
                "(background, foreground), and 1-channel sigmoid logits are accepted with num_classes=2"
            )
        layers = check_common_options(
            total_steps=total_steps,
            matched_layers=matched_layers,
            margin=margin,
            adversarial_decay=adversarial_decay,
            weights={
                "adversarial_weight": adversarial_weight,
                "reconstruction_weight": reconstruction_weight,
                "matching_weight": matching_weight,
                "ce_weight": ce_weight,
            },
        )
        if hinge_pixels not in HINGE_PIXELS:
            raise ValueError(f"hinge_pixels must be one of {HINGE_PIXELS}, got {hinge_pixels!r}")
        check_cadence_and_precision(analyzer_every, analyzer_precision)
        if isinstance(analyzer_stride, bool) or not isinstance(analyzer_stride, int) or analyzer_stride < 1:
            raise ValueError(f"analyzer_stride must be a whole number of pixels >= 1, got {analyzer_stride!r}")
        if not isinstance(fused_softmax, bool):
            raise ValueError(f"fused_softmax must be true or false, got {fused_softmax!r}")

        analyzer = analyzer if analyzer is not None else StructureAnalyzer(num_classes, analyzer_widths)
        if analyzer.in_channels != (num_classes,):
            raise ValueError(f"analyzer reads inputs with channels {analyzer.in_channels}, expected ({num_classes},)")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.hinge_pixels = hinge_pixels
        self.ce_weight = ce_weight
        self.analyzer_stride = analyzer_stride
        self.fused_softmax = fused_softmax
        self.setup_adversary(
            analyzer,
            matched_layers=layers,
            margin=margin,
            adversarial_weight=adversarial_weight,
            adversarial_decay=adversarial_decay,
            total_steps=total_steps,
            reconstruction_weight=reconstruction_weight,
            matching_weight=matching_weight,
            analyzer_lr=analyzer_lr,
            analyzer_momentum=analyzer_momentum,
            analyzer_weight_decay=analyzer_weight_decay,
            lr_power=lr_power,
            analyzer_every=analyzer_every,
            analyzer_precision=analyzer_precision,
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Update the analyzer on this batch (training mode only), return the segmenter's loss.

        Args:
            logits: segmenter output ``[B, C, H, W]`` (or ``[B, 1, H, W]`` sigmoid logits when C = 2).
            target: ``[B, H, W]`` (or ``[B, 1, H, W]``) integer labels in [0, C) or ``ignore_index``.

        Returns:
            A float32 scalar: ``matching_weight * L_S + ce_weight * CE``, to backpropagate into the
            segmenter. The parts are in ``self.latest`` / ``self.latest_scalars()``.
        """
        target = validate_logits_and_target(logits, target, self.num_classes, self.ignore_index)
        self.check_device(logits)
        self.sync_analyzer_once()
        ignored = ignored_pixels(target, self.ignore_index)
        logits = self._without_ignored(logits, ignored)
        map_dtype = self._map_dtype(logits)
        grid = self._grid(ignored, map_dtype)
        prediction, cross_entropy, probabilities = self._prediction_and_cross_entropy(logits, target, grid, map_dtype)
        prediction = prediction.to(map_dtype)
        # The ground truth at the analyzer's input size, built once for the update and the loss.
        truth, truth_ignored = self._one_hot_at_analyzer_size(target, ignored, grid, map_dtype)
        scalars: dict[str, Tensor] = {}
        if self.training_call():
            if self.update_due():
                # The hard negative is the argmax of the probabilities (= of the logits). Op by op
                # they are laid out class-last, where the reduction is several times faster than
                # over NCHW logits; the fused pass keeps only NCHW logits, whose max (unlike their
                # argmax) is about as fast as the class-last one.
                source = probabilities if probabilities is not None else as_class_logits(logits)
                predicted = source.to(map_dtype).detach().max(dim=1).indices
                self._latest_update = self._update_analyzer(target, truth, predicted, ignored, grid)
            self.advance_schedule()
            scalars.update(self._latest_update)
        loss = self._segmenter_loss(prediction, cross_entropy, truth, truth_ignored, scalars)
        scalars["loss"] = loss.detach()
        self.latest = scalars
        return loss

    @torch.no_grad()
    def loss_maps(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Where each matched layer sees the mistakes: ``d_l(y, softmax(logits))`` per position,
        upsampled to the label size, ``{layer: [B, H, W]}`` float32 (0 where invalid). No update."""
        target = validate_logits_and_target(logits, target, self.num_classes, self.ignore_index)
        ignored = ignored_pixels(target, self.ignore_index)
        logits = self._without_ignored(logits, ignored)
        map_dtype = self._map_dtype(logits)
        probabilities = class_probabilities(logits).to(map_dtype)
        grid = self._grid(ignored, map_dtype)
        truth, truth_ignored = self._one_hot_at_analyzer_size(target, ignored, grid, map_dtype)
        prediction, _ = self._at_analyzer_size(probabilities, ignored, grid)
        prediction_out, target_out = self._matching_passes(prediction, truth, truth_ignored)
        maps = {}
        for name, features in prediction_out.features.items():
            distance = structure_distance(features, target_out.features[name])
            if prediction_out.valid is not None:
                distance = distance * prediction_out.valid[name]
            maps[name] = F.interpolate(distance[:, None], size=target.shape[-2:], mode="nearest")[:, 0]
        return maps

    @staticmethod
    def _without_ignored(logits: Tensor, ignored: Tensor | None) -> Tensor:
        """Logits with ignored pixels set to 0, so that even NaN or inf there changes no loss and
        gets a zero (not NaN) gradient."""
        return logits if ignored is None else logits.masked_fill(ignored.unsqueeze(1), 0.0)

    def _grid(self, ignored: Tensor | None, dtype: torch.dtype) -> CoarseGrid | None:
        """The analyzer's coarse input grid, or None at full resolution (``analyzer_stride`` 1)."""
        return CoarseGrid.for_mask(ignored, self.analyzer_stride, dtype) if self.analyzer_stride > 1 else None

    @staticmethod
    def _at_analyzer_size(
        maps: Tensor, ignored: Tensor | None, grid: CoarseGrid | None
    ) -> tuple[Tensor, Tensor | None]:
        """Full-size maps ``[B, C, H, W]`` and ignore mask at the analyzer's input size (unchanged
        at full resolution, cell means on a coarse grid)."""
        return (maps, ignored) if grid is None else (grid.average(maps), grid.ignored)

    def _one_hot_at_analyzer_size(
        self, labels: Tensor, ignored: Tensor | None, grid: CoarseGrid | None, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor | None]:
        """One-hot maps of ``[B, H, W]`` labels at the analyzer's input size, with its ignore mask:
        ``[B, C, H, W]`` at full resolution, the cells' class shares ``[B, C, h, w]`` on a coarse grid
        (counted per cell, never built at full size)."""
        if grid is None:
            return one_hot_target(labels, self.num_classes, ignored, dtype), ignored
        return grid.one_hot_shares(labels, self.num_classes, ignored, dtype), grid.ignored

    def _map_dtype(self, logits: Tensor) -> torch.dtype:
        """The analyzer's dtype for its input maps: float64 only for a float64 analyzer (gradcheck)."""
        analyzer_dtype = next(self.analyzer.parameters()).dtype
        return (
            torch.float64 if analyzer_dtype == torch.float64 and loss_dtype(logits) == torch.float64 else torch.float32
        )

    def _update_analyzer(
        self,
        target: Tensor,
        ground_truth: Tensor,
        predicted: Tensor,
        ignored: Tensor | None,
        grid: CoarseGrid | None = None,
    ) -> dict[str, Tensor]:
        """One SGD step of the analyzer on ``w_adv(t) * hinge + w_rec * reconstruction``.

        Args:
            target: ``[B, H, W]`` labels; ground_truth: their one-hot maps at the analyzer's input
            size (``[B, C, H, W]``, or the cell means ``[B, C, h, w]`` on ``grid``); predicted:
            ``[B, H, W]`` the segmenter's argmax; ignored: ``[B, H, W]`` bool or None; grid: the
            coarse grid the analyzer reads the maps on (None: full resolution).
        """
        wrong = predicted != target
        if ignored is not None:
            wrong = wrong & ~ignored
        # Counted on the device: no host synchronisation in the training step.
        valid_pixels = (~ignored).sum() if ignored is not None else torch.full((), target.numel(), device=target.device)
        error_share = (wrong.sum() / valid_pixels.clamp_min(1)).detach()
        negative, analyzer_ignored = self._one_hot_at_analyzer_size(predicted, ignored, grid, ground_truth.dtype)
        if grid is not None:
            wrong = grid.any(wrong)
        # Two passes rather than one on the concatenated batch: the negatives stop at the deepest
        # matched layer, and no batch slicing means no zero-filled gradients in the backward pass.
        # The analyzer's update runs in float32 under autocast (or bf16 if asked), so it needs no
        # gradient scaler.
        with self.analyzer_autocast(target.device):
            target_out = self.analyzer(ground_truth, analyzer_ignored, self.matched_layers, reconstruct=True)
            negative_out = self.analyzer(negative, analyzer_ignored, self.matched_layers)
            hinges, hinge_all, hinge_errors = self._hinges(negative_out, target_out, wrong)
            hinge = torch.stack(list(hinges.values())).sum()
            assert target_out.reconstruction is not None
            if grid is None:
                reconstruction = reconstruction_loss(target_out.reconstruction, target, self.ignore_index)
            else:
                reconstruction = soft_reconstruction_loss(target_out.reconstruction, ground_truth, analyzer_ignored)
            weight = self.current_adversarial_weight()
            analyzer_loss = weight * hinge + self.reconstruction_weight * reconstruction

        self.step_analyzer(analyzer_loss)

        scalars = {f"adversarial/{name}": value.detach() for name, value in hinges.items()}
        scalars["adversarial"] = hinge.detach()
        scalars["hinge_all"] = hinge_all
        scalars["hinge_errors"] = hinge_errors
        scalars["error_share"] = error_share
        scalars["reconstruction"] = reconstruction.detach()
        scalars["adversarial_weight"] = torch.tensor(weight)
        return scalars

    def _hinges(
        self, negative_out: AnalyzerOutput, target_out: AnalyzerOutput, wrong: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The per-layer hinges the analyzer minimises (averaged as ``hinge_pixels`` says), plus for
        the log, summed over layers and detached: the hinge over all valid positions and over the
        positions that see an error (``wrong``: ``[B, h, w]`` bool at the analyzer's input size,
        True where the hard negative differs from a valid ground-truth pixel)."""
        maps = hinge_maps(negative_out.features, target_out.features, self.margin)
        seen_errors = self.analyzer.window_masks(wrong, self.matched_layers)
        valid = target_out.valid
        over_all: dict[str, Tensor] = {}
        over_errors: dict[str, Tensor] = {}
        for name, values in maps.items():
            layer_valid = valid[name] if valid is not None else None
            error_positions = seen_errors[name] if layer_valid is None else seen_errors[name] & layer_valid
            over_all[name] = masked_mean(values, layer_valid)
            over_errors[name] = masked_mean(values, error_positions)
        used = over_errors if self.hinge_pixels == "errors" else over_all
        return (
            used,
            torch.stack(list(over_all.values())).sum().detach(),
            torch.stack(list(over_errors.values())).sum().detach(),
        )

    def _prediction_and_cross_entropy(
        self, logits: Tensor, target: Tensor, grid: CoarseGrid | None, map_dtype: torch.dtype
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The segmenter's probabilities at the analyzer's input size (``[B, C, H, W]`` at full
        resolution, the cell means ``[B, C, h, w]`` on a coarse grid; channels-last, float32 or
        float64), its CE term (a scalar; None when ``ce_weight`` is 0), and the full-size
        probabilities where they were built (None from the fused pass).

        Op by op: softmax, one copy to channels-last (and their cell means), the CE of the logits. On
        a coarse grid with ``fused_softmax``: the cell means and the CE from one pass
        (``asml.core.cell_softmax``), about a third of the full-size memory traffic.
        """
        with_ce = self.ce_weight > 0
        if grid is not None and self.fused_softmax:
            class_logits = as_class_logits(logits).to(loss_dtype(logits))
            means, cross_entropy = softmax_cell_means(
                class_logits, target, grid.valid, grid.share, grid.stride, with_ce
            )
            return means, cross_entropy, None
        probabilities = class_probabilities(logits)
        cross_entropy = (
            cross_entropy_over_valid(as_class_logits(logits), target, self.ignore_index) if with_ce else None
        )
        prediction = probabilities if grid is None else grid.average(probabilities.to(map_dtype))
        return prediction, cross_entropy, probabilities

    def _segmenter_loss(
        self,
        prediction: Tensor,
        cross_entropy: Tensor | None,
        ground_truth: Tensor,
        ignored: Tensor | None,
        scalars: dict[str, Tensor],
    ) -> Tensor:
        """``matching_weight * L_S (+ ce_weight * CE)`` with the analyzer's parameters detached;
        ``prediction``, ``ground_truth`` and ``ignored`` are at the analyzer's input size."""
        prediction_out, target_out = self._matching_passes(prediction, ground_truth, ignored)
        distances = layer_matching_distances(prediction_out.features, target_out.features, prediction_out.valid)
        matching = torch.stack(list(distances.values())).sum()
        loss = self.matching_weight * matching
        scalars.update({f"matching/{name}": value.detach() for name, value in distances.items()})
        scalars["matching"] = matching.detach()
        if cross_entropy is not None:
            loss = loss + self.ce_weight * cross_entropy
            scalars["ce"] = cross_entropy.detach()
        return loss

    def _matching_passes(
        self, probabilities: Tensor, ground_truth: Tensor, ignored: Tensor | None
    ) -> tuple[AnalyzerOutput, AnalyzerOutput]:
        """Matched-layer features of the prediction (differentiable in its input only) and of the
        ground truth (no autograd), both with the analyzer's parameters detached."""
        if self.analyzer_precision == "float32":  # the caller's autocast applies, as released
            return self._feature_passes(probabilities, ground_truth, ignored)
        with self.analyzer_autocast(probabilities.device):
            return self._feature_passes(probabilities, ground_truth, ignored)

    def _feature_passes(
        self, probabilities: Tensor, ground_truth: Tensor, ignored: Tensor | None
    ) -> tuple[AnalyzerOutput, AnalyzerOutput]:
        with torch.no_grad():
            target_out = self.analyzer(ground_truth, ignored, self.matched_layers, detach_parameters=True)
        prediction_out = self.analyzer(probabilities, ignored, self.matched_layers, detach_parameters=True)
        return prediction_out, target_out
