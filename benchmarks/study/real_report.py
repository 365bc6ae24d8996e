"""The real-data study's report (``docs/real``): a summary against the best CE per base, per-base
score tables, per-class and context tables, and plots, from the versioned records alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from study.cells import Cell
from study.real import LABELS, SCORES, collect
from study.report import _fmt

__all__ = ["plots", "report"]

HEADER = """# Real data: ASM+CE against cross-entropy at its best learning rate

Regenerate: `.venv/bin/python benchmarks/real_study.py` (trains what is missing, resumable;
`--report-only` rebuilds this page and its plots from `runs/`). The sets: `benchmarks/real_data.py`.

**nuclei**: figure-ground (nucleus or background) on 128 px tiles of a real fluorescence microscopy
image with hand-drawn masks (2018 Data Science Bowl, via stardist); the top half's 8 tiles train, the
bottom half's 8 validate, nuclei cut by the line between them are void.

**brain**: 10 classes (outside brain, white matter and other, and 8 lobes of the AAL atlas) on 128 px
sagittal slices of the Colin 27 T1 MRI; trained on the left hemisphere's 63 slices, validated on the
right hemisphere's 62 (the midline in neither). Lobes co-occur by anatomy and their grey matter looks
alike, so which lobe a pixel is in is a matter of context. `brain/unet-r18/256px` is the same set built
at 256 px (`real_data.py brain --size 256`), about the scan's native 1 mm (a slice is 217 x 181 voxels).

**knights** (generated, `asml.data.builtin`, 64 px): background, horse, rider, lance; the rider is cut
from another patch of the horse's own picture (rider and horse look alike), the lance is thin, and the
images hold different subsets of the classes (30 % of the horses riderless, 20 % of the images without
a horse), so that predicting a class absent from the image can happen and is counted apart. Trained
1350 steps (the long demo's length): at 450, CE predicts no rider or lance pixel. Trained with U-Net
(full-size output) and with PSPNet (its 8x8 map at 64 px upsampled 8x), to see whether the analyzer's
coarser input (`analyzer_stride`) costs thin parts when the segmenter's own output is coarse.

Real sets: 450 steps; all: batch 8, SGD with poly decay, random scale 0.75-1.5 and crops at the set's
size, flips except for brain (a flipped slice would put the frontal lobe behind); paired seeds (a seed
is the same initialisation and data order in every cell).

Names: "released" is conv1-2 matched with the analyzer updated on every step (the authors' setting);
"released every2" updates it on every second step, **the library's default since this study**
(for PSPNet with "stride2" as well: the analyzer reads 2x2 cell means, `asml.losses.asm_defaults`);
"default" is conv1-9 every 2, the library's default when the study began (the 64 px ablation's
choice), kept as the cells' name so that their records stay theirs.
"""


def _asm_entries(table: dict[str, Any], base: str) -> list[dict[str, Any]]:
    return [e for k, e in table.items() if not k.startswith("_") and e["base"] == base and e["loss"] != "ce"]


def _summary_table(table: dict[str, Any], bases: list[str]) -> list[str]:
    """One row per ASM cell: its paired difference to its base's best CE (the headline)."""
    lines = ["## Summary: each ASM cell against the best CE of its base (paired seeds)", "",
             "| base | best CE: lr, mIoU, BF | ASM cell | ΔmIoU | ΔBF | Δ errors, co-occurring class |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for base in bases:
        best = table["_best_ce"].get(base)
        if best is None:
            continue
        reference = table[best]
        lr = (reference.get("optim") or {}).get("lr", 0.01)
        described = f"{lr}, {_fmt(reference['mIoU'])}, {_fmt(reference['BF'])}"
        for entry in _asm_entries(table, base):
            pair = entry.get("paired", {}).get("best ce")
            if pair is None:
                continue
            cells = [f"{_fmt(pair[k], signed=True)} ({pair[k]['better']}/{len(pair['seeds'])})"
                     for k in ("mIoU", "BF", "co_occurring_errors")]  # fmt: skip
            lines.append(f"| {base} | {described} | {entry['cell']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _score_table(table: dict[str, Any], base: str, best: str | None) -> list[str]:
    best_name = table[best]["cell"] if best else "-"
    lines = [f"## {base}", "", f"Mean ± std over seeds; best CE (by mean mIoU): `{best_name}`.", "",
             "| cell | seeds | " + " | ".join(LABELS[k] for k in SCORES) + " | s/step | min/run |",
             "|---" * (len(SCORES) + 4) + "|"]  # fmt: skip
    for key, entry in table.items():
        if key.startswith("_") or entry["base"] != base:
            continue
        row = [entry["cell"], str(len(entry["seeds"])), *(_fmt(entry[k]) for k in SCORES),
               _fmt(entry["seconds_per_step"], 2), _fmt(entry["training_minutes"])]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Paired differences (same seed), cell minus reference; `k/n` = seeds on which the cell is better "
              "(for errors: lower). Errors are wrong pixels in % of the valid ones, split by whether the "
              "predicted class occurs elsewhere in the image (co-occurring: the context confusion the "
              "paper claims ASM reduces) or not (absent).", "",
              "| cell | vs | " + " | ".join(LABELS[k] for k in SCORES) + " |",
              "|---" * (len(SCORES) + 2) + "|"]  # fmt: skip
    for key, entry in table.items():
        if key.startswith("_") or entry["base"] != base:
            continue
        for label, pair in entry.get("paired", {}).items():
            cells = [f"{_fmt(pair[k], signed=True)} ({pair[k]['better']}/{len(pair['seeds'])})" for k in SCORES]
            lines.append(f"| {entry['cell']} | {label} (`{pair['cell']}`) | " + " | ".join(cells) + " |")
    return lines


def _class_table(table: dict[str, Any], base: str, best: str | None) -> list[str]:
    """Per-class pixel share, IoU and BF of the best CE, and each ASM cell's paired gain on them."""
    if best is None:
        return []
    names = table[best]["class_names"]
    asm = _asm_entries(table, base)
    header = "| class | val pixels % | best CE IoU | best CE BF | "
    header += " | ".join(f"{e['cell']}: ΔIoU / ΔBF" for e in asm) + " |"
    lines = ["", "### Per class (thin parts: BF per class)", "", header, "|---" * (4 + len(asm)) + "|"]
    for c, name in enumerate(names):
        row = [name, f"{table[best]['pixel_share'][c]:.1f}", _num(table[best]["IoU"][c]),
               _num(table[best]["BF_per_class"][c])]  # fmt: skip
        for entry in asm:
            pair = entry.get("paired", {}).get("best ce")
            if pair is None:
                row.append("-")
                continue
            row.append(f"{_fmt(pair['IoU'][c], signed=True)} / {_fmt(pair['BF_per_class'][c], signed=True)}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _context_table(table: dict[str, Any], base: str, best: str | None, top: int = 10) -> list[str]:
    """The class pairs CE confuses most, split into confusion with a class present in the image
    (context) and with an absent one; pixels summed over seeds."""
    if best is None or table[best]["co_occurring"] is None:
        return []
    names = table[best]["class_names"]
    cells = [e for k, e in table.items() if not k.startswith("_") and e["base"] == base and e["co_occurring"]]
    reference = table[best]
    pairs = sorted(((reference["co_occurring"][t][p] + reference["absent"][t][p], t, p)
                    for t in range(len(names)) for p in range(len(names)) if t != p), reverse=True)[:top]  # fmt: skip
    lines = ["", "### Context: wrong pixels per (true → predicted) pair, summed over seeds",
             "", "co-occurring: the predicted class is elsewhere in the image; absent: it is not. "
             f"Pairs: the {top} that the best CE confuses most.", "",
             "| true → predicted | " + " | ".join(f"{e['cell']} co-occ. / absent" for e in cells) + " |",
             "|---" * (1 + len(cells)) + "|"]  # fmt: skip
    for _, t, p in pairs:
        row = [f"{names[t]} → {names[p]}"] + [f"{e['co_occurring'][t][p]} / {e['absent'][t][p]}" for e in cells]
        lines.append("| " + " | ".join(row) + " |")
    totals = [f"{sum(map(sum, e['co_occurring']))} / {sum(map(sum, e['absent']))}" for e in cells]
    lines.append("| all pairs | " + " | ".join(totals) + " |")
    return lines


def plots(table: dict[str, Any], docs: Path) -> list[Path]:
    """``paired_vs_best_ce.png`` (per-seed ΔmIoU and ΔBF of every ASM cell against its base's best
    CE) and ``training_curves.png`` (training loss and the hinge over error positions, first seed,
    for CE and both ASM settings at one lr per base)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    entries = [e for k, e in table.items() if not k.startswith("_") and "best ce" in e.get("paired", {})]
    entries = [e for e in entries if e["loss"] != "ce"]
    if entries:
        figure, axes = plt.subplots(1, 2, figsize=(14, 0.4 * len(entries) + 1.6), sharey=True)
        for axis, (key, title) in zip(axes, (("mIoU", "ΔmIoU"), ("BF", "ΔBF")), strict=True):
            for row, entry in enumerate(entries):
                values = [v for v in entry["paired"]["best ce"][key]["values"] if v is not None]
                axis.scatter(values, [row] * len(values), s=14, color="tab:blue", alpha=0.7)
                if values:
                    axis.scatter([sum(values) / len(values)], [row], marker="|", s=200, color="black")
            axis.axvline(0, color="grey", linewidth=0.8)
            axis.set_title(f"{title} vs the best CE of the base (dot = seed, bar = mean)")
            axis.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(range(len(entries)), [f"{e['base']}: {e['cell']}" for e in entries], fontsize=8)
        axes[0].invert_yaxis()
        figure.tight_layout()
        written.append(_save(figure, plt, docs / "paired_vs_best_ce.png"))
    bases = sorted({e["base"] for e in entries})
    if bases:
        figure, grid = plt.subplots(len(bases), 2, figsize=(13, 3.2 * len(bases)), squeeze=False)
        for axes, base in zip(grid, bases, strict=True):
            shown = _curve_cells(table, base)
            for axis, key in zip(axes, ("loss", "hinge_errors"), strict=True):
                for entry in shown:
                    seed = entry["seeds"][0]
                    layers = len((entry.get("asm") or {}).get("matched_layers") or ["conv1", "conv2"])
                    scale = 1.0 if key == "loss" else 1.0 / layers  # the hinge per matched layer
                    rows = [r for r in entry["curves"][seed] if key in r]
                    if rows:
                        steps, values = [r["step"] for r in rows], [scale * r[key] for r in rows]
                        axis.plot(steps, values, color=_colour(entry), label=entry["cell"])
                title = "training loss" if key == "loss" else "hinge on error positions, per matched layer"
                axis.set_title(f"{base}: {title} (seed {shown[0]['seeds'][0]})", fontsize=9)
                axis.grid(alpha=0.3)
            axes[0].legend(fontsize=7)
        grid[-1][0].set_xlabel("step")
        grid[-1][1].set_xlabel("step")
        figure.tight_layout()
        written.append(_save(figure, plt, docs / "training_curves.png"))
    return written


def _colour(entry: dict[str, Any]) -> str:
    """The same colour for a setting on every base: CE blue, released orange, released every 2 (the
    library's default) red, the nine layers ("default" in the cells' names) green."""
    setting = entry["cell"].split(" lr=")[0]
    return {"asm+ce released": "C1", "asm+ce released every2": "C3", "asm+ce default": "C2"}.get(setting, "C0")


def _lr(entry: dict[str, Any]) -> float:
    return float((entry.get("optim") or {}).get("lr", 0.01))


def _curve_cells(table: dict[str, Any], base: str) -> list[dict[str, Any]]:
    """CE and the released (every step or every 2) and nine-layer ASM+CE at the lr where most of them
    ran (the largest such lr), in that order; the hinge curves only mean something side by side at one lr."""
    settings = ("asm+ce released", "asm+ce released every2", "asm+ce default")
    asm = [e for e in _asm_entries(table, base) if e["cell"].split(" lr=")[0] in settings]
    lrs = sorted({_lr(e) for e in asm}, key=lambda lr: (sum(_lr(e) == lr for e in asm), lr))
    if not lrs:
        return []
    lr = lrs[-1]
    ce = [e for k, e in table.items() if not k.startswith("_") and e["base"] == base and e["loss"] == "ce"]
    return [e for e in ce if _lr(e) == lr] + [e for e in asm if _lr(e) == lr]


def _save(figure: Any, plt: Any, path: Path) -> Path:
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def report(docs: Path, cells: list[Cell], steps: int | None = None) -> dict[str, Any]:
    """Write ``results.json``, ``README.md`` (tables) and the plots in ``docs`` from the records;
    return the table."""
    table = collect(docs, cells, steps)
    docs.mkdir(parents=True, exist_ok=True)
    slim = {key: {k: v for k, v in entry.items() if k != "curves"} if isinstance(entry, dict) and "curves" in entry
            else entry for key, entry in table.items()}  # fmt: skip
    (docs / "results.json").write_text(json.dumps(slim, indent=1, allow_nan=True) + "\n")
    bases = sorted({cell.base for cell in cells})
    lines = [HEADER, *_summary_table(table, bases), "![paired](paired_vs_best_ce.png)", "",
             "![curves](training_curves.png)", ""]  # fmt: skip
    for base in bases:
        best = table["_best_ce"].get(base)
        if not any(not k.startswith("_") and e["base"] == base for k, e in table.items()):
            continue
        lines += _score_table(table, base, best) + _class_table(table, base, best) + _context_table(table, base, best)
        lines.append("")
    missing = [f"{c.key()} seeds {sorted(set(c.seeds) - set(table.get(c.key(), {}).get('seeds', [])))}"
               for c in cells if set(c.seeds) - set(table.get(c.key(), {}).get("seeds", []))]  # fmt: skip
    if missing:
        lines += ["## Not run yet", "", *(f"- {m}" for m in missing), ""]
    (docs / "README.md").write_text("\n".join(lines))
    plots(table, docs)
    return table
