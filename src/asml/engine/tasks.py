"""The tasks the engine knows: what a network predicts, its loss, metrics, pictures and files.

``task_for(config)`` gives the ``Task`` of a run (``config.task``): ``SegmentationTask`` (label maps,
the default) or ``RegressionTask`` (``depth``: log-depth, one channel; ``normals``: three channels,
normalised per pixel). The trainer, ``asml eval`` and ``asml predict`` call only these methods, so
a task changes nothing in the training loop itself.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchmetrics import Metric

from asml.core import cross_entropy_over_valid
from asml.core.regression import RegressionEncoding, regression_encoding
from asml.engine.config import ConfigError, RunConfig
from asml.losses import SegmentationLoss, build_loss, build_regression_loss
from asml.metrics import SegmentationMetrics, format_table, to_json
from asml.metrics.regression import (
    DepthMetrics,
    NormalMetrics,
    format_depth_table,
    format_normals_table,
    regression_to_json,
)
from asml.models import canonical_architecture
from asml.viz.dense import depth_to_rgb, error_to_rgb, normals_to_rgb
from asml.viz.preview import label_colormap

__all__ = ["RegressionTask", "SegmentationTask", "Task", "task_for"]


def _shown(image: Tensor) -> Tensor:
    """A raw image ``[3, H, W]`` (uint8 or [0, 1] float) as float in [0, 1] for TensorBoard."""
    return image.float().div(255) if image.dtype == torch.uint8 else image.float()


def _picture(rgb: np.ndarray) -> Tensor:
    """``uint8 [H, W, 3]`` -> ``float [3, H, W]`` in [0, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)


class Task(ABC):
    """One kind of dense prediction, as the engine sees it."""

    name: str
    # Summary scores where lower is better (all others: higher is better).
    lower_is_better: frozenset[str] = frozenset()

    @abstractmethod
    def output_channels(self, num_classes: int) -> int:
        """Channels of the network's output (``num_classes`` is the data's, 0 for regression data)."""

    @abstractmethod
    def build_loss(self, config: RunConfig, num_classes: int) -> SegmentationLoss:
        """The configured loss, called as ``loss(output, target, images)``."""

    @abstractmethod
    def aux_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The per-pixel loss of an auxiliary head's output."""

    @abstractmethod
    def new_metrics(self, class_names: Sequence[str], trimap_widths: Sequence[float]) -> Metric:
        """A fresh metric object for one evaluation (trimap widths: segmentation's band widths)."""

    @abstractmethod
    def update_metrics(self, metrics: Metric, output: Tensor, target: Tensor) -> None:
        """Add one batch: the network's raw output ``[B, K, H, W]`` and the target."""

    @abstractmethod
    def summary(self, result: dict[str, Tensor]) -> dict[str, float]:
        """The scalar scores logged per evaluation (and the candidates for ``train.best_metric``)."""

    @abstractmethod
    def headline(self, summary: dict[str, float]) -> str:
        """The few scores of the ``eval at step N:`` line."""

    @abstractmethod
    def table(self, result: dict[str, Tensor], class_names: Sequence[str]) -> str:
        """The final table printed after training and by ``asml eval``."""

    @abstractmethod
    def to_json(self, result: dict[str, Tensor], class_names: Sequence[str]) -> dict[str, Any]:
        """``final_metrics.json``'s content."""

    @abstractmethod
    def pictures(self, output: Tensor, image: Tensor, target: Tensor, loss_fn: SegmentationLoss) -> dict[str, Tensor]:
        """TensorBoard pictures of one validation sample: ``output [1, K, H, W]`` on the loss's device,
        ``image`` the raw ``[3, H, W]``, ``target`` the raw target."""

    @abstractmethod
    def prediction_files(self, out_dir: Path, stem: str) -> list[Path]:
        """The files ``write_prediction`` writes for an image named ``stem``."""

    @abstractmethod
    def write_prediction(self, output: Tensor, image: Tensor, out_dir: Path, stem: str) -> list[Path]:
        """Write the prediction ``[1, K, H, W]`` for ``image`` (raw ``uint8 [3, H, W]``); return the files."""

    def is_better(self, metric: str, new: float, old: float) -> bool:
        """Whether ``new`` beats ``old`` on ``metric`` (NaN never does)."""
        if math.isnan(new):
            return False
        if math.isinf(old) or math.isnan(old):
            return True
        return new < old if metric in self.lower_is_better else new > old

    def check_best_metric(self, metric: str) -> None:
        """Refuse a ``train.best_metric`` this task never reports, before anything is written."""
        known = self.summary_keys()
        if metric not in known:
            raise ConfigError(
                f"train.best_metric {metric!r} is not a {self.name} score; choose one of {', '.join(known)}"
            )

    @abstractmethod
    def summary_keys(self) -> tuple[str, ...]:
        """The keys of ``summary``'s result."""


class SegmentationTask(Task):
    """Label maps: logits ``[B, C, H, W]``, targets ``[B, H, W]`` class indices (255 ignored)."""

    name = "segmentation"

    def __init__(self, trimap_widths: Sequence[float] = (1, 2, 4, 8, 16)) -> None:
        self.trimap_widths = tuple(float(w) for w in trimap_widths)

    def output_channels(self, num_classes: int) -> int:
        return num_classes

    def build_loss(self, config: RunConfig, num_classes: int) -> SegmentationLoss:
        return build_loss(
            config.loss.name,
            num_classes,
            total_steps=config.train.steps,
            asm_options=config.loss.asm,
            ce_weight=config.loss.ce_weight,
            gan_weight=config.loss.gan_weight,
            gan_lr=config.loss.gan_lr,
            segmenter=canonical_architecture(config.model.name),
        )

    def aux_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return cross_entropy_over_valid(output, target)

    def new_metrics(self, class_names: Sequence[str], trimap_widths: Sequence[float]) -> Metric:
        return SegmentationMetrics(len(class_names), trimap_widths=trimap_widths, class_names=class_names)

    def update_metrics(self, metrics: Metric, output: Tensor, target: Tensor) -> None:
        metrics.update(output.argmax(dim=1), target)

    def summary_keys(self) -> tuple[str, ...]:
        scores = ("mIoU", "BF", "mean_boundary_IoU", "pixel_accuracy", "mean_class_accuracy", "context_share")
        return (*scores, *(f"trimap_mIoU@{width:g}px" for width in self.trimap_widths))

    def summary(self, result: dict[str, Tensor]) -> dict[str, float]:
        summary = {key: float(result[key]) for key in self.summary_keys() if not key.startswith("trimap")}
        for width, value in zip(result["trimap_widths"].tolist(), result["trimap_mIoU"].tolist(), strict=True):
            summary[f"trimap_mIoU@{width:g}px"] = value
        return summary

    def headline(self, summary: dict[str, float]) -> str:
        shown = {"mIoU": "mIoU", "BF": "BF", "mean_boundary_IoU": "boundary IoU"}
        return "  ".join(f"{label} {100 * summary[key]:.1f}" for key, label in shown.items())

    def table(self, result: dict[str, Tensor], class_names: Sequence[str]) -> str:
        return format_table(result, class_names)

    def to_json(self, result: dict[str, Tensor], class_names: Sequence[str]) -> dict[str, Any]:
        return to_json(result, class_names)

    def pictures(self, output: Tensor, image: Tensor, target: Tensor, loss_fn: SegmentationLoss) -> dict[str, Tensor]:
        """image | target | prediction, and (ASM) each matched layer's loss map."""
        colours = torch.from_numpy(label_colormap()).float().div(255)
        logits = output.float().cpu()
        predicted = logits.argmax(1)[0]
        strip = [_shown(image), colours[target.clamp(0, 255)].permute(2, 0, 1), colours[predicted].permute(2, 0, 1)]
        pictures = {"validation/image_target_prediction": torch.cat(strip, dim=2)}
        asm = getattr(loss_fn, "asm", None)
        if asm is not None:
            for layer, loss_map in asm.loss_maps(output.float(), target[None].to(output.device)).items():
                scaled = (loss_map[0] / 4).clamp(0, 1).cpu()  # distances lie in [0, 4]
                pictures[f"analyzer_loss_map/{layer}"] = scaled.expand(3, *scaled.shape)
        return pictures

    def prediction_files(self, out_dir: Path, stem: str) -> list[Path]:
        return [out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"]

    def write_prediction(self, output: Tensor, image: Tensor, out_dir: Path, stem: str) -> list[Path]:
        """``<stem>_mask.png`` (class indices, as the folder layout reads them) and a colour overlay."""
        mask_path, overlay_path = self.prediction_files(out_dir, stem)
        labels = output.argmax(dim=1)[0].cpu().numpy().astype(np.uint8)
        Image.fromarray(labels, mode="L").save(mask_path)
        rgb = image.permute(1, 2, 0).numpy().astype(np.float64)
        overlay = (0.5 * rgb + 0.5 * label_colormap()[labels]).clip(0, 255).astype(np.uint8)
        Image.fromarray(overlay).save(overlay_path)
        return [mask_path, overlay_path]


class RegressionTask(Task):
    """Depth (output: log-depth, 1 channel) or surface normals (3 channels, normalised per pixel).

    Args:
        name: ``"depth"`` or ``"normals"``.
        depth_scale: units per metre of the 16-bit depth PNGs ``predict`` writes (1000: millimetres,
            NYU's; 2D-3D-S stores 512 per metre).
        depth_range: depth scoring: predictions clamped to ``[min, max]`` metres, targets beyond ``max``
            left out (``DepthMetrics``).
    """

    lower_is_better = frozenset({"mean_angle", "median_angle", "abs_rel", "sq_rel", "rmse", "rmse_log"})

    def __init__(
        self, name: str, depth_scale: float = 1000.0, depth_range: tuple[float, float | None] = (1e-3, None)
    ) -> None:
        if not (math.isfinite(depth_scale) and depth_scale > 0):
            raise ConfigError(f"the depth scale must be a positive number of units per metre, got {depth_scale}")
        self.name = name
        self.encoding: RegressionEncoding = regression_encoding(name)
        self.depth_scale = depth_scale
        self.depth_range = depth_range

    def output_channels(self, num_classes: int) -> int:
        return self.encoding.channels

    def build_loss(self, config: RunConfig, num_classes: int) -> SegmentationLoss:
        return build_regression_loss(
            config.loss.name,
            self.name,
            total_steps=config.train.steps,
            asm_options=config.loss.asm,
            iid=config.loss.iid,
            iid_weight=config.loss.iid_weight,
            gan_weight=config.loss.gan_weight,
            gan_lr=config.loss.gan_lr,
        )

    def aux_loss(self, output: Tensor, target: Tensor) -> Tensor:
        valid = self.encoding.target_valid(target)
        return self.encoding.iid_loss(
            output.masked_fill(~valid.unsqueeze(1), 0.0), target, valid, self.encoding.iid_losses[0]
        )

    def new_metrics(self, class_names: Sequence[str], trimap_widths: Sequence[float]) -> Metric:
        return NormalMetrics() if self.name == "normals" else DepthMetrics(*self.depth_range)

    def update_metrics(self, metrics: Metric, output: Tensor, target: Tensor) -> None:
        metrics.update(self.encoding.decode(output), target)

    def summary_keys(self) -> tuple[str, ...]:
        if self.name == "normals":
            thresholds = ("2.8125", "5.625", "11.25", "22.5", "30")
            return ("mean_angle", "median_angle", *(f"within_{t}" for t in thresholds))
        return ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")

    def summary(self, result: dict[str, Tensor]) -> dict[str, float]:
        return {key: float(result[key]) for key in self.summary_keys()}

    def headline(self, summary: dict[str, float]) -> str:
        if self.name == "normals":
            return (
                f"mean {summary['mean_angle']:.2f} deg  median {summary['median_angle']:.2f} deg  "
                f"within 11.25 deg {100 * summary['within_11.25']:.1f}%"
            )
        return f"abs rel {summary['abs_rel']:.3f}  RMSE {summary['rmse']:.3f} m  delta1 {100 * summary['delta1']:.1f}%"

    def table(self, result: dict[str, Tensor], class_names: Sequence[str]) -> str:
        return format_normals_table(result) if self.name == "normals" else format_depth_table(result)

    def to_json(self, result: dict[str, Tensor], class_names: Sequence[str]) -> dict[str, Any]:
        return regression_to_json(result)

    def _error_map(self, prediction: Tensor, target: Tensor, valid: Tensor) -> tuple[Tensor, float]:
        """Per-pixel error ``[H, W]`` and the value shown brightest: degrees (45) or abs rel (0.5)."""
        if self.name == "normals":
            cosine = (prediction * target).sum(dim=0).clamp(-1, 1)
            return torch.rad2deg(torch.acos(cosine)).masked_fill(~valid, 0.0), 45.0
        error = (prediction[0] - target[0]).abs() / target[0].clamp_min(1e-6)
        return error.masked_fill(~valid, 0.0), 0.5

    def _map_picture(self, values: Tensor, shown: Tensor, target: Tensor, target_valid: Tensor) -> np.ndarray:
        """Normals as RGB, or depth coloured over the target's valid range; black outside ``shown``."""
        if self.name == "normals":
            return normals_to_rgb(values * shown)
        known = target[0][target_valid]
        low, high = (float(known.min()), float(known.max())) if known.numel() else (None, None)
        return depth_to_rgb(values, shown, low, high)

    def pictures(self, output: Tensor, image: Tensor, target: Tensor, loss_fn: SegmentationLoss) -> dict[str, Tensor]:
        """image | target | prediction | error (degrees up to 45, or abs rel up to 0.5), and (ASM)
        each matched layer's loss map."""
        prediction = self.encoding.decode(output.float())[0].cpu()
        target = target.float().cpu()
        valid = self.encoding.target_valid(target[None])[0]
        error, high = self._error_map(prediction, target, valid)
        strip = [
            _shown(image),
            _picture(self._map_picture(target, valid, target, valid)),
            _picture(self._map_picture(prediction, torch.ones_like(valid), target, valid)),
            _picture(error_to_rgb(error, valid, high)),
        ]
        pictures = {"validation/image_target_prediction_error": torch.cat(strip, dim=2)}
        asm = getattr(loss_fn, "asm", None)
        if asm is not None:
            for layer, loss_map in asm.loss_maps(output, target[None].to(output.device)).items():
                scaled = (loss_map[0] / 4).clamp(0, 1).cpu()
                pictures[f"analyzer_loss_map/{layer}"] = scaled.expand(3, *scaled.shape)
        return pictures

    def prediction_files(self, out_dir: Path, stem: str) -> list[Path]:
        if self.name == "normals":
            return [out_dir / f"{stem}_normals.png"]
        return [out_dir / f"{stem}_depth.png", out_dir / f"{stem}_depth_preview.png"]

    def write_prediction(self, output: Tensor, image: Tensor, out_dir: Path, stem: str) -> list[Path]:
        """Normals: ``<stem>_normals.png``, RGB ``round(127.5 n + 127.5)`` (the 2D-3D-S encoding).
        Depth: ``<stem>_depth.png``, 16-bit ``round(depth * depth_scale)`` clipped to [1, 65534], and a
        colour preview ``<stem>_depth_preview.png``."""
        paths = self.prediction_files(out_dir, stem)
        prediction = self.encoding.decode(output.float())[0].cpu()
        if self.name == "normals":
            Image.fromarray(normals_to_rgb(prediction)).save(paths[0])
            return paths
        # 65535 is 2D-3D-S's "missing": the farthest depth written is one unit nearer.
        scaled = np.clip(np.rint(prediction[0].numpy().astype(np.float64) * self.depth_scale), 1, 65534)
        Image.fromarray(scaled.astype(np.uint16)).save(paths[0])
        Image.fromarray(depth_to_rgb(prediction)).save(paths[1])
        return paths


# Depth scoring per data set (metres): the release's clamp for 2D-3D-S (51 to 26560 units of 1/512 m),
# the usual NYU protocol (1e-3 to 10 m), and no cap elsewhere.
DEPTH_RANGES: dict[str, tuple[float, float | None]] = {"stanford2d3ds": (51 / 512, 26560 / 512), "nyu": (1e-3, 10.0)}


def task_for(config: RunConfig, depth_scale: float = 1000.0) -> Task:
    """The ``Task`` of ``config.task`` (``depth_scale``: units per metre of written depth PNGs)."""
    if config.task == "segmentation":
        return SegmentationTask(config.train.trimap_widths)
    depth_range = config.train.depth_range or DEPTH_RANGES.get(config.data.dataset, (1e-3, None))
    return RegressionTask(config.task, depth_scale, depth_range)
