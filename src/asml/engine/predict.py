"""``asml predict``: the task's prediction files for image files (masks and overlays; 16-bit depth
PNGs; normal maps as RGB)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from asml.data.readers import read_image
from asml.data.transforms import EvalTransform
from asml.engine.tasks import Task

__all__ = ["predict_files"]


@torch.no_grad()
def predict_files(
    model: nn.Module, images: Sequence[Path], out_dir: Path, task: Task, overwrite: bool = False
) -> Iterator[Path]:
    """For each image write the task's files (``Task.write_prediction``), yielding their paths.

    Segmentation: ``<stem>_mask.png`` (class indices) and ``<stem>_overlay.png``; depth:
    ``<stem>_depth.png`` (16-bit) and a preview; normals: ``<stem>_normals.png``. Existing outputs are
    never replaced unless ``overwrite``; unreadable images raise ``DatasetError``.
    """
    targets = [task.prediction_files(out_dir, p.stem) for p in images]
    clashes = [str(t) for paths in targets for t in paths if t.exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{', '.join(clashes[:3])} exist; pass --force to replace them or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    transform = EvalTransform()
    for path in images:
        image = read_image(path)
        normalised, _ = transform(image, torch.zeros(image.shape[1:], dtype=torch.long))
        output = model(normalised.unsqueeze(0).to(device))
        yield from task.write_prediction(output, image, out_dir, path.stem)
