"""Readers of depth and surface-normal data sets, in the layouts they are distributed in.

* ``Stanford2D3DS``: Stanford 2D-3D-Semantics (the paper's), ``area_*/data/{rgb,depth,normal}``,
  split by the standard folds (fold 1: areas 1, 2, 3, 4, 6 train, area 5 val).
* ``NYUDepthV2``: NYU Depth v2 labelled set exported to a folder: ``images/``, ``depths/`` (16-bit
  millimetres) and, for normals, ``normals/`` (RGB), with ``splits/<split>.txt``.

Each returns ``(image, target)``: ``uint8 [3, H, W]`` and float32 depth ``[1, H, W]`` in metres
(0 where missing) or unit normals ``[3, H, W]`` (0 where missing), the targets that
``asml.core.regression`` and the dense transforms take. Problems in the files raise ``DatasetError``
naming the file and what was expected; a missing root shows the expected layout; listed samples
whose files are missing are named together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from asml.data.readers import IMAGE_SUFFIXES, DatasetError, open_picture, read_image

__all__ = ["DenseFiles", "NYUDepthV2", "Stanford2D3DS", "read_depth_png", "read_normals_png"]

Transform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
TASKS = ("depth", "normals")
# The standard 2D-3D-S folds: (train areas, val areas).
FOLDS = {
    1: (("area_1", "area_2", "area_3", "area_4", "area_6"), ("area_5a", "area_5b")),
    2: (("area_1", "area_3", "area_5a", "area_5b", "area_6"), ("area_2", "area_4")),
    3: (("area_2", "area_4", "area_5a", "area_5b"), ("area_1", "area_3", "area_6")),
}


def read_depth_png(path: Path, units_per_metre: float, missing: Sequence[int]) -> Tensor:
    """Depth ``float32 [1, H, W]`` in metres from a 16-bit PNG; ``missing`` raw values become 0."""
    picture = open_picture(path, "depth map")
    if picture.mode not in ("I", "I;16", "I;16B"):
        raise DatasetError(f"depth map {path} is mode {picture.mode}; expected a 16-bit single-channel PNG")
    raw = np.asarray(picture).astype(np.int64)
    depth = raw.astype(np.float32) / units_per_metre
    depth[np.isin(raw, list(missing)) | (raw < 0)] = 0.0
    return torch.from_numpy(depth)[None]


def read_normals_png(path: Path) -> Tensor:
    """Unit normals ``float32 [3, H, W]`` from an RGB PNG storing ``127.5 n + 127.5``; pixels within
    one level of (128, 128, 128) or all zero (no normal) become 0."""
    picture = open_picture(path, "normal map")
    if picture.mode != "RGB":
        raise DatasetError(f"normal map {path} is mode {picture.mode}; expected an RGB PNG (127.5 n + 127.5)")
    raw = np.asarray(picture).astype(np.float32)
    vectors = raw - 127.5
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    missing = (np.abs(raw - 128).max(axis=-1) <= 1) | (raw.max(axis=-1) == 0)
    unit = np.where(missing[..., None], 0.0, vectors / np.maximum(norms, 1e-6)).astype(np.float32)
    return torch.from_numpy(unit).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class DenseSample:
    """One image and the file of its target."""

    sample_id: str
    image: Path
    target: Path


class DenseFiles(Dataset[tuple[Tensor, Tensor]]):
    """Pairs of image and target files with the checks every dense reader shares.

    Args:
        samples: the pairs, in order.
        task: ``"depth"`` or ``"normals"``.
        read_target: file -> the target tensor (``[1, H, W]`` or ``[3, H, W]`` float32).
        transform: ``(image, target) -> (image, target)``, e.g. ``DenseTrainTransform``; None: raw.
    """

    def __init__(
        self,
        samples: Sequence[DenseSample],
        task: str,
        read_target: Callable[[Path], Tensor],
        transform: Transform | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if not samples:
            raise DatasetError("the dataset has no samples")
        self.samples, self.task, self.read_target, self.transform = list(samples), task, read_target, transform
        self.target_channels = 1 if task == "depth" else 3

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """The checked raw pair: ``uint8 [3, H, W]`` image and the float32 target."""
        sample = self.samples[index]
        image = read_image(sample.image)
        target = self.read_target(sample.target)
        if tuple(target.shape[1:]) != tuple(image.shape[1:]):
            raise DatasetError(
                f"{self.task} map {sample.target} is {target.shape[2]}x{target.shape[1]} but image {sample.image} "
                f"is {image.shape[2]}x{image.shape[1]} (width x height); they must be the same size"
            )
        return image, target

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, target = self.load(index)
        return self.transform(image, target) if self.transform is not None else (image, target)


def _require_files(samples: list[DenseSample], task: str) -> list[DenseSample]:
    """The samples, if every image and target exists; else one error naming every missing file."""
    missing = [
        f"sample {sample.sample_id!r}: its {kind} {path} does not exist"
        for sample in samples
        for kind, path in (("image", sample.image), (f"{task} map", sample.target))
        if not path.is_file()
    ]
    if len(missing) == 1:
        raise DatasetError(missing[0])
    if missing:
        shown = "\n  ".join(missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DatasetError(f"{len(missing)} files of the dataset do not exist:\n  {shown}{more}")
    return samples


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


class Stanford2D3DS(DenseFiles):
    """Stanford 2D-3D-Semantics, as distributed (the 2D modality of each area).

    Depth PNGs hold 1/512 m per unit, 65535 where missing; normal PNGs hold ``127.5 n + 127.5`` with
    (128, 128, 128) where missing (camera frame). Area 6 names some normal files ``*_normal.png``
    instead of ``*_normals.png`` (as the authors' reader notes); both are read.

    Args:
        root: the folder holding ``area_1`` ... ``area_6``.
        split: ``train`` or ``val`` of the fold.
        fold: 1, 2 or 3 (the standard folds; the paper and the release use fold 1).
        task: ``depth`` or ``normals``.
        transform: joint transform (see ``asml.data.dense_transforms``).
    """

    LAYOUT = (
        "  <root>/area_<n>/data/rgb/<name>_domain_rgb.png\n"
        "  <root>/area_<n>/data/depth/<name>_domain_depth.png      (16-bit, 1/512 m, 65535 = missing)\n"
        "  <root>/area_<n>/data/normal/<name>_domain_normals.png   (RGB, 127.5 n + 127.5)\n"
        "  areas: area_1, area_2, area_3, area_4, area_5a, area_5b, area_6"
    )
    DEPTH_UNITS_PER_METRE = 512.0

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        fold: int = 1,
        task: str = "normals",
        transform: Transform | None = None,
    ) -> None:
        _check_task(task)
        root = Path(root)
        if fold not in FOLDS:
            raise DatasetError(f"fold must be 1, 2 or 3, got {fold!r}")
        if split not in ("train", "val"):
            raise DatasetError(f"split must be 'train' or 'val' for Stanford 2D-3D-S folds, got {split!r}")
        areas = FOLDS[fold][0 if split == "train" else 1]
        present = [root / area for area in areas if (root / area / "data" / "rgb").is_dir()]
        if not present:
            raise DatasetError(f"no Stanford 2D-3D-S dataset at {root}; expected this layout:\n{self.LAYOUT}")
        absent = [area for area in areas if not (root / area / "data" / "rgb").is_dir()]
        if absent:
            raise DatasetError(
                f"fold {fold} {split} needs areas {', '.join(areas)}; {', '.join(absent)} missing under {root} "
                f"(each with data/rgb, data/depth and data/normal)"
            )
        images = [image for area in present for image in sorted((area / "data" / "rgb").glob("*_rgb.png"))]
        samples = [self._sample(image, task) for image in images]
        super().__init__(_require_files(samples, task), task, self._reader(task), transform)

    @staticmethod
    def _sample(image: Path, task: str) -> DenseSample:
        data = image.parent.parent
        stem = image.name.removesuffix("_rgb.png")
        if task == "depth":
            target = data / "depth" / f"{stem}_depth.png"
        else:
            target = data / "normal" / f"{stem}_normals.png"
            if not target.is_file() and (data / "normal" / f"{stem}_normal.png").is_file():
                target = data / "normal" / f"{stem}_normal.png"
        return DenseSample(f"{data.parent.name}/{stem}", image, target)

    def _reader(self, task: str) -> Callable[[Path], Tensor]:
        if task == "normals":
            return read_normals_png
        # partial, not a lambda: loader workers started by spawn (macOS, Windows) pickle the dataset.
        return partial(read_depth_png, units_per_metre=self.DEPTH_UNITS_PER_METRE, missing=(65535,))


class NYUDepthV2(DenseFiles):
    """NYU Depth v2's labelled set (1449 images) exported to a folder.

    Args:
        root: the folder with ``images/<id>.<png|jpg>``, ``depths/<id>.png`` (16-bit millimetres,
            0 where missing) and for normals ``normals/<id>.png`` (RGB, ``127.5 n + 127.5``), and
            ``splits/<split>.txt`` listing ids (the official split: 795 train, 654 test).
        split: the name of a split file (``train``, ``test``, ...).
        task: ``depth`` or ``normals``.
        depth_units_per_metre: 1000 for millimetres.
        transform: joint transform (see ``asml.data.dense_transforms``).
    """

    LAYOUT = (
        "  <root>/images/<id>.png|jpg\n"
        "  <root>/depths/<id>.png     (16-bit, millimetres, 0 = missing)\n"
        "  <root>/normals/<id>.png    (RGB, 127.5 n + 127.5; for task normals)\n"
        "  <root>/splits/<split>.txt  (one id per line)"
    )

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        task: str = "depth",
        depth_units_per_metre: float = 1000.0,
        transform: Transform | None = None,
    ) -> None:
        _check_task(task)
        root = Path(root)
        if not (root / "images").is_dir():
            raise DatasetError(f"no NYU Depth v2 export at {root}; expected this layout:\n{self.LAYOUT}")
        split_file = root / "splits" / f"{split}.txt"
        if not split_file.is_file():
            raise DatasetError(f"split file {split_file} does not exist (one id per line)")
        ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise DatasetError(f"split file {split_file} lists no ids")
        folder = "depths" if task == "depth" else "normals"
        samples = [DenseSample(i, self._image(root, i), root / folder / f"{i}.png") for i in ids]
        self.depth_units_per_metre = depth_units_per_metre
        reader: Callable[[Path], Tensor] = (
            read_normals_png
            if task == "normals"
            else partial(read_depth_png, units_per_metre=depth_units_per_metre, missing=(0,))
        )
        super().__init__(_require_files(samples, task), task, reader, transform)

    @staticmethod
    def _image(root: Path, sample_id: str) -> Path:
        for suffix in IMAGE_SUFFIXES:
            if (root / "images" / f"{sample_id}{suffix}").is_file():
                return root / "images" / f"{sample_id}{suffix}"
        return root / "images" / f"{sample_id}.png|.jpg|.jpeg"
