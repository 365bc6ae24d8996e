"""ASM for dense regression: monocular depth and surface normals (the CVPR 2019 extension).

As in the authors' released TensorFlow code (``pyscripts/train/train_stanford_scenes_asm.py``):

* the analyzer reads the target map instead of a one-hot label map: log-depth
  ``log(max(d, min_depth))`` (1 channel, ``min_depth = 1e-2``) or unit normals (3 channels);
* the hard negative of the analyzer's hinge is the detached prediction (there is no argmax);
* the reconstruction R(A(y)) is scored by the squared error for depth (on log-depth, the map the
  analyzer reads; the release compares ``relu(R)`` with linear depth) and by the cosine for normals;
* invalid pixels (no depth, a zero normal) are masked as ignored labels are: zeroed in the
  analyzer's input, their features dropped, and the prediction there changes no loss.

Conventions of the segmenter's output ``[B, K, H, W]``: for depth, one channel of log-depth in
metres (``depth = exp(output)``: positive by construction, and the per-pixel loss lives in log
space); for normals, three channels that are L2-normalised per pixel (the release's predictor does
the same). Targets: depth ``[B, 1, H, W]`` (or ``[B, H, W]``) in metres, ``<= 0`` or non-finite
where invalid; normals ``[B, 3, H, W]`` unit vectors, all-zero where invalid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from asml.core.adversary import AnalyzerAdversary, check_cadence_and_precision, check_common_options
from asml.core.analyzer import RELEASED_WIDTHS, AnalyzerOutput, StructureAnalyzer
from asml.core.losses import hinge_maps, layer_matching_distances, masked_mean, structure_distance

__all__ = [
    "REGRESSION_TASKS",
    "DepthEncoding",
    "NormalsEncoding",
    "RegressionEncoding",
    "RegressionStructureMatching",
    "regression_encoding",
]

REGRESSION_TASKS = ("depth", "normals")
# How far a valid target normal may be from unit length before it is refused.
_UNIT_TOLERANCE = 1e-3
_NORM_EPS = 1e-12
_LOG_DEPTH_LIMIT = 20.0


def _float(tensor: Tensor) -> Tensor:
    """float64 stays (gradcheck), everything else is computed in float32."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def _normalise(vectors: Tensor) -> Tensor:
    """``[B, 3, H, W]`` -> unit vectors per pixel (a zero vector stays zero)."""
    unit: Tensor = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True).clamp_min(_NORM_EPS)
    return unit


@dataclass(frozen=True)
class RegressionEncoding:
    """What a regression task hands the analyzer, and its per-pixel losses (see subclasses)."""

    task: ClassVar[str]
    channels: ClassVar[int]
    iid_losses: ClassVar[tuple[str, ...]]

    def target_valid(self, target: Tensor) -> Tensor:
        """``[B, K, H, W]`` target -> ``[B, H, W]`` bool, True where it holds a value."""
        raise NotImplementedError

    def check_target(self, target: Tensor, valid: Tensor) -> None:
        """Raise ``ValueError`` for target values this task cannot hold (none by default)."""

    def encode_target(self, target: Tensor) -> Tensor:
        """The analyzer's view of the target, ``[B, K, H, W]`` float32."""
        raise NotImplementedError

    def encode_prediction(self, output: Tensor) -> Tensor:
        """The analyzer's view of the segmenter's output, ``[B, K, H, W]`` float32, differentiable."""
        raise NotImplementedError

    def decode(self, output: Tensor) -> Tensor:
        """The prediction in the target's units (depth in metres, unit normals), ``[B, K, H, W]``."""
        raise NotImplementedError

    def reconstruction_loss(self, reconstruction: Tensor, encoded_target: Tensor, valid: Tensor | None) -> Tensor:
        """The analyzer's regulariser: R(A(y)) against the encoded target over valid pixels."""
        raise NotImplementedError

    def iid_loss(self, output: Tensor, target: Tensor, valid: Tensor | None, kind: str) -> Tensor:
        """The per-pixel ("IID") baseline loss of the segmenter's output over valid pixels."""
        raise NotImplementedError


@dataclass(frozen=True)
class DepthEncoding(RegressionEncoding):
    """Depth: the output is log-depth, the analyzer reads ``log(max(d, min_depth))``.

    IID losses: ``"l1"`` (mean absolute log error) or ``"l2"`` (mean squared log error).
    """

    task: ClassVar[str] = "depth"
    channels: ClassVar[int] = 1
    iid_losses: ClassVar[tuple[str, ...]] = ("l1", "l2")
    min_depth: float = 1e-2

    def __post_init__(self) -> None:
        if not self.min_depth > 0:
            raise ValueError(f"min_depth must be > 0 metres, got {self.min_depth}")

    def target_valid(self, target: Tensor) -> Tensor:
        return (torch.isfinite(target) & (target > 0))[:, 0]

    def encode_target(self, target: Tensor) -> Tensor:
        # nan_to_num first: invalid pixels may hold NaN, and they are masked afterwards anyway.
        return torch.log(_float(target).nan_to_num(0.0, 0.0, 0.0).clamp_min(self.min_depth))

    def encode_prediction(self, output: Tensor) -> Tensor:
        # log(max(exp(z), m)) = max(z, log m): as the release feeds log(max(prediction, 1e-2)).
        return _float(output).clamp_min(math.log(self.min_depth))

    def decode(self, output: Tensor) -> Tensor:
        # Log-depth clamped to +-20 (2e-9 to 5e8 m) so that exp stays finite for any output, as an
        # untrained network's can be: the metrics refuse non-finite predictions.
        return torch.exp(_float(output).clamp(-_LOG_DEPTH_LIMIT, _LOG_DEPTH_LIMIT))

    def reconstruction_loss(self, reconstruction: Tensor, encoded_target: Tensor, valid: Tensor | None) -> Tensor:
        return masked_mean((_float(reconstruction) - encoded_target).square()[:, 0], valid)

    def iid_loss(self, output: Tensor, target: Tensor, valid: Tensor | None, kind: str) -> Tensor:
        difference = (_float(output) - self.encode_target(target))[:, 0]
        per_pixel = difference.abs() if kind == "l1" else difference.square()
        return masked_mean(per_pixel, valid)


@dataclass(frozen=True)
class NormalsEncoding(RegressionEncoding):
    """Surface normals: the output is normalised per pixel; the analyzer reads unit vectors.

    IID losses: ``"cosine"`` (mean ``1 - cos``, the release's negative cosine shifted to 0 at a
    perfect prediction) or ``"l2"`` (mean squared distance of the unit vectors, ``2 - 2 cos``).
    """

    task: ClassVar[str] = "normals"
    channels: ClassVar[int] = 3
    iid_losses: ClassVar[tuple[str, ...]] = ("cosine", "l2")

    def target_valid(self, target: Tensor) -> Tensor:
        return torch.isfinite(target).all(dim=1) & (target != 0).any(dim=1)

    def check_target(self, target: Tensor, valid: Tensor) -> None:
        norms = torch.linalg.vector_norm(_float(target), dim=1)[valid]
        off = (norms - 1).abs() > _UNIT_TOLERANCE
        if bool(off.any()):
            example = float(norms[off][0])
            raise ValueError(
                f"target normals must be unit vectors (or all zero where invalid): {int(off.sum())} valid "
                f"pixel(s) have length off 1 by more than {_UNIT_TOLERANCE}, e.g. {example:.4f}; "
                "normalise them (a normal map stored as RGB maps to (rgb - 127.5) / 127.5, then normalise)"
            )

    def encode_target(self, target: Tensor) -> Tensor:
        return _float(target).nan_to_num(0.0, 0.0, 0.0)

    def encode_prediction(self, output: Tensor) -> Tensor:
        return _normalise(_float(output))

    def decode(self, output: Tensor) -> Tensor:
        return _normalise(_float(output))

    def reconstruction_loss(self, reconstruction: Tensor, encoded_target: Tensor, valid: Tensor | None) -> Tensor:
        cosine = (_normalise(_float(reconstruction)) * encoded_target).sum(dim=1)
        return masked_mean(1 - cosine, valid)

    def iid_loss(self, output: Tensor, target: Tensor, valid: Tensor | None, kind: str) -> Tensor:
        cosine = (self.encode_prediction(output) * self.encode_target(target)).sum(dim=1)
        return masked_mean(1 - cosine if kind == "cosine" else 2 - 2 * cosine, valid)


def regression_encoding(task: str, min_depth: float = 1e-2) -> RegressionEncoding:
    """The encoding of ``task`` (``"depth"`` or ``"normals"``)."""
    if task == "depth":
        return DepthEncoding(min_depth)
    if task == "normals":
        return NormalsEncoding()
    raise ValueError(f"unknown regression task {task!r}; choose one of {', '.join(REGRESSION_TASKS)}")


def validate_regression(
    output: Tensor, target: Tensor, valid_mask: Tensor | None, encoding: RegressionEncoding
) -> tuple[Tensor, Tensor]:
    """Check shapes and values; return the target as ``[B, K, H, W]`` and the valid mask ``[B, H, W]``.

    The valid mask is the target's own validity ANDed with ``valid_mask`` if one is given.
    """
    channels, task = encoding.channels, encoding.task
    if output.dim() != 4 or output.shape[1] != channels:
        raise ValueError(f"{task} output must be [B, {channels}, H, W], got shape {list(output.shape)}")
    if not output.is_floating_point():
        raise ValueError(f"{task} output must be floating point, got {output.dtype}")
    if target.dim() == 3 and channels == 1:
        target = target.unsqueeze(1)
    expected = [output.shape[0], channels, *output.shape[2:]]
    if list(target.shape) != expected:
        raise ValueError(
            f"{task} target must be {expected} to match the output {list(output.shape)}, got {list(target.shape)}"
        )
    if not target.is_floating_point():
        raise ValueError(f"{task} target must be floating point, got {target.dtype}")
    valid = encoding.target_valid(target)
    if valid_mask is not None:
        if list(valid_mask.shape) != [expected[0], *expected[2:]] or valid_mask.dtype != torch.bool:
            raise ValueError(
                f"valid_mask must be bool [B, H, W] = {[expected[0], *expected[2:]]}, "
                f"got {valid_mask.dtype} {list(valid_mask.shape)}"
            )
        valid = valid & valid_mask
    encoding.check_target(target, valid)
    return target, valid


class RegressionStructureMatching(AnalyzerAdversary):
    """Adversarial Structure Matching for depth or surface normals, with its own analyzer.

    The call shape is ``loss = asm(output, target, valid_mask=None)``; each training call first
    updates the analyzer (on every ``analyzer_every``-th call), then returns the segmenter's loss
    ``matching_weight * L_S + iid_weight * IID`` with the analyzer's parameters detached, as
    ``AdversarialStructureMatching`` does for label maps (see its docstring for the shared options).

    Args:
        task: ``"depth"`` or ``"normals"``.
        min_depth: depth floor (metres) of the log-depth the analyzer reads (released 1e-2).
        iid_loss: the per-pixel term: ``"l1"`` or ``"l2"`` on log-depth, ``"cosine"`` or ``"l2"`` for
            normals (default: ``"l1"`` for depth, ``"cosine"`` for normals).
        iid_weight: weight of the per-pixel term (released ASM: 0, off; ``asm+iid`` adds it).
        matched_layers, margin, adversarial_weight, adversarial_decay, total_steps,
        reconstruction_weight, matching_weight, analyzer_lr, analyzer_momentum,
        analyzer_weight_decay, lr_power, analyzer_widths, analyzer_every, analyzer_precision:
            as for ``AdversarialStructureMatching``, with the released values as defaults.
        analyzer: a ready ``StructureAnalyzer`` whose ``in_channels`` is ``(1,)`` for depth or ``(3,)``.

    Example:
        >>> asm = RegressionStructureMatching("normals", total_steps=100)
        >>> output = torch.randn(2, 3, 32, 32, requires_grad=True)
        >>> target = torch.nn.functional.normalize(torch.randn(2, 3, 32, 32), dim=1)
        >>> asm(output, target).backward()
    """

    def __init__(
        self,
        task: Literal["depth", "normals"],
        *,
        min_depth: float = 1e-2,
        iid_loss: str | None = None,
        iid_weight: float = 0.0,
        matched_layers: Sequence[str] = ("conv1", "conv2"),
        margin: float = 0.8,
        adversarial_weight: float = 0.012,
        adversarial_decay: float = 0.1,
        total_steps: int | None = None,
        reconstruction_weight: float = 1.0,
        matching_weight: float = 1.0,
        analyzer_lr: float = 1e-2,
        analyzer_momentum: float = 0.9,
        analyzer_weight_decay: float = 5e-4,
        lr_power: float = 0.9,
        analyzer_widths: Sequence[int] = RELEASED_WIDTHS,
        analyzer: StructureAnalyzer | None = None,
        analyzer_every: int = 1,
        analyzer_precision: Literal["float32", "bfloat16"] = "float32",
    ) -> None:
        super().__init__()
        self.encoding = regression_encoding(task, min_depth)
        iid_loss = iid_loss if iid_loss is not None else self.encoding.iid_losses[0]
        if iid_loss not in self.encoding.iid_losses:
            raise ValueError(f"iid_loss for {task} must be one of {self.encoding.iid_losses}, got {iid_loss!r}")
        layers = check_common_options(
            total_steps=total_steps,
            matched_layers=matched_layers,
            margin=margin,
            adversarial_decay=adversarial_decay,
            weights={
                "adversarial_weight": adversarial_weight,
                "reconstruction_weight": reconstruction_weight,
                "matching_weight": matching_weight,
                "iid_weight": iid_weight,
            },
        )
        check_cadence_and_precision(analyzer_every, analyzer_precision)
        channels = self.encoding.channels
        analyzer = analyzer if analyzer is not None else StructureAnalyzer(channels, analyzer_widths)
        if analyzer.in_channels != (channels,):
            raise ValueError(f"analyzer reads inputs with channels {analyzer.in_channels}, expected ({channels},)")
        self.task = task
        self.iid_loss = iid_loss
        self.iid_weight = iid_weight
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

    def forward(self, output: Tensor, target: Tensor, valid_mask: Tensor | None = None) -> Tensor:
        """Update the analyzer on this batch (training mode only), return the segmenter's loss.

        Args:
            output: the network's output ``[B, K, H, W]`` (log-depth, K = 1; or normals, K = 3).
            target: ``[B, K, H, W]`` (depth also ``[B, H, W]``); invalid pixels as the module says.
            valid_mask: optional ``[B, H, W]`` bool, ANDed with the target's own validity.

        Returns:
            A float32 scalar to backpropagate into the network; its parts are in ``self.latest``.
        """
        target, valid = validate_regression(output, target, valid_mask, self.encoding)
        self.check_device(output, "outputs")
        self.sync_analyzer_once()
        ignored = None if bool(valid.all()) else ~valid
        # Invalid pixels' outputs are set to 0 first: even NaN there changes no loss, and gets a
        # zero (not NaN) gradient.
        if ignored is not None:
            output = output.masked_fill(ignored.unsqueeze(1), 0.0)
        ground_truth = self.encoding.encode_target(target)
        prediction = self.encoding.encode_prediction(output)
        scalars: dict[str, Tensor] = {}
        if self.training_call():
            if self.update_due():
                self._latest_update = self._update_analyzer(ground_truth, prediction.detach(), ignored)
            self.advance_schedule()
            scalars.update(self._latest_update)
        loss = self._network_loss(output, target, prediction, ground_truth, ignored, scalars)
        scalars["loss"] = loss.detach()
        self.latest = scalars
        return loss

    @torch.no_grad()
    def loss_maps(self, output: Tensor, target: Tensor, valid_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Per matched layer, ``d_l(y, prediction)`` upsampled to the target size, ``{layer: [B, H, W]}``
        float32 (0 where invalid). No update."""
        target, valid = validate_regression(output, target, valid_mask, self.encoding)
        ignored = None if bool(valid.all()) else ~valid
        if ignored is not None:
            output = output.masked_fill(ignored.unsqueeze(1), 0.0)
        prediction_out, target_out = self._matching_passes(
            self.encoding.encode_prediction(output), self.encoding.encode_target(target), ignored
        )
        maps = {}
        for name, features in prediction_out.features.items():
            distance = structure_distance(features, target_out.features[name])
            if prediction_out.valid is not None:
                distance = distance * prediction_out.valid[name]
            maps[name] = F.interpolate(distance[:, None], size=target.shape[-2:], mode="nearest")[:, 0]
        return maps

    def _update_analyzer(self, ground_truth: Tensor, negative: Tensor, ignored: Tensor | None) -> dict[str, Tensor]:
        """One SGD step of the analyzer on ``w_adv(t) * hinge + w_rec * reconstruction``.

        Args:
            ground_truth: the encoded target ``[B, K, H, W]``; negative: the detached encoded prediction;
            ignored: ``[B, H, W]`` bool or None.
        """
        with self.analyzer_autocast(ground_truth.device):
            target_out = self.analyzer(ground_truth, ignored, self.matched_layers, reconstruct=True)
            negative_out = self.analyzer(negative, ignored, self.matched_layers)
            maps = hinge_maps(negative_out.features, target_out.features, self.margin)
            layer_valid = target_out.valid or {}
            hinges = {name: masked_mean(value, layer_valid.get(name)) for name, value in maps.items()}
            hinge = torch.stack(list(hinges.values())).sum()
            assert target_out.reconstruction is not None
            reconstruction = self.encoding.reconstruction_loss(
                target_out.reconstruction, ground_truth, ~ignored if ignored is not None else None
            )
            weight = self.current_adversarial_weight()
            analyzer_loss = weight * hinge + self.reconstruction_weight * reconstruction
        self.step_analyzer(analyzer_loss)
        scalars = {f"adversarial/{name}": value.detach() for name, value in hinges.items()}
        scalars["adversarial"] = hinge.detach()
        scalars["reconstruction"] = reconstruction.detach()
        scalars["adversarial_weight"] = torch.tensor(weight)
        return scalars

    def _network_loss(
        self,
        output: Tensor,
        target: Tensor,
        prediction: Tensor,
        ground_truth: Tensor,
        ignored: Tensor | None,
        scalars: dict[str, Tensor],
    ) -> Tensor:
        """``matching_weight * L_S (+ iid_weight * IID)`` with the analyzer's parameters detached."""
        prediction_out, target_out = self._matching_passes(prediction, ground_truth, ignored)
        distances = layer_matching_distances(prediction_out.features, target_out.features, prediction_out.valid)
        matching = torch.stack(list(distances.values())).sum()
        loss = self.matching_weight * matching
        scalars.update({f"matching/{name}": value.detach() for name, value in distances.items()})
        scalars["matching"] = matching.detach()
        if self.iid_weight > 0:
            valid = ~ignored if ignored is not None else None
            iid = self.encoding.iid_loss(output, target, valid, self.iid_loss)
            loss = loss + self.iid_weight * iid
            scalars["iid"] = iid.detach()
        return loss

    def _matching_passes(
        self, prediction: Tensor, ground_truth: Tensor, ignored: Tensor | None
    ) -> tuple[AnalyzerOutput, AnalyzerOutput]:
        """Matched-layer features of the prediction (differentiable in its input only) and of the
        target (no autograd), both with the analyzer's parameters detached."""
        if self.analyzer_precision == "float32":  # the caller's autocast applies, as for label maps
            return self._feature_passes(prediction, ground_truth, ignored)
        with self.analyzer_autocast(prediction.device):
            return self._feature_passes(prediction, ground_truth, ignored)

    def _feature_passes(
        self, prediction: Tensor, ground_truth: Tensor, ignored: Tensor | None
    ) -> tuple[AnalyzerOutput, AnalyzerOutput]:
        with torch.no_grad():
            target_out = self.analyzer(ground_truth, ignored, self.matched_layers, detach_parameters=True)
        prediction_out = self.analyzer(prediction, ignored, self.matched_layers, detach_parameters=True)
        return prediction_out, target_out
