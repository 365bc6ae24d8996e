"""Checking a dataset before training on it: every bad file named up front, not hours into a run.

Two levels:

* ``header_problems``: cheap, run by ``asml train`` before it writes anything. Opens every image and
  mask file's header only (no decoding): unreadable headers, wrong channel counts and image/mask
  size mismatches. Listed ids without files are already refused when the reader is built.
* ``check_dataset``: what ``asml data check`` does. Reads every sample once, fully, as training
  would, and collects each problem (truncated or undecodable files, labels outside the classes,
  sizes, channels) with the file it is in, plus the class histogram of the split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from asml.data.dense_readers import DenseFiles
from asml.data.readers import IMAGE_MODES, MASK_MODES, DatasetError, SegmentationFiles, open_picture

__all__ = [
    "DenseSplitReport",
    "SplitReport",
    "check_dataset",
    "check_dense_dataset",
    "format_dense_report",
    "header_problems",
]


def _header(path: Path, kind: str) -> tuple[str, tuple[int, int]] | str:
    """``(mode, (width, height))`` from a file's header, or the reader's message naming the file."""
    try:
        picture = open_picture(path, kind, decode=False)
    except DatasetError as error:
        return str(error)
    return picture.mode, picture.size


def header_problems(dataset: Dataset[tuple[Tensor, Tensor]]) -> list[str]:
    """Problems visible in the file headers of a file-backed dataset (``SegmentationFiles``), one
    message per bad sample naming its file; an empty list for datasets without files (built-in)."""
    indices: Sequence[int] | None = None
    if isinstance(dataset, Subset):  # e.g. data.val_images: only the samples used
        indices = dataset.indices
        dataset = dataset.dataset
    if isinstance(dataset, DenseFiles):
        return _dense_header_problems(dataset, indices)
    if not isinstance(dataset, SegmentationFiles):
        return []
    samples = dataset.samples if indices is None else [dataset.samples[i] for i in indices]
    problems = []
    expected_mode = IMAGE_MODES.get(dataset.image_channels)
    for sample in samples:
        image = _header(sample.image, "image")
        if isinstance(image, str):
            problems.append(image)
            continue
        if image[0] != expected_mode:
            channels = dataset.image_channels
            problems.append(f"image {sample.image} is mode {image[0]}; expected {channels} channel(s), {expected_mode}")
            continue
        if sample.mask.suffix != ".png":  # SBD's .mat masks have no cheap header; the full check reads them
            continue
        mask = _header(sample.mask, "mask")
        if isinstance(mask, str):
            problems.append(mask)
        elif mask[0] not in MASK_MODES:
            problems.append(f"mask {sample.mask} is mode {mask[0]}; expected a palette or single-channel PNG")
        elif mask[1] != image[1]:
            (mw, mh), (iw, ih) = mask[1], image[1]
            problems.append(
                f"mask {sample.mask} is {mw}x{mh} but image {sample.image} is {iw}x{ih} (width x height); "
                "they must be the same size"
            )
    return problems


def _dense_header_problems(dataset: DenseFiles, indices: Sequence[int] | None) -> list[str]:
    """Header problems of a depth or normals dataset: image mode, target mode, sizes."""
    samples = dataset.samples if indices is None else [dataset.samples[i] for i in indices]
    kind = f"{dataset.task} map"
    modes = ("I", "I;16", "I;16B") if dataset.task == "depth" else ("RGB",)
    expected = "a 16-bit single-channel PNG" if dataset.task == "depth" else "an RGB PNG"
    problems = []
    for sample in samples:
        image, target = _header(sample.image, "image"), _header(sample.target, kind)
        if isinstance(image, str) or isinstance(target, str):
            problems += [found for found in (image, target) if isinstance(found, str)]
        elif image[0] != "RGB":
            problems.append(f"image {sample.image} is mode {image[0]}; expected 3 channel(s), RGB")
        elif target[0] not in modes:
            problems.append(f"{kind} {sample.target} is mode {target[0]}; expected {expected}")
        elif target[1] != image[1]:
            (tw, th), (iw, ih) = target[1], image[1]
            problems.append(
                f"{kind} {sample.target} is {tw}x{th} but image {sample.image} is {iw}x{ih} (width x height); "
                "they must be the same size"
            )
    return problems


@dataclass
class SplitReport:
    """What ``check_dataset`` found in one split.

    Attributes:
        name: the split's name.
        samples: samples read.
        problems: one message per bad sample, naming its file.
        pixels: ``int64 [num_classes]`` labelled pixels per class over the good samples.
        images: ``int64 [num_classes]`` good samples holding each class.
        ignored: pixels with the ignore label.
    """

    name: str
    samples: int
    num_classes: int
    problems: list[str] = field(default_factory=list)
    pixels: Tensor = field(init=False)
    images: Tensor = field(init=False)
    ignored: int = 0

    def __post_init__(self) -> None:
        self.pixels = torch.zeros(self.num_classes, dtype=torch.int64)
        self.images = torch.zeros(self.num_classes, dtype=torch.int64)

    def absent(self) -> list[int]:
        """Classes no good sample of the split holds."""
        return [index for index, count in enumerate(self.images.tolist()) if count == 0]


def _raw_sample(dataset: Dataset[tuple[Tensor, Tensor]]) -> Callable[[int], tuple[Tensor, Tensor]]:
    """The untransformed ``(image, mask)`` reader of a dataset."""
    for name in ("load", "generate"):  # SegmentationFiles, BuiltinSegmentation
        reader = getattr(dataset, name, None)
        if reader is not None:
            return reader  # type: ignore[no-any-return]
    return dataset.__getitem__


def check_dataset(
    name: str,
    dataset: Dataset[tuple[Tensor, Tensor]],
    num_classes: int,
    ignore_index: int | None = 255,
    advance: Callable[[], None] | None = None,
) -> SplitReport:
    """Read every sample of ``dataset`` once and report its problems and class histogram.

    Args:
        name: the split's name, for the report.
        dataset: yields ``(image [C, H, W], mask [H, W])``; a reader's ``DatasetError`` is a problem.
        num_classes: labels must lie in ``[0, num_classes)`` or equal ``ignore_index``.
        ignore_index: the void label.
        advance: called after each sample (a progress bar's ``advance``).
    """
    read = _raw_sample(dataset)
    total = len(dataset)  # type: ignore[arg-type]
    report = SplitReport(name, total, num_classes)
    for index in range(total):
        try:
            _image, mask = read(index)
            labels = mask.reshape(-1).long()
            valid = labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
            # The file readers refuse such labels themselves; this covers datasets without that check.
            outside = valid & ((labels < 0) | (labels >= num_classes))
            if bool(outside.any()):
                values = sorted(set(labels[outside].tolist()))[:5]
                raise DatasetError(f"sample {index} of {name!r} holds labels {values}; expected [0, {num_classes})")
            counts = torch.bincount(labels[valid], minlength=num_classes)
            report.pixels += counts
            report.images += (counts > 0).long()
            report.ignored += int((~valid).sum())
        except DatasetError as error:
            report.problems.append(str(error))
        if advance is not None:
            advance()
    return report


def format_report(reports: Sequence[SplitReport], class_names: Sequence[str]) -> str:
    """The problems, then a table of pixels and images per class and split, then absent classes."""
    lines: list[str] = []
    for report in reports:
        if report.problems:
            lines.append(f"{report.name}: {len(report.problems)} bad sample(s) of {report.samples}")
            lines += [f"  {problem}" for problem in report.problems]
        else:
            lines.append(f"{report.name}: all {report.samples} samples read")
    width = max(len(n) for n in class_names)
    header = f"{'class':<{width}}" + "".join(f"  {r.name + ' pixels %':>16}  {r.name + ' images':>14}" for r in reports)
    lines += ["", header]
    for index, class_name in enumerate(class_names):
        row = f"{class_name:<{width}}"
        for report in reports:
            total = int(report.pixels.sum()) or 1
            row += f"  {100 * int(report.pixels[index]) / total:>16.2f}  {int(report.images[index]):>14d}"
        lines.append(row)
    for report in reports:
        lines.append(f"{report.name}: {report.ignored} ignored pixel(s)")
        absent = report.absent()
        if absent:
            lines.append(f"{report.name}: classes that never occur: {', '.join(class_names[i] for i in absent)}")
    return "\n".join(lines)


@dataclass
class DenseSplitReport:
    """What ``check_dense_dataset`` found in one split of a depth or normals dataset.

    Attributes:
        name, samples, task: the split, its sample count and ``"depth"`` or ``"normals"``.
        problems: one message per bad sample, naming its file (or index for built-in sets).
        pixels, valid: all target pixels of the good samples, and those holding a value.
        nearest, farthest: depth range over valid pixels (metres; depth only).
    """

    name: str
    samples: int
    task: str
    problems: list[str] = field(default_factory=list)
    pixels: int = 0
    valid: int = 0
    nearest: float = float("inf")
    farthest: float = 0.0


def _sample_name(dataset: Dataset[tuple[Tensor, Tensor]], index: int, split: str) -> str:
    samples = getattr(dataset, "samples", None)
    return f"{samples[index].target}" if samples is not None else f"sample {index} of {split!r}"


def check_dense_dataset(
    name: str, dataset: Dataset[tuple[Tensor, Tensor]], task: str, advance: Callable[[], None] | None = None
) -> DenseSplitReport:
    """Read every sample of a depth or normals dataset once; report bad files and valid pixels.

    A sample is bad if its files cannot be read, its target is not ``[1, H, W]`` (depth) or
    ``[3, H, W]`` (normals) at the image's size, it holds NaN or infinity, or (normals) a valid
    vector is off unit length by more than 1e-3.
    """
    read = _raw_sample(dataset)
    total = len(dataset)  # type: ignore[arg-type]
    report = DenseSplitReport(name, total, task)
    channels = 1 if task == "depth" else 3
    for index in range(total):
        try:
            image, target = read(index)
            where = _sample_name(dataset, index, name)
            if target.dim() != 3 or target.shape[0] != channels or target.shape[1:] != image.shape[1:]:
                raise DatasetError(
                    f"{where}: target is {list(target.shape)}, expected [{channels}, H, W] at the image's "
                    f"size {list(image.shape[1:])}"
                )
            if not bool(torch.isfinite(target).all()):
                raise DatasetError(f"{where}: target holds NaN or infinity; mark missing pixels with 0")
            valid = target[0] > 0 if task == "depth" else (target != 0).any(dim=0)
            if task == "normals":
                lengths = target.norm(dim=0)[valid]
                if bool(((lengths - 1).abs() > 1e-3).any()):
                    low, high = float(lengths.min()), float(lengths.max())
                    raise DatasetError(f"{where}: valid normals are not unit vectors (lengths {low:.3f} to {high:.3f})")
            elif bool(valid.any()):
                report.nearest = min(report.nearest, float(target[0][valid].min()))
                report.farthest = max(report.farthest, float(target[0][valid].max()))
            report.pixels += int(valid.numel())
            report.valid += int(valid.sum())
        except DatasetError as error:
            report.problems.append(str(error))
        if advance is not None:
            advance()
    return report


def format_dense_report(reports: Sequence[DenseSplitReport]) -> str:
    """The problems, then per split the share of valid pixels (and the depth range)."""
    lines: list[str] = []
    for report in reports:
        if report.problems:
            lines.append(f"{report.name}: {len(report.problems)} bad sample(s) of {report.samples}")
            lines += [f"  {problem}" for problem in report.problems]
        else:
            lines.append(f"{report.name}: all {report.samples} samples read")
    for report in reports:
        share = 100 * report.valid / report.pixels if report.pixels else 0.0
        line = f"{report.name}: {share:.2f}% of {report.pixels} target pixels hold a {report.task} value"
        if report.task == "depth" and report.valid:
            line += f"; depth {report.nearest:.3f} to {report.farthest:.3f} m"
        lines.append(line)
    return "\n".join(lines)
