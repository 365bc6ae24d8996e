"""Does data loading keep ahead of training? Loader images/s against what an ASM step consumes.

Measures, one after the other in one run:
* a DataLoader (batch 8, 2 workers, training transform with random scale/crop/flip at 128x128) over
  the built-in ``horses`` and ``riders`` sets and over the image-folder layout (PNG files written
  to a temporary folder first);
* the images/s that a PSPNet-resnet18 training step with ASM consumes at 128x128, batch 8;
and prints the ratio loader / training (the target is 5 or more).

    .venv/bin/python benchmarks/data_loading.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from asml import AdversarialStructureMatching
from asml.data import BuiltinSegmentation, FolderSegmentation, TrainTransform
from asml.models import build


def loader_rate(dataset: Dataset[tuple[torch.Tensor, torch.Tensor]], batch: int, workers: int, batches: int) -> float:
    """Images per second over ``batches`` batches, after the first (worker start-up) batch."""
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )
    iterator: Iterable[tuple[torch.Tensor, torch.Tensor]] = iter(loader)
    next(iter(iterator))  # type: ignore[call-overload]
    start = time.perf_counter()
    seen = 0
    for images, _ in iterator:
        seen += images.shape[0]
        if seen >= batches * batch:
            break
    return seen / (time.perf_counter() - start)


def write_folder(root: Path, count: int, size: int) -> None:
    """A folder-layout copy of the built-in horses, as PNG files."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\nhorse\n")
    source = BuiltinSegmentation("horses", "train", size=size)
    for index in range(count):
        image, mask = source[index]
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / "images" / f"{index:04d}.png")
        Image.fromarray(mask.numpy().astype(np.uint8), mode="L").save(root / "masks" / f"{index:04d}.png")


def training_rate(size: int, batch: int, steps: int) -> float:
    """Images per second consumed by PSPNet-resnet18 training steps with ASM."""
    torch.manual_seed(0)
    model = build("pspnet", num_classes=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    asm = AdversarialStructureMatching(2, total_steps=1000)
    dataset = BuiltinSegmentation("horses", "train", size=size, transform=TrainTransform(crop_size=size))
    images = torch.stack([dataset[i][0] for i in range(batch)])
    masks = torch.stack([dataset[i][1] for i in range(batch)])
    durations = []
    for step in range(steps + 2):
        start = time.perf_counter()
        loss = asm(model(images), masks)  # type: ignore[arg-type]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:
            durations.append(time.perf_counter() - start)
    return batch / float(np.median(durations))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    transform = TrainTransform(crop_size=args.size)
    consumed = training_rate(args.size, args.batch, steps=8)
    print(
        f"PSPNet-resnet18 + ASM training consumes {consumed:.1f} images/s "
        f"({args.size}x{args.size}, batch {args.batch}, {torch.get_num_threads()} threads)"
    )
    print(f"{'loader':<34}{'images/s':>10}{'loader / training':>20}")
    rates = {}
    for name in ("horses", "riders"):
        dataset = BuiltinSegmentation(name, "train", size=args.size, transform=transform)
        rates[f"built-in {name}"] = loader_rate(dataset, args.batch, args.workers, args.batches)
    with tempfile.TemporaryDirectory() as folder:
        write_folder(Path(folder), count=args.batch * (args.batches + 2), size=int(args.size * 1.25))
        folder_set = FolderSegmentation(folder, transform=transform)
        rates["image folder (PNG, 160 px)"] = loader_rate(folder_set, args.batch, args.workers, args.batches)
    for name, rate in rates.items():
        print(f"{name:<34}{rate:>10.1f}{rate / consumed:>20.1f}")


if __name__ == "__main__":
    main()
