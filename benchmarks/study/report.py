"""The study's report: per-cell scores, paired differences, plots, from the versioned records alone."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from study.cells import (
    CONV1_9,
    COST_REFERENCE,
    DEFAULT,
    EVERY2_REFERENCE,
    HEADLINE,
    HINGE,
    RELEASED,
    RELEASED_ASM,
    Cell,
    U,
)
from study.runs import run_scores


def _mean_std(values: list[float | None]) -> dict[str, float | int | None]:
    finite = [v for v in values if v is not None and v == v]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return {"mean": statistics.fmean(finite), "std": std, "n": len(finite)}


def _find(cells: list[Cell], base: str, name: str) -> Cell | None:
    return next((c for c in cells if c.base == base and c.name == name), None)


def comparisons(cell: Cell, cells: list[Cell]) -> dict[str, Cell]:
    """The cells of the same base that ``cell`` is compared with in pairs: CE for every other cell,
    the released ASM+CE for every other ASM cell, the default ASM+CE (conv1-9) for the ASM cells
    that are neither (where the base has these cells). The cost cells are compared with the default's
    re-run (and the levers on top of the every-2 default with its run on the same machine too), and
    the re-run with the default's records."""
    if cell.group == "cost":  # paired on one machine: with the default's re-run (which with the record)
        reference = DEFAULT if cell.name == COST_REFERENCE else COST_REFERENCE
        found = {"default": _find(cells, cell.base, reference)}
        every2 = EVERY2_REFERENCE.get(cell.base)
        if cell.asm.get("analyzer_every") == 2 and every2 is not None and cell.name != every2:
            found["every2"] = _find(cells, cell.base, every2)  # levers on top of the every-2 default
        return {label: other for label, other in found.items() if other is not None}
    names = {"ce": "ce"}
    if cell.loss.startswith("asm") and cell.name != RELEASED:
        names["asm+ce"] = RELEASED
        if cell.name != DEFAULT:
            names["default"] = DEFAULT
    found = {label: _find(cells, cell.base, name) for label, name in names.items() if name != cell.name}
    return {label: other for label, other in found.items() if other is not None}


def collect(docs: Path, cells: list[Cell], steps: int | None = None) -> dict[str, Any]:
    """Per cell: seeds done, mean/std of the headline scores, hinge logs and s/step, and the paired
    differences against the cells of the same base it is compared with (``comparisons``)."""
    table: dict[str, Any] = {}
    scores_of = {cell.key(): {seed: run_scores(docs, cell, seed, steps) for seed in cell.seeds} for cell in cells}
    for cell in cells:
        done = {seed: scores for seed, scores in scores_of[cell.key()].items() if scores is not None}
        if not done:
            continue
        entry: dict[str, Any] = {
            "group": cell.group,
            "base": cell.base,
            "cell": cell.name,
            "loss": cell.loss,
            "asm": cell.asm,
            "seeds": sorted(done),
            "missing_seeds": sorted(set(cell.seeds) - set(done)),
            "runs": done,
        }
        for key in (*HEADLINE, *HINGE, "seconds_per_step"):
            entry[key] = _mean_std([scores[key] for scores in done.values()])
        entry["training_minutes"] = sum(scores["training_minutes"] for scores in done.values())
        entry["paired"] = {}
        for label, other in comparisons(cell, cells).items():
            other_runs = scores_of[other.key()]
            seeds = [seed for seed in sorted(done) if other_runs.get(seed) is not None]
            if not seeds:
                continue
            differences: dict[str, Any] = {"seeds": seeds}
            for key in (*HEADLINE, "seconds_per_step"):
                pairs = [(done[s][key], other_runs[s][key]) for s in seeds]  # type: ignore[index]
                diffs = [a - b for a, b in pairs if a is not None and b is not None and a == a and b == b]
                if key == "seconds_per_step":
                    diffs = [a / b for a, b in pairs if a and b]
                differences[key] = {**_mean_std(diffs), "values": diffs, "wins": sum(d > 0 for d in diffs)}
            entry["paired"][label] = differences
        table[cell.key()] = entry
    return table


def _fmt(stat: dict[str, Any], digits: int = 1, signed: bool = False) -> str:
    if stat.get("mean") is None:
        return "-"
    sign = "+" if signed else ""
    spread = f" ± {stat['std']:.{digits}f}" if stat.get("std") is not None else ""
    return f"{stat['mean']:{sign}.{digits}f}{spread}"


def markdown(table: dict[str, Any], not_run: list[str] | None = None) -> str:
    """Four tables: scores per cell; paired differences to CE, to the released ASM+CE and to the
    default ASM+CE."""
    lines = [
        "# ASM ablation: results",
        "",
        "Generated by `.venv/bin/python benchmarks/ablation.py` (tables and plots: `--report-only`).",
        "Built-in data at 64 px, batch 8, SGD lr 0.01 poly; scores on the 128 validation images, in %,",
        "mean ± std over seeds; paired differences use the same seeds (same initialisation and data order).",
        "`trimap 1px` is mIoU within 1 px of the true boundaries; `context` is the share of errors that",
        "confuse two classes both present in the image. Hinges are sums over matched layers, averaged over",
        "the second half of training; `errors` is the share of valid pixels where the argmax is wrong.",
        "s/step: two runs shared the two cores, one thread each, so the s/step columns are indicative only",
        "(which runs shared the machine moves them by up to 30%); `benchmarks/step_time.py` measures cost.",
        "`train min`: the cell's training time summed over its seeds (what the cell cost to run).",
        "",
        "## Scores",
        "",
        "| base | cell | seeds | mIoU | BF | Boundary IoU | trimap 1px | context | hinge all | hinge errors"
        " | errors | s/step | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in table.values():
        lines.append(
            f"| {entry['base']} | {entry['cell']} | {len(entry['seeds'])} | {_fmt(entry['mIoU'])} | {_fmt(entry['BF'])}"
            f" | {_fmt(entry['mean_boundary_IoU'])} | {_fmt(entry['trimap_1px'])} | {_fmt(entry['context_share'])}"
            f" | {_fmt(entry['hinge_all'], 2)} | {_fmt(entry['hinge_errors'], 2)}"
            f" | {_fmt({k: (v * 100 if isinstance(v, float) else v) for k, v in entry['error_share'].items()}, 1)}"
            f" | {_fmt(entry['seconds_per_step'], 3)} | {entry['training_minutes']:.0f} |"
        )
    incomplete = [
        f"{e['base']}: {e['cell']} (seeds {e['missing_seeds']})" for e in table.values() if e["missing_seeds"]
    ]
    if incomplete:
        lines += ["", "Not finished (or failed), left out of the means: " + "; ".join(incomplete) + "."]
    if not_run:
        lines += ["", "Defined in the script but not run yet: " + "; ".join(not_run) + "."]
    for label, title in [
        ("ce", "CE of the same base"),
        ("asm+ce", "the released ASM+CE of the same base"),
        ("default", f"the default ASM+CE ({DEFAULT}) of the same base (cost cells: its re-run, {COST_REFERENCE!r})"),
        ("every2", "the every-2 default trained on the same machine (cost levers on top of it)"),
    ]:
        lines += [
            "",
            f"## Paired differences to {title}",
            "",
            "Mean ± std of the per-seed difference (points); `wins` = seeds where the cell is higher.",
            "",
            "| base | cell | seeds | ΔmIoU | wins | ΔBF | wins | ΔBoundary IoU | wins | Δtrimap 1px | Δcontext"
            " | s/step ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for entry in table.values():
            paired = entry["paired"].get(label)
            if paired is None:
                continue
            n = len(paired["seeds"])
            lines.append(
                f"| {entry['base']} | {entry['cell']} | {n} | {_fmt(paired['mIoU'], signed=True)}"
                f" | {paired['mIoU']['wins']}/{n} | {_fmt(paired['BF'], signed=True)} | {paired['BF']['wins']}/{n}"
                f" | {_fmt(paired['mean_boundary_IoU'], signed=True)} | {paired['mean_boundary_IoU']['wins']}/{n}"
                f" | {_fmt(paired['trimap_1px'], signed=True)} | {_fmt(paired['context_share'], signed=True)}"
                f" | {_fmt(paired['seconds_per_step'], 2)} |"
            )
    return "\n".join(lines) + "\n"


def plots(table: dict[str, Any], docs: Path) -> list[Path]:
    """``paired_differences.png`` (per-seed differences to CE, one dot per seed) and
    ``hinge_curves.png`` (hinge over all pixels and over error pixels during training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    entries = [e for e in table.values() if "ce" in e["paired"]]
    if entries:
        metrics = [("mIoU", "ΔmIoU"), ("BF", "ΔBF"), ("mean_boundary_IoU", "ΔBoundary IoU")]
        figure, axes = plt.subplots(1, 3, figsize=(16, 0.42 * len(entries) + 1.5), sharey=True)
        labels = [f"{e['base']}: {e['cell']}" for e in entries]
        for axis, (key, title) in zip(axes, metrics, strict=True):
            for row, entry in enumerate(entries):
                values = entry["paired"]["ce"][key]["values"]
                axis.scatter(values, [row] * len(values), s=14, color="tab:blue", alpha=0.7)
                if values:
                    axis.scatter([statistics.fmean(values)], [row], marker="|", s=200, color="black")
            axis.axvline(0, color="grey", linewidth=0.8)
            axis.set_title(f"{title} vs CE (points; dot = seed, bar = mean)")
            axis.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(range(len(entries)), labels, fontsize=8)
        axes[0].invert_yaxis()
        figure.tight_layout()
        path = docs / "paired_differences.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)

    # One row per matched-layer set (sums over different layer counts do not share a scale).
    layer_sets = [("conv1-2", RELEASED_ASM["matched_layers"]), ("conv1-9", CONV1_9)]
    groups = [
        (label, curves)
        for label, layers in layer_sets
        if (
            curves := [
                e
                for e in table.values()
                if e["loss"].startswith("asm") and e["base"] == U and e["asm"].get("matched_layers") == layers
            ]
        )
    ]
    if groups:
        figure, grid = plt.subplots(len(groups), 2, figsize=(13, 4.5 * len(groups)), sharey="row", squeeze=False)
        for axes, (label, curves) in zip(grid, groups, strict=True):
            for axis, key in zip(axes, ("hinge_all", "hinge_errors"), strict=True):
                for entry in curves:
                    rows = entry["runs"][entry["seeds"][0]]["curve"]
                    steps = [r["step"] for r in rows if key in r]
                    axis.plot(steps, [r[key] for r in rows if key in r], label=entry["cell"])
                axis.set_title(f"{key}: hinge summed over {label} (seed {curves[0]['seeds'][0]})")
                axis.set_xlabel("step")
                axis.grid(alpha=0.3)
            axes[1].legend(fontsize=7)
        figure.tight_layout()
        path = docs / "hinge_curves.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def report(docs: Path, cells: list[Cell], steps: int | None = None) -> None:
    table = collect(docs, cells, steps)
    docs.mkdir(parents=True, exist_ok=True)
    slim = {
        key: {**entry, "runs": {s: {k: v for k, v in r.items() if k != "curve"} for s, r in entry["runs"].items()}}
        for key, entry in table.items()
    }
    (docs / "results.json").write_text(json.dumps(slim, indent=1, allow_nan=False))
    not_run = [cell.key() for cell in cells if cell.key() not in table]
    (docs / "results.md").write_text(markdown(table, not_run))
    written = plots(table, docs)
    print(markdown(table, not_run))
    print(f"[ablation] wrote {docs / 'results.md'}, {docs / 'results.json'}, {', '.join(map(str, written))}")
