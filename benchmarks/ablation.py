"""The ASM ablation study: which parts of Adversarial Structure Matching earn their cost, with paired seeds.

Every cell is one setting trained with several seeds; the same seed means the same initialisation and
data order in every cell, so cells are compared in pairs (per-seed differences, then mean and spread).
Runs are ordinary ``asml train`` runs (one subprocess each, ``--jobs`` at a time); a finished run is
kept, an interrupted one resumed, so the study continues where it stopped when started again.

    .venv/bin/python benchmarks/ablation.py                     # run what is missing, then report
    .venv/bin/python benchmarks/ablation.py --report-only       # rebuild docs/ablation from the runs
    .venv/bin/python benchmarks/ablation.py --only length riders  # some groups only

All 127 runs take about four hours on 2 CPU cores (two runs at a time, one thread each: 1.4x the
throughput of one run on two threads for these small models; a 450-step U-Net-ResNet-18 run takes 3-5
minutes, a PSPNet, FCN or Lite0 run 1-2). The cells are listed, and trained, in the order of what they
decide, seed by seed within a base, so a study cut short still holds whole paired comparisons; seeds 3
and 4 (of the cells that have five) come after every cell has its first three. The report lists the
cells left out.

The report (tables, paired differences, plots) goes to ``docs/ablation/``, with one small record per
finished run in ``docs/ablation/runs/`` (versioned: the report is rebuilt from these alone); the run
folders go to ``--out`` (default ``study-ablation/``, not versioned, checkpoints dropped once a run
is done).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from asml.losses import RELEASED_ASM as LIBRARY_RELEASED_ASM

ROOT = Path(__file__).resolve().parents[1]
THREE = (0, 1, 2)
FIVE = (0, 1, 2, 3, 4)  # where the difference that decides a default is small
SHORT, LONG = 450, 1350  # the demo's length, and three times it

BASES: dict[str, dict[str, Any]] = {
    # name -> (dataset, model, steps); everything else is the demo's setting (64 px, batch 8, SGD 0.01).
    "horses/unet-r18": {"dataset": "horses", "model": {"name": "unet", "encoder": "resnet18"}, "steps": SHORT},
    "horses/unet-r18/long": {"dataset": "horses", "model": {"name": "unet", "encoder": "resnet18"}, "steps": LONG},
    "horses/pspnet-r18": {"dataset": "horses", "model": {"name": "pspnet", "encoder": "resnet18"}, "steps": SHORT},
    "horses/fcn-r18": {"dataset": "horses", "model": {"name": "fcn", "encoder": "resnet18"}, "steps": SHORT},
    "horses/unet-lite0": {
        "dataset": "horses",
        "model": {"name": "unet", "encoder": "tu-efficientnet_lite0"},
        "steps": SHORT,
    },
    "horses/unet-lite0-imagenet": {
        "dataset": "horses",
        "model": {"name": "unet", "encoder": "tu-efficientnet_lite0", "weights": "imagenet-offline"},
        "steps": SHORT,
    },
    "riders/unet-r18": {"dataset": "riders", "model": {"name": "unet", "encoder": "resnet18"}, "steps": SHORT},
}


@dataclass(frozen=True)
class Cell:
    """One setting: a base, a loss and ASM keyword arguments, trained with ``seeds``."""

    name: str
    group: str
    base: str
    loss: str
    asm: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = THREE
    optim: dict[str, Any] = field(default_factory=dict)  # changes to the optimiser (a control, not ASM)

    def key(self) -> str:
        return f"{self.base}::{self.name}"


# The released settings this study varies, written out in every ASM cell so that a change of the
# library's defaults (``asml.losses.ASM_DEFAULTS``, chosen from this study) changes no cell.
# Lists, not tuples: the cells' options go into YAML configs.
RELEASED_ASM: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in LIBRARY_RELEASED_ASM.items()}


def _asm(**changes: Any) -> dict[str, Any]:
    return {**RELEASED_ASM, **changes}


def _pair(group: str, base: str, seeds: tuple[int, ...] = THREE) -> list[Cell]:
    return [Cell("ce", group, base, "ce", seeds=seeds), Cell(RELEASED, group, base, "asm+ce", _asm(), seeds=seeds)]


RELEASED = "asm+ce"
DEFAULT = "asm+ce conv1-9"  # the library's asm+ce default, chosen from this study
U, L, R = "horses/unet-r18", "horses/unet-r18/long", "riders/unet-r18"
CONV1_9 = [f"conv{i}" for i in range(1, 10)]  # written out, not ASM_DEFAULTS: cells must not move with it
HALF_WIDTHS = [16, 32, 64, 64, 64]  # the analyzer's released widths (16, 64, 128, 128, 128), deeper levels halved
CELLS: list[Cell] = [  # in the order they are trained (see training_order): what decides the defaults first
    # The loss itself.
    Cell("ce", "loss", U, "ce", seeds=FIVE),
    Cell(RELEASED, "loss", U, "asm+ce", _asm(), seeds=FIVE),
    # The candidates for the library's default: more matched layers, a stronger adversary, both.
    Cell(DEFAULT, "layers", U, "asm+ce", _asm(matched_layers=CONV1_9), seeds=FIVE),
    Cell("asm+ce conv1-9 w_adv=1", "layers", U, "asm+ce", _asm(matched_layers=CONV1_9, adversarial_weight=1.0)),
    Cell("asm+ce w_adv=1", "adversarial weight", U, "asm+ce", _asm(adversarial_weight=1.0)),
    # Adversarial weight 0: the analyzer is a fixed-purpose label autoencoder (a learned "perceptual" loss).
    Cell("asm+ce w_adv=0", "adversarial weight", U, "asm+ce", _asm(adversarial_weight=0.0), seeds=FIVE),
    # Control: does the analyzer need training at all? A random analyzer, never updated (no hinge,
    # no reconstruction), as a fixed feature extractor for the matching loss.
    Cell(
        "asm+ce random analyzer",
        "adversarial weight",
        U,
        "asm+ce",
        _asm(adversarial_weight=0.0, reconstruction_weight=0.0),
    ),
    # Control: is ASM+CE's gain just a larger step? CE with twice the learning rate.
    Cell("ce lr=0.02", "loss", U, "ce", optim={"lr": 0.02}),
    # The multi-class set, with the default candidate carried over.
    *_pair("riders", R, seeds=FIVE),
    Cell(DEFAULT, "layers", R, "asm+ce", _asm(matched_layers=CONV1_9), seeds=FIVE),
    Cell("asm", "loss", U, "asm", _asm()),
    # Training length, with the default candidate carried over.
    *_pair("length", L),
    Cell(DEFAULT, "layers", L, "asm+ce", _asm(matched_layers=CONV1_9)),
    Cell("asm conv1-9", "loss", U, "asm", _asm(matched_layers=CONV1_9)),
    # Matching weight relative to CE (CE weight 1): does conv1-9 help only because a sum over more
    # layers weighs the matching loss more?
    Cell("asm+ce match x3", "matching weight", U, "asm+ce", _asm(matching_weight=3.0)),
    Cell("asm+ce conv1-4", "layers", U, "asm+ce", _asm(matched_layers=["conv1", "conv2", "conv3", "conv4"])),
    # Where the hinge is averaged, and the adversarial weight between.
    Cell("asm+ce hinge@errors", "hinge pixels", U, "asm+ce", _asm(hinge_pixels="errors")),
    Cell("asm+ce w_adv=0.1", "adversarial weight", U, "asm+ce", _asm(adversarial_weight=0.1)),
    # Does the adversary earn its cost on the default layers? (w_adv=0 with conv1-9.)
    Cell(
        "asm+ce conv1-9 w_adv=0",
        "adversarial weight",
        U,
        "asm+ce",
        _asm(matched_layers=CONV1_9, adversarial_weight=0.0),
        seeds=FIVE,
    ),
    # Segmenters: PSPNet from scratch, and U-Net from an ImageNet encoder as the paper's models were
    # (and from scratch, to separate the encoder from its pretraining), each with the default candidate.
    *_pair("segmenter", "horses/pspnet-r18"),
    Cell(DEFAULT, "segmenter", "horses/pspnet-r18", "asm+ce", _asm(matched_layers=CONV1_9)),
    *_pair("segmenter", "horses/unet-lite0-imagenet"),
    Cell(DEFAULT, "segmenter", "horses/unet-lite0-imagenet", "asm+ce", _asm(matched_layers=CONV1_9)),
    # Control: CE from the ImageNet encoder stays near the class prior for most of 450 steps at lr
    # 0.01 (its loss sits at the prior's entropy); does a larger step alone get it off?
    Cell("ce lr=0.02", "segmenter", "horses/unet-lite0-imagenet", "ce", optim={"lr": 0.02}),
    Cell("ce lr=0.05", "segmenter", "horses/unet-lite0-imagenet", "ce", optim={"lr": 0.05}),
    *_pair("segmenter", "horses/unet-lite0"),
    Cell(DEFAULT, "segmenter", "horses/unet-lite0", "asm+ce", _asm(matched_layers=CONV1_9)),
    Cell("asm+ce match x0.3", "matching weight", U, "asm+ce", _asm(matching_weight=0.3)),
    Cell(
        "asm+ce hinge@errors w_adv=0.1",
        "hinge pixels",
        U,
        "asm+ce",
        _asm(hinge_pixels="errors", adversarial_weight=0.1),
    ),
    *_pair("segmenter", "horses/fcn-r18"),
    Cell(DEFAULT, "segmenter", "horses/fcn-r18", "asm+ce", _asm(matched_layers=CONV1_9)),
    # Cost (docs/speed): does the default keep its quality with fewer analyzer updates, a narrower
    # analyzer, both, or bf16 analyzer passes? Compared in pairs with the default.
    *[
        Cell(f"{DEFAULT} {label}", "cost", U, "asm+ce", _asm(matched_layers=CONV1_9, **options))
        for label, options in [
            ("every2", {"analyzer_every": 2}),
            ("every4", {"analyzer_every": 4}),
            ("half widths", {"analyzer_widths": HALF_WIDTHS}),
            ("every4 half widths", {"analyzer_every": 4, "analyzer_widths": HALF_WIDTHS}),
            ("every8 half widths", {"analyzer_every": 8, "analyzer_widths": HALF_WIDTHS}),
        ]
    ],
]
GROUPS = sorted({cell.group for cell in CELLS})
HEADLINE = ("mIoU", "BF", "mean_boundary_IoU", "trimap_1px", "context_share")
HINGE = ("hinge_all", "hinge_errors", "error_share")


def run_config(cell: Cell, seed: int, run_dir: Path, steps: int | None = None) -> dict[str, Any]:
    """The ``asml train`` config of one run (the demo's data and optimiser, the cell's loss)."""
    base = BASES[cell.base]
    steps = steps or base["steps"]
    return {
        "run_dir": str(run_dir),
        "seed": seed,
        "model": base["model"],
        "data": {
            "dataset": f"builtin:{base['dataset']}",
            "size": 64,
            "crop_size": 64,
            "scale_range": [0.75, 1.5],
            "batch_size": 8,
            "workers": 0,  # two runs share two cores; loader processes would only compete
        },
        "loss": {"name": cell.loss, "asm": dict(cell.asm)},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, **cell.optim},
        "train": {
            "steps": steps,
            "eval_every": steps,
            "checkpoint_every": max(1, steps // 3),
            "log_every": 25,
            "keep_last": 1,
        },
    }


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    from asml.engine.config import RunConfig

    return RunConfig.model_validate(config).model_dump(mode="json")


def _without_run_dir(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "run_dir"}


def _same_config(saved: dict[str, Any], cell: Cell, seed: int, steps: int | None) -> bool:
    """Whether ``saved`` (a run's resolved config) is this cell's (not a smoke test, not an older
    definition of the cell); where the run lives does not count."""
    expected = _resolved(run_config(cell, seed, Path(), steps))
    return _without_run_dir(saved) == _without_run_dir(expected)


def config_matches(run_dir: Path, cell: Cell, seed: int, steps: int | None = None) -> bool:
    """Whether the run in ``run_dir`` was made with this cell's config."""
    return _same_config(yaml.safe_load((run_dir / "config.yaml").read_text()), cell, seed, steps)


def run_directory(out: Path, cell: Cell, seed: int) -> Path:
    slug = cell.name.replace(" ", "_").replace("+", "_").replace("=", "").replace("@", "_at_")
    return out / "runs" / cell.base.replace("/", "_") / f"{slug}-seed{seed}"


def record_path(docs: Path, cell: Cell, seed: int) -> Path:
    """The versioned summary of one finished run (config, final scores, timing, training log)."""
    run_dir = run_directory(Path(), cell, seed)
    return docs / "runs" / run_dir.parent.name / f"{run_dir.name}.json"


def save_record(run_dir: Path, record: Path) -> None:
    """Keep what the report needs of a finished run next to the report, so the study's evidence is
    versioned with it and survives the loss of the (large, unversioned) run folders."""
    summary = {
        "config": _without_run_dir(yaml.safe_load((run_dir / "config.yaml").read_text())),
        "final": json.loads((run_dir / "final_metrics.json").read_text()),
        "timing": json.loads((run_dir / "timing.json").read_text()),
        "train": _train_rows(run_dir),
    }
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(summary, indent=None, allow_nan=True) + "\n")


def _train_one(out: Path, docs: Path, cell: Cell, seed: int, threads: int, steps: int | None) -> str:
    """Train (or resume) one run in a subprocess, save its record, drop its checkpoints (disk)."""
    run_dir = run_directory(out, cell, seed)
    if not (run_dir / "final_metrics.json").is_file():
        config_file = out / "configs" / f"{run_dir.parent.name}--{run_dir.name}.yaml"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(yaml.safe_dump(run_config(cell, seed, run_dir, steps), sort_keys=False))
        command = [str(Path(sys.executable).parent / "asml"), "train", str(config_file)]
        if (run_dir / "config.yaml").exists():
            command.append("--resume")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        log = run_dir.parent / f"{run_dir.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as stream:
            result = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=env, check=False)
        if result.returncode != 0:
            return f"FAILED {cell.key()} seed {seed} (exit {result.returncode}); see {log}"
    save_record(run_dir, record_path(docs, cell, seed))
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return f"done {cell.key()} seed {seed}"


def _record_matches(record: Path, cell: Cell, seed: int, steps: int | None) -> bool:
    """Whether ``record`` was made with this cell's config (not a smoke test, not an older definition)."""
    return _same_config(json.loads(record.read_text())["config"], cell, seed, steps)


def _stale(out: Path, docs: Path, cell: Cell, seed: int, steps: int | None) -> Path | None:
    """The run folder or record of (cell, seed) if it holds a run made with another config."""
    run_dir, record = run_directory(out, cell, seed), record_path(docs, cell, seed)
    if (run_dir / "config.yaml").is_file() and not config_matches(run_dir, cell, seed, steps):
        return run_dir
    if record.is_file() and not _record_matches(record, cell, seed, steps):
        return record
    return None


def training_order(cells: list[Cell]) -> list[tuple[Cell, int]]:
    """Every (cell, seed), cells taken in list order, but seed by seed within each run of consecutive
    cells on the same base: a study cut short leaves whole seeds of paired comparisons, not whole
    cells without their pairs. Seeds beyond the first three (``THREE``) come in a second pass, after
    every cell has its first three."""
    order: list[tuple[Cell, int]] = []
    for first_pass in (True, False):  # seeds beyond the first three come after every cell has three
        for _, block in itertools.groupby(cells, key=lambda cell: cell.base):
            block_cells = list(block)
            for seed in sorted({seed for cell in block_cells for seed in cell.seeds}):
                if (seed in THREE) == first_pass:
                    order += [(cell, seed) for cell in block_cells if seed in cell.seeds]
    return order


def run_missing(out: Path, docs: Path, cells: list[Cell], jobs: int, threads: int, steps: int | None = None) -> None:
    """Train every (cell, seed) without a record, ``jobs`` at a time, in ``training_order``."""
    runs = training_order(cells)
    stale = [path for cell, seed in runs if (path := _stale(out, docs, cell, seed, steps)) is not None]
    if stale:  # never overwrite or mix in runs made with another setting
        raise SystemExit(
            f"[ablation] {len(stale)} run folder(s) or record(s) hold runs with another config than the "
            f"study's, e.g. {stale[0]}; move them away or use another --out/--docs"
        )
    todo = [(cell, seed) for cell, seed in runs if not record_path(docs, cell, seed).is_file()]
    print(f"[ablation] {len(todo)} runs to train, {jobs} at a time with {threads} thread(s) each", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for message in pool.map(lambda job: _train_one(out, docs, job[0], job[1], threads, steps), todo):
            print(f"[ablation] {time.strftime('%H:%M:%S')} {message}", flush=True)


def _train_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    # A resumed run logs again the steps after its last checkpoint: keep each step's last row.
    by_step = {row["step"]: row for row in rows if row.get("kind") == "train"}
    return [{k: by_step[step][k] for k in ("step", "loss", *HINGE) if k in by_step[step]} for step in sorted(by_step)]


def run_scores(docs: Path, cell: Cell, seed: int, steps: int | None = None) -> dict[str, Any] | None:
    """Final scores (in %), hinge logs averaged over the second half of training, s/step, from the
    run's record; None if unfinished or made with another config."""
    record = record_path(docs, cell, seed)
    if not record.is_file() or not _record_matches(record, cell, seed, steps):
        return None
    summary = json.loads(record.read_text())
    final = summary["final"]
    scores: dict[str, Any] = {
        "mIoU": 100 * final["mIoU"],
        "BF": 100 * final["BF"],
        "mean_boundary_IoU": 100 * final["mean_boundary_IoU"],
        "trimap_1px": 100 * final["trimap_mIoU"][0],
        "context_share": 100 * final["context_share"] if final["context_share"] is not None else None,
        "IoU": [100 * v if v is not None else None for v in final["IoU"]],
        "class_names": final["class_names"],
    }
    timing = summary["timing"]
    # Only the last session's steps are timed; a run resumed at its end has none.
    scores["seconds_per_step"] = timing["training_seconds"] / timing["steps"] if timing["steps"] else None
    rows = summary["train"]
    late = [row for row in rows if row["step"] > rows[-1]["step"] / 2] if rows else []
    for key in HINGE:
        values = [row[key] for row in late if key in row]
        scores[key] = statistics.fmean(values) if values else None
    scores["curve"] = rows
    return scores


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
    that are neither (where the base has these cells)."""
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
        "",
        "## Scores",
        "",
        "| base | cell | seeds | mIoU | BF | Boundary IoU | trimap 1px | context | hinge all | hinge errors"
        " | errors | s/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in table.values():
        lines.append(
            f"| {entry['base']} | {entry['cell']} | {len(entry['seeds'])} | {_fmt(entry['mIoU'])} | {_fmt(entry['BF'])}"
            f" | {_fmt(entry['mean_boundary_IoU'])} | {_fmt(entry['trimap_1px'])} | {_fmt(entry['context_share'])}"
            f" | {_fmt(entry['hinge_all'], 2)} | {_fmt(entry['hinge_errors'], 2)}"
            f" | {_fmt({k: (v * 100 if isinstance(v, float) else v) for k, v in entry['error_share'].items()}, 1)}"
            f" | {_fmt(entry['seconds_per_step'], 3)} |"
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
        ("default", f"the default ASM+CE ({DEFAULT}) of the same base"),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "study-ablation", help="runs folder (reused to resume)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "ablation", help="where the report goes")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=None, help="groups to run (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override every cell's seeds (smoke tests)")
    parser.add_argument("--steps", type=int, default=None, help="override every run's length (smoke tests only)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    args = parser.parse_args(argv)
    smoke = args.steps is not None or args.seeds is not None
    if smoke and (args.out == parser.get_default("out") or args.docs == parser.get_default("docs")):
        parser.error("--steps and --seeds are for smoke tests: give --out and --docs away from the study's")
    cells = [cell for cell in CELLS if args.only is None or cell.group in args.only]
    if args.only is not None:  # a group's pairs need their references
        references = [other for cell in cells for other in comparisons(cell, CELLS).values()]
        cells += [cell for cell in CELLS if cell in references and cell not in cells]
    if args.seeds is not None:
        cells = [replace(cell, seeds=tuple(args.seeds)) for cell in cells]
    if not args.report_only:
        run_missing(args.out, args.docs, cells, args.jobs, args.threads, args.steps)
    report(args.docs, cells if args.seeds is not None else CELLS, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
