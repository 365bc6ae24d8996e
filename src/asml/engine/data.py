"""The trainer's data: datasets from the config, deterministic augmentation, resumable batch order.

The order of training samples is a function of (seed, epoch) only, and each sample's random
augmentation a function of (seed, epoch, index): a run resumed at step t sees exactly the batches an
uninterrupted run would, whatever the number of loader workers. With W processes and batch b per
process, global step t takes the b*W samples ``perm[t*b*W : (t+1)*b*W]`` and process r the r-th
slice of b, so W processes with batch b see the same samples per step as one process with batch b*W.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from asml.data import (
    BuiltinSegmentation,
    CityscapesSegmentation,
    DatasetError,
    EvalTransform,
    FolderSegmentation,
    TrainTransform,
    VOCSegmentation,
    WeizmannHorse,
)
from asml.data.dense_readers import NYUDepthV2, Stanford2D3DS
from asml.data.dense_transforms import DenseEvalTransform, DenseTrainTransform
from asml.data.scenes import BuiltinScenes
from asml.engine.config import ConfigError, DataConfig

__all__ = ["DataBundle", "build_data", "check_headers", "open_split", "training_batches", "validation_loader"]

RawDataset = Dataset[tuple[Tensor, Tensor]]


class DataBundle:
    """Train and validation sets (raw pairs), their classes (none for depth and normals), and the
    transforms of the task."""

    train_transform: TrainTransform | DenseTrainTransform
    eval_transform: EvalTransform | DenseEvalTransform

    def __init__(
        self,
        train: RawDataset,
        val: RawDataset,
        class_names: Sequence[str],
        config: DataConfig,
        task: str = "segmentation",
    ) -> None:
        self.train, self.val = train, val
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.task = task
        if task == "segmentation":
            self.train_transform = TrainTransform(
                crop_size=config.crop_size, scale_range=config.scale_range, flip=config.flip
            )
            self.eval_transform = EvalTransform(size=config.eval_size)
        else:
            self.train_transform = DenseTrainTransform(
                config.crop_size, task, scale_range=config.scale_range, flip=config.flip
            )
            self.eval_transform = DenseEvalTransform(size=config.eval_size, task=task)


SEGMENTATION_DATASETS = "builtin:horses, builtin:riders, voc, cityscapes, weizmann_horse or folder"
REGRESSION_DATASETS = "builtin:scenes, stanford2d3ds or nyu"


def _open_dense_split(config: DataConfig, split: str, task: str) -> RawDataset:
    """The raw dataset of ``split`` for depth or normals."""
    kind = config.dataset
    if kind == "builtin:scenes":
        return BuiltinScenes(split, size=config.size, task=task)
    if kind not in ("stanford2d3ds", "nyu"):
        raise ConfigError(f"data.dataset {kind!r} holds label maps; task {task} reads {REGRESSION_DATASETS}")
    if config.root is None:
        raise ConfigError(f"data.root is required for data.dataset={kind!r}")
    if kind == "stanford2d3ds":
        return Stanford2D3DS(config.root, split, fold=config.fold, task=task)
    return NYUDepthV2(config.root, split, task=task)


def open_split(config: DataConfig, split: str, task: str = "segmentation") -> RawDataset:
    """The raw (untransformed) dataset of ``split`` as the config describes it, for ``task``."""
    kind = config.dataset
    if task != "segmentation":
        return _open_dense_split(config, split, task)
    if kind in ("builtin:scenes", "stanford2d3ds", "nyu"):
        raise ConfigError(
            f"data.dataset {kind!r} holds depth and surface normals: set task=depth or task=normals, "
            f"or choose a segmentation set ({SEGMENTATION_DATASETS})"
        )
    if kind.startswith("builtin:"):
        return BuiltinSegmentation(kind.split(":", 1)[1], split, size=config.size)
    if config.root is None:
        raise ConfigError(f"data.root is required for data.dataset={kind!r}")
    root = Path(config.root)
    if kind == "voc":
        return VOCSegmentation(root, split, sbd_root=config.sbd_root)
    if kind == "cityscapes":
        return CityscapesSegmentation(root, split)
    if kind == "weizmann_horse":
        return WeizmannHorse(root, split)
    if kind == "folder":
        return FolderSegmentation(root, split, num_classes=config.num_classes)
    raise ConfigError(f"unknown data.dataset {kind!r}; choose {SEGMENTATION_DATASETS} (or for depth and normals "
                      f"{REGRESSION_DATASETS})")  # fmt: skip


def build_data(config: DataConfig, task: str = "segmentation") -> DataBundle:
    """Open the train and validation splits named in the config, for ``task``."""
    train, val = open_split(config, config.train_split, task), open_split(config, config.val_split, task)
    if config.val_images is not None:
        val = Subset(val, range(min(config.val_images, len(val))))  # type: ignore[arg-type]
    if task != "segmentation":
        return DataBundle(train, val, (), config, task)
    names = getattr(train, "class_names", None)
    if names is None:
        raise ConfigError(f"dataset {config.dataset!r} does not name its classes")
    return DataBundle(train, val, names, config)


def check_headers(bundle: DataBundle, shown: int = 10) -> None:
    """Refuse a dataset whose file headers show problems (see ``asml.data.check.header_problems``),
    naming the first ``shown`` bad files; the full check is ``asml data check``."""
    from asml.data.check import header_problems

    problems = header_problems(bundle.train) + header_problems(bundle.val)
    if problems:
        listed = "\n  ".join(problems[:shown])
        more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
        raise DatasetError(
            f"{len(problems)} bad file(s) in the dataset, found before training:\n  {listed}{more}\n"
            "`asml data check CONFIG` reads every sample and lists every problem"
        )


class _Augmented(Dataset[tuple[Tensor, Tensor]]):
    """Items ``(index, epoch)`` -> the transformed sample, its randomness seeded by (seed, epoch, index)."""

    def __init__(self, bundle: DataBundle, items: Sequence[tuple[int, int]], seed: int) -> None:
        self.bundle, self.items, self.seed = bundle, list(items), seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[Tensor, Tensor]:
        index, epoch = self.items[position]
        image, mask = self.bundle.train[index]
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
        return self.bundle.train_transform(image, mask, generator)


def training_batches(
    bundle: DataBundle, batch_size: int, start_step: int, seed: int, rank: int, world: int, workers: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """This process's batches from global step ``start_step`` on, forever (see the module docstring)."""
    total = len(bundle.train)  # type: ignore[arg-type]
    per_step = batch_size * world
    steps_per_epoch = total // per_step
    if steps_per_epoch == 0:
        raise ConfigError(
            f"the training set has {total} images, fewer than one global batch of {per_step} "
            f"(data.batch_size={batch_size} x {world} processes)"
        )
    epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    while True:
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
        items: list[tuple[int, int]] = []
        for step in range(step_in_epoch, steps_per_epoch):
            first = step * per_step + rank * batch_size
            items.extend((order[k], epoch) for k in range(first, first + batch_size))
        loader = DataLoader(_Augmented(bundle, items, seed), batch_size=batch_size, num_workers=workers)
        yield from loader
        epoch, step_in_epoch = epoch + 1, 0


class _ValidationShard(Dataset[tuple[Tensor, Tensor]]):
    """Process ``rank``'s share of the validation set, transformed for evaluation."""

    def __init__(self, bundle: DataBundle, rank: int, world: int) -> None:
        self.bundle = bundle
        self.indices = list(range(rank, len(bundle.val), world))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Tensor, Tensor]:
        image, mask = self.bundle.val[self.indices[position]]
        return self.bundle.eval_transform(image, mask)


def validation_loader(bundle: DataBundle, rank: int, world: int, workers: int) -> DataLoader[tuple[Tensor, Tensor]]:
    """One image at a time (sizes may differ), every process a disjoint share, nothing repeated."""
    return DataLoader(_ValidationShard(bundle, rank, world), batch_size=1, num_workers=workers)
