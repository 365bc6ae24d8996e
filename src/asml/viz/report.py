"""The comparison report: figures, picture grids and one self-contained ``report.html``."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from asml.viz.preview import label_colormap

__all__ = ["write_report"]

Results = dict[str, Any]


def _save(figure: Figure, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return path.name


def _mean(stats: dict[str, float | None]) -> float:
    return float("nan") if stats["mean"] is None else float(stats["mean"])


def boundary_gain_chart(results: Results, out: Path) -> str:
    """Per class, each loss's BF minus the reference loss's (CE if present), in points."""
    losses = results["losses"]
    reference = "ce" if "ce" in losses else losses[0]
    others = [loss for loss in losses if loss != reference] or [reference]
    names = results["class_names"]
    figure = Figure(figsize=(max(6, 0.6 * len(names) * len(others)), 4))
    axes = figure.subplots()
    width = 0.8 / len(others)
    for index, loss in enumerate(others):
        gains = [
            100
            * (
                _mean(results["summary"][loss]["BF_per_class"][n])
                - _mean(results["summary"][reference]["BF_per_class"][n])
            )
            for n in names
        ]
        axes.bar(np.arange(len(names)) + index * width, gains, width, label=loss)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(np.arange(len(names)) + width * (len(others) - 1) / 2, names, rotation=30, ha="right")
    axes.set_ylabel(f"boundary F gain over {reference} (points)")
    axes.legend()
    return _save(figure, out / "bf_gain_per_class.png")


def trimap_chart(results: Results, out: Path) -> str:
    """mIoU inside bands of growing width around target boundaries, one curve per loss."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for loss, entry in results["summary"].items():
        widths = [float(w) for w in entry["trimap_mIoU"]]
        means = [100 * _mean(s) for s in entry["trimap_mIoU"].values()]
        errors = [100 * (s["std"] or 0.0) for s in entry["trimap_mIoU"].values()]
        axes.errorbar(widths, means, yerr=errors, marker="o", capsize=3, label=loss)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("band width around target boundaries (px)")
    axes.set_ylabel("trimap mIoU (%)")
    axes.legend()
    return _save(figure, out / "trimap_curves.png")


def _number(record: dict[str, Any], key: str) -> float:
    """A logged value; undefined ones are logged as null."""
    value = record.get(key)
    return float("nan") if value is None else float(value)


def training_curves(run_logs: dict[str, Path], out: Path) -> str:
    """Training loss and validation mIoU / BF against steps, one line per run."""
    figure = Figure(figsize=(12, 3.6))
    loss_axes, miou_axes, bf_axes = figure.subplots(1, 3)
    for label, log in run_logs.items():
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        train = [r for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] == "eval"]
        loss_axes.plot([r["step"] for r in train], [_number(r, "loss") for r in train], label=label)
        miou_axes.plot([r["step"] for r in evals], [100 * _number(r, "mIoU") for r in evals], marker="o", label=label)
        bf_axes.plot([r["step"] for r in evals], [100 * _number(r, "BF") for r in evals], marker="o", label=label)
    for axes, title in (
        (loss_axes, "training loss"),
        (miou_axes, "validation mIoU (%)"),
        (bf_axes, "validation BF (%)"),
    ):
        axes.set_title(title)
        axes.set_xlabel("step")
    loss_axes.legend(fontsize=7)
    return _save(figure, out / "training_curves.png")


def _rgb(image: torch.Tensor) -> np.ndarray:
    array = image.float().div(255) if image.dtype == torch.uint8 else image.float()
    return array.permute(1, 2, 0).clamp(0, 1).numpy()


def prediction_grid(
    images: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    predictions: dict[str, list[torch.Tensor]],
    out: Path,
) -> str:
    """Rows of image | target | each loss's prediction, wrong pixels washed towards white."""
    colours = label_colormap().astype(np.float64) / 255
    columns = 2 + len(predictions)
    figure = Figure(figsize=(2.2 * columns, 2.2 * len(images)))
    axes = figure.subplots(len(images), columns, squeeze=False)
    for row, (image, target) in enumerate(zip(images, targets, strict=True)):
        target_np = target.numpy()
        panels = [("image", _rgb(image)), ("target", colours[target_np])]
        for loss, maps in predictions.items():
            predicted = maps[row].numpy()
            picture = colours[predicted].copy()
            wrong = (predicted != target_np) & (target_np != 255)
            picture[wrong] = 0.3 * picture[wrong] + 0.7  # towards white: distinct from every class colour
            panels.append((f"{loss} ({100 * wrong.mean():.1f}% wrong)", picture))
        for column, (title, picture) in enumerate(panels):
            axes[row, column].imshow(picture, interpolation="nearest")
            axes[row, column].set_title(title, fontsize=8)
            axes[row, column].axis("off")
    return _save(figure, out / "predictions.png")


def analyzer_view(
    image: torch.Tensor,
    prediction: torch.Tensor,
    completion: torch.Tensor,
    loss_maps: dict[str, torch.Tensor],
    out: Path,
) -> str:
    """The analyzer's view of one image: S(x), R(A(S(x))) and each matched layer's loss map."""
    colours = label_colormap().astype(np.float64) / 255
    panels = [
        ("image", _rgb(image)),
        ("S(x)", colours[prediction.numpy()]),
        ("R(A(S(x)))", colours[completion.numpy()]),
    ]
    figure = Figure(figsize=(2.6 * (len(panels) + len(loss_maps)), 2.8))
    axes = figure.subplots(1, len(panels) + len(loss_maps))
    for index, (title, picture) in enumerate(panels):
        axes[index].imshow(picture, interpolation="nearest")
        axes[index].set_title(title, fontsize=9)
        axes[index].axis("off")
    for index, (layer, loss_map) in enumerate(loss_maps.items(), start=len(panels)):
        shown = axes[index].imshow(loss_map.numpy(), cmap="magma", vmin=0)
        axes[index].set_title(f"loss map {layer}", fontsize=9)
        axes[index].axis("off")
        figure.colorbar(shown, ax=axes[index], fraction=0.046)
    return _save(figure, out / "analyzer_view.png")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(stats: dict[str, float | None], scale: float = 100.0) -> str:
    return "-" if stats["mean"] is None else f"{scale * stats['mean']:.2f} ± {scale * (stats['std'] or 0):.2f}"


def summary_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-loss summary: mean ± std over seeds (scores in %, s/step in s)."""
    summary = results["summary"]
    widths = list(next(iter(summary.values()))["trimap_mIoU"])
    header = ["loss", "mIoU", "BF", "Boundary IoU", *[f"trimap {w}px" for w in widths], "context share", "s/step"]
    rows = [
        [loss, _cell(e["mIoU"]), _cell(e["BF"]), _cell(e["mean_boundary_IoU"]),
         *[_cell(e["trimap_mIoU"][w]) for w in widths], _cell(e["context_share"]), _cell(e["seconds_per_step"], 1.0)]
        for loss, e in summary.items()
    ]  # fmt: skip
    return header, rows


def write_report(results: Results, figures: dict[str, str], out: Path, title: str) -> Path:
    """``report.html``: the summary and per-class tables and every figure, opened without a server."""
    summary = results["summary"]
    note = "Mean ± std over seeds {}; scores in %. Same seed = same initialisation and data order."
    sections = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(note.format(results['seeds']))}</p>",
                _html_table(*summary_table(results))]  # fmt: skip
    for key, label in (("IoU", "IoU"), ("BF_per_class", "boundary F"), ("boundary_IoU", "Boundary IoU")):
        class_rows = [[name, *[_cell(summary[loss][key][name]) for loss in summary]] for name in results["class_names"]]
        sections.append(f"<h2>Per class: {label}</h2>" + _html_table(["class", *summary], class_rows))
    captions = {
        "bf_gain": "Per-class boundary F gain over the reference loss",
        "trimap": "Trimap mIoU against band width",
        "curves": "Training curves",
        "predictions": "Validation images: image | target | each loss (wrong pixels whitened)",
        "analyzer": "The analyzer's view: S(x), its shape completion R(A(S(x))) and per-layer loss maps",
    }
    for key, caption in captions.items():
        if key in figures:
            sections.append(f'<h2>{html.escape(caption)}</h2><img src="{html.escape(figures[key])}" alt="{key}">')
    style = (
        "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} "
        "td,th{border:1px solid #ccc;padding:3px 8px} img{max-width:100%}"
    )
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style>'
    page = f"<!doctype html><html><head>{head}</head><body>{''.join(sections)}</body></html>"
    path = out / "report.html"
    path.write_text(page)
    return path
