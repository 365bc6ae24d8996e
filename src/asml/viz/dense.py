"""Pictures of dense regression maps: normals as RGB, depth and errors through a colour map.

Every function takes one map (no batch) and returns ``uint8 [H, W, 3]``; invalid pixels are black.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from torch import Tensor

__all__ = ["depth_to_rgb", "error_to_rgb", "normals_to_rgb"]


def normals_to_rgb(normals: Tensor) -> np.ndarray:
    """Unit normals ``[3, H, W]`` -> ``round(127.5 n + 127.5)`` per channel (the 2D-3D-S encoding:
    a zero vector is (128, 128, 128), which that data set uses for "no normal")."""
    array = normals.detach().float().cpu().numpy().transpose(1, 2, 0)
    return np.clip(np.rint(127.5 * array + 127.5), 0, 255).astype(np.uint8)


def _coloured(values: np.ndarray, valid: np.ndarray, low: float, high: float, name: str) -> np.ndarray:
    scaled = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0)
    rgb = (colormaps[name](scaled)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def depth_to_rgb(
    depth: Tensor, valid: Tensor | None = None, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """Depth ``[1, H, W]`` (metres) -> viridis of log-depth between ``low`` and ``high`` (default: the
    valid pixels' range); near is dark, far is bright."""
    values = depth.detach().float().cpu()[0]
    keep = (values > 0) & torch.isfinite(values) if valid is None else valid.cpu() & (values > 0)
    logs = torch.log(values.clamp_min(1e-6)).numpy()
    mask = keep.numpy()
    if not mask.any():
        return np.zeros((*logs.shape, 3), dtype=np.uint8)
    low_log = float(np.log(max(low, 1e-6))) if low is not None else float(logs[mask].min())
    high_log = float(np.log(max(high, 1e-6))) if high is not None else float(logs[mask].max())
    return _coloured(logs, mask, low_log, high_log, "viridis")


def error_to_rgb(error: Tensor, valid: Tensor, high: float) -> np.ndarray:
    """A per-pixel error ``[H, W]`` (e.g. degrees or absolute relative error) -> magma from 0 to ``high``."""
    return _coloured(error.detach().float().cpu().numpy(), valid.cpu().numpy(), 0.0, high, "magma")
