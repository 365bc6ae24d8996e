"""The comparison report of depth and surface-normal runs: tables, threshold chart, curves, error maps.

``results`` is what ``asml.engine.dense_compare.aggregate`` returns: per loss, mean and std over seeds
of each score (``summary``), the task and the seeds.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from asml.viz.dense import depth_to_rgb, error_to_rgb, normals_to_rgb
from asml.viz.report import _html_table, _number, _rgb, _save

__all__ = [
    "NORMAL_THRESHOLDS",
    "error_grid",
    "regression_curves",
    "regression_summary_table",
    "threshold_chart",
    "write_regression_report",
]

NORMAL_THRESHOLDS = ("2.8125", "5.625", "11.25", "22.5", "30")
# (key, column title, scale, digits) per task: angles in degrees, shares in %.
COLUMNS = {
    "normals": [("mean_angle", "mean (deg)", 1.0, 2), ("median_angle", "median (deg)", 1.0, 2)]
    + [(f"within_{t}", f"<= {t} deg (%)", 100.0, 1) for t in NORMAL_THRESHOLDS],
    "depth": [("abs_rel", "abs rel", 1.0, 3), ("sq_rel", "sq rel", 1.0, 3), ("rmse", "RMSE (m)", 1.0, 3),
              ("rmse_log", "RMSE log", 1.0, 3), ("delta1", "d < 1.25 (%)", 100.0, 1),
              ("delta2", "d < 1.25^2 (%)", 100.0, 1), ("delta3", "d < 1.25^3 (%)", 100.0, 1)],
}  # fmt: skip
HEADLINE = {"normals": ("within_11.25", "validation within 11.25 deg (%)", 100.0),
            "depth": ("delta1", "validation delta < 1.25 (%)", 100.0)}  # fmt: skip

Results = dict[str, Any]


def _cell(stats: dict[str, float | None], scale: float, digits: int) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{scale * stats['mean']:.{digits}f} ± {scale * (stats['std'] or 0):.{digits}f}"


def regression_summary_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per loss, mean ± std over seeds of every score, and s/step."""
    columns = COLUMNS[results["task"]]
    header = ["loss", *[title for _, title, _, _ in columns], "s/step"]
    rows = [
        [loss, *[_cell(entry[key], scale, digits) for key, _, scale, digits in columns],
         _cell(entry["seconds_per_step"], 1.0, 3)]
        for loss, entry in results["summary"].items()
    ]  # fmt: skip
    return header, rows


def threshold_chart(results: Results, out: Path) -> str:
    """Normals: share of valid pixels within each threshold per loss (the release's table as bars);
    depth: the three delta shares."""
    keys = (
        [(f"within_{t}", f"<= {t} deg") for t in NORMAL_THRESHOLDS]
        if results["task"] == "normals"
        else [("delta1", "< 1.25"), ("delta2", "< 1.25^2"), ("delta3", "< 1.25^3")]
    )
    figure = Figure(figsize=(7, 3.6))
    axes = figure.subplots()
    losses = list(results["summary"])
    width = 0.8 / max(1, len(losses))
    for index, loss in enumerate(losses):
        entry = results["summary"][loss]
        means = [100 * (entry[k]["mean"] or 0.0) for k, _ in keys]
        errors = [100 * (entry[k]["std"] or 0.0) for k, _ in keys]
        axes.bar([i + index * width for i in range(len(keys))], means, width, yerr=errors, label=loss)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], [label for _, label in keys])
    axes.set_ylabel("valid pixels (%)")
    axes.legend(fontsize=7)
    return _save(figure, out / "thresholds.png")


def regression_curves(run_logs: dict[str, Path], task: str, out: Path) -> str:
    """Training loss and the headline validation score against steps, one line per run."""
    key, title, scale = HEADLINE[task]
    figure = Figure(figsize=(9, 3.6))
    loss_axes, score_axes = figure.subplots(1, 2)
    for label, log in run_logs.items():
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        train = [r for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] == "eval"]
        loss_axes.plot([r["step"] for r in train], [_number(r, "loss") for r in train], label=label)
        score_axes.plot([r["step"] for r in evals], [scale * _number(r, key) for r in evals], marker="o", label=label)
    for axes, name in ((loss_axes, "training loss"), (score_axes, title)):
        axes.set_title(name)
        axes.set_xlabel("step")
    loss_axes.legend(fontsize=7)
    return _save(figure, out / "training_curves.png")


def _error(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, task: str) -> torch.Tensor:
    """Per-pixel error ``[H, W]``: degrees for normals, absolute relative error for depth."""
    if task == "normals":
        return torch.rad2deg(torch.acos((prediction * target).sum(0).clamp(-1, 1))).masked_fill(~valid, 0.0)
    return ((prediction[0] - target[0]).abs() / target[0].clamp_min(1e-6)).masked_fill(~valid, 0.0)


def _map(values: torch.Tensor, shown: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, task: str) -> np.ndarray:
    """Normals as RGB, or depth coloured over the target's valid range; black outside ``shown``."""
    if task == "normals":
        return normals_to_rgb(values * shown)
    known = target[0][valid]
    low, high = (float(known.min()), float(known.max())) if known.numel() else (None, None)
    return depth_to_rgb(values, shown, low, high)


def error_grid(
    images: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    predictions: dict[str, list[torch.Tensor]],
    task: str,
    out: Path,
) -> str:
    """Rows of image | target | per loss: prediction and its error map (angle up to 45 degrees, or
    abs rel up to 0.5), with the image's mean error in the title."""
    high = 45.0 if task == "normals" else 0.5
    columns = 2 + 2 * len(predictions)
    figure = Figure(figsize=(2.0 * columns, 2.1 * len(images)))
    axes = figure.subplots(len(images), columns, squeeze=False)
    for row, (image, target) in enumerate(zip(images, targets, strict=True)):
        valid = (target != 0).any(0) if task == "normals" else target[0] > 0
        panels = [("image", _rgb(image)), ("target", _map(target, valid, target, valid, task))]
        for loss, maps in predictions.items():
            error = _error(maps[row], target, valid, task)
            mean = float(error[valid].mean()) if valid.any() else float("nan")
            unit = "deg" if task == "normals" else "abs rel"
            panels.append((loss, _map(maps[row], torch.ones_like(valid), target, valid, task)))
            panels.append((f"error, mean {mean:.2f} {unit}", error_to_rgb(error, valid, high)))
        for column, (title, shown) in enumerate(panels):
            axes[row, column].imshow(shown, interpolation="nearest")
            axes[row, column].set_title(title, fontsize=7)
            axes[row, column].axis("off")
    return _save(figure, out / "predictions.png")


def write_regression_report(results: Results, figures: dict[str, str], out: Path, title: str) -> Path:
    """``report.html``: the summary table and every figure, opened without a server."""
    units = "angles in degrees, shares in %" if results["task"] == "normals" else "errors as defined, shares in %"
    note = f"Mean ± std over seeds {results['seeds']}; {units}. Same seed = same initialisation and data order."
    sections = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(note)}</p>",
                _html_table(*regression_summary_table(results))]  # fmt: skip
    captions = {
        "thresholds": "Valid pixels within each threshold",
        "curves": "Training curves",
        "predictions": "Validation images: image | target | each loss's prediction and error map",
    }
    for key, caption in captions.items():
        if key in figures:
            sections.append(f'<h2>{html.escape(caption)}</h2><img src="{html.escape(figures[key])}" alt="{key}">')
    style = (
        "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} "
        "td,th{border:1px solid #ccc;padding:3px 8px} img{max-width:100%}"
    )
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style>'
    path = out / "report.html"
    path.write_text(f"<!doctype html><html><head>{head}</head><body>{''.join(sections)}</body></html>")
    return path
