"""``asml predict``: index PNG masks and colour overlays for image files."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from asml.data.readers import read_image
from asml.data.transforms import EvalTransform
from asml.viz.preview import label_colormap

__all__ = ["predict_files"]


@torch.no_grad()
def predict_files(
    model: nn.Module, images: Sequence[Path], out_dir: Path, num_classes: int, overwrite: bool = False
) -> Iterator[Path]:
    """For each image write ``<stem>_mask.png`` (class indices) and ``<stem>_overlay.png``; yield paths.

    Existing outputs are never replaced unless ``overwrite``; unreadable images raise ``DatasetError``.
    """
    targets = [(out_dir / f"{p.stem}_mask.png", out_dir / f"{p.stem}_overlay.png") for p in images]
    clashes = [str(t) for pair in targets for t in pair if t.exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{', '.join(clashes[:3])} exist; pass --force to replace them or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    colours = label_colormap()
    transform = EvalTransform()
    for path, (mask_path, overlay_path) in zip(images, targets, strict=True):
        image = read_image(path)
        normalised, _ = transform(image, torch.zeros(image.shape[1:], dtype=torch.long))
        labels = model(normalised.unsqueeze(0).to(device)).argmax(dim=1)[0].cpu().numpy().astype(np.uint8)
        mask = Image.fromarray(labels, mode="L")  # class indices, as the folder layout reads them
        mask.save(mask_path)
        rgb = image.permute(1, 2, 0).numpy().astype(np.float64)
        overlay = (0.5 * rgb + 0.5 * colours[labels]).clip(0, 255).astype(np.uint8)
        Image.fromarray(overlay).save(overlay_path)
        yield mask_path
        yield overlay_path
