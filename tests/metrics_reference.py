"""Brute-force NumPy/SciPy reference of the metric definitions: loops over images and classes.

Independent of ``asml.metrics``: written from the definitions in its docstring, with SciPy's
``distance_transform_edt`` and ``binary_erosion``. Used by the tests and by
``benchmarks/metrics_speed.py`` as the baseline.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

IGNORE = 255


def ref_confusion(preds: np.ndarray, target: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), dtype=np.int64)
    for p, t in zip(preds.ravel(), target.ravel(), strict=True):
        if t != IGNORE:
            matrix[t, p] += 1
    return matrix


def ref_boundary(mask: np.ndarray) -> np.ndarray:
    """mask and not erode(mask), 3x3 square, outside the image counting as inside the mask."""
    padded = np.pad(mask, 1, constant_values=True)
    eroded = ndimage.binary_erosion(padded, structure=np.ones((3, 3)), border_value=1)[1:-1, 1:-1]
    return mask & ~eroded


def ref_distance_to(edges: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of ``edges`` (inf if none)."""
    if not edges.any():
        return np.full(edges.shape, np.inf)
    return ndimage.distance_transform_edt(~edges)


def within(distances: np.ndarray, tolerance: float) -> np.ndarray:
    """The metric's definition of a match: squared distance <= tolerance^2 + 1e-9, the slack that
    keeps a tolerance rounded down by floating point (2 - 1e-15, sqrt(k) a hair short) from dropping
    the pixel offsets it names."""
    return distances**2 <= tolerance**2 + 1e-9


def ref_prf(preds: np.ndarray, target: np.ndarray, classes: int, tolerance: float) -> tuple[np.ndarray, ...]:
    batch = target.shape[0]
    out = [np.full((batch, classes), np.nan) for _ in range(3)]
    for b in range(batch):
        valid = target[b] != IGNORE
        for c in range(classes):
            gt_edges = ref_boundary(target[b] == c)
            pr_edges = ref_boundary((preds[b] == c) & valid)
            n_gt, n_pr = int(gt_edges.sum()), int(pr_edges.sum())
            if n_gt == 0 and n_pr == 0:
                continue
            if n_gt == 0:
                p, r, f = 0.0, math.nan, 0.0
            elif n_pr == 0:
                p, r, f = math.nan, 0.0, 0.0
            else:
                p = float(within(ref_distance_to(gt_edges)[pr_edges], tolerance).mean())
                r = float(within(ref_distance_to(pr_edges)[gt_edges], tolerance).mean())
                f = 0.0 if p + r == 0 else 2 * p * r / (p + r)
            out[0][b, c], out[1][b, c], out[2][b, c] = p, r, f
    return tuple(out)


def ref_band(mask: np.ndarray, dilation: int) -> np.ndarray:
    """Cheng et al.: pad one pixel of zeros, erode d times with a 3x3 square, subtract."""
    padded = np.pad(mask, 1, constant_values=False)
    eroded = padded
    for _ in range(dilation):
        eroded = ndimage.binary_erosion(eroded, structure=np.ones((3, 3)), border_value=1)
    return mask & ~eroded[1:-1, 1:-1]


def ref_biou(preds: np.ndarray, target: np.ndarray, classes: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    height, width = target.shape[1:]
    dilation = max(1, round(ratio * math.sqrt(height**2 + width**2)))
    inter, union = np.zeros(classes, dtype=np.int64), np.zeros(classes, dtype=np.int64)
    for b in range(target.shape[0]):
        valid = target[b] != IGNORE
        for c in range(classes):
            gt, pr = ref_band(target[b] == c, dilation), ref_band((preds[b] == c) & valid, dilation)
            inter[c] += int((gt & pr).sum())
            union[c] += int((gt | pr).sum())
    return inter, union


def ref_trimap(preds: np.ndarray, target: np.ndarray, classes: int, widths: list[float]) -> np.ndarray:
    out = np.zeros((len(widths), classes, classes), dtype=np.int64)
    for b in range(target.shape[0]):
        edges = np.zeros(target.shape[1:], dtype=bool)
        for c in range(classes):
            edges |= ref_boundary(target[b] == c)
        distance = ref_distance_to(edges)
        for k, width in enumerate(widths):
            band = (distance <= width) & (target[b] != IGNORE)
            out[k] += ref_confusion(preds[b][band], target[b][band], classes)
    return out


def ref_context(preds: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    total = present = 0
    for b in range(target.shape[0]):
        classes_here = set(np.unique(target[b])) - {IGNORE}
        for p, t in zip(preds[b].ravel(), target[b].ravel(), strict=True):
            if t != IGNORE and p != t:
                total += 1
                present += int(p in classes_here)
    return total, present, total - present


def ref_context_pairs(preds: np.ndarray, target: np.ndarray, classes: int) -> np.ndarray:
    """[2, C, C]: wrong pixels by (true, predicted), predicted class present in the image ([0]) or not."""
    out = np.zeros((2, classes, classes), dtype=np.int64)
    for b in range(target.shape[0]):
        classes_here = set(np.unique(target[b])) - {IGNORE}
        for p, t in zip(preds[b].ravel(), target[b].ravel(), strict=True):
            if t != IGNORE and p != t:
                out[0 if p in classes_here else 1, t, p] += 1
    return out
