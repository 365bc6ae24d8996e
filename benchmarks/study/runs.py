"""Training the study's runs (``asml train`` subprocesses, resumable) and reading their versioned records."""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from asml.engine.progress import ProgressBar
from study.cells import BASES, HINGE, THREE, Cell

# Where the sets that ``benchmarks/real_data.py`` builds are read from (a study script may move it).
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def _pinned_asm(cell: Cell, regression: bool) -> dict[str, Any]:
    """The cell's ASM options, with those the library sets per segmenter family
    (``asml.losses.SEGMENTER_ASM_DEFAULTS``) pinned at the class's defaults where the cell leaves them
    out: a cell means the same on every segmenter, whatever the library's defaults for its family."""
    from asml.losses import SEGMENTER_ASM_DEFAULTS

    if regression or not cell.loss.startswith("asm"):
        return dict(cell.asm)
    defaults = _asm_class_defaults()
    per_family = {name: defaults[name] for changes in SEGMENTER_ASM_DEFAULTS.values() for name in changes}
    return {**per_family, **cell.asm}


def run_config(cell: Cell, seed: int, run_dir: Path, steps: int | None = None) -> dict[str, Any]:
    """The ``asml train`` config of one run (the demo's data and optimiser, the cell's loss)."""
    base = BASES[cell.base]
    steps = steps or base["steps"]
    task = {"task": base["task"]} if "task" in base else {}  # segmentation unless the base says
    if "folder" in base:  # a set built on disk (benchmarks/real_data.py), in the generic layout
        source = {"dataset": "folder", "root": str(DATA_DIR / base["folder"])}
    else:
        source = {"dataset": f"builtin:{base['dataset']}", "size": base.get("size", 64)}
    return {
        "run_dir": str(run_dir),
        **task,
        "seed": seed,
        "model": base["model"],
        "data": {
            **source,
            "crop_size": base.get("size", 64),
            "scale_range": [0.75, 1.5],
            "batch_size": 8,
            "workers": 0,  # two runs share two cores; loader processes would only compete
            **base.get("data", {}),
        },
        "loss": {"name": cell.loss, "asm": _pinned_asm(cell, "task" in base)},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, **cell.optim},
        "train": {
            "steps": steps,
            "eval_every": steps,
            "checkpoint_every": max(1, steps // 3),
            "log_every": 25,
            "keep_last": 1,
        },
    }


def study_parser(description: str | None, out: Path, docs: Path) -> argparse.ArgumentParser:
    """The options every study script takes (where runs and report go, parallelism, smoke-test
    overrides, report only); a script adds its own ``--only``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=out, help="runs folder (reused to resume)")
    parser.add_argument("--docs", type=Path, default=docs, help="where the report goes")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override every cell's seeds (smoke tests)")
    parser.add_argument("--steps", type=int, default=None, help="override every run's length (smoke tests only)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    return parser


def parse_study_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, refusing smoke-test overrides that would write into the study's own folders."""
    args = parser.parse_args(argv)
    smoke = args.steps is not None or args.seeds is not None
    if smoke and (args.out == parser.get_default("out") or args.docs == parser.get_default("docs")):
        parser.error("--steps and --seeds are for smoke tests: give --out and --docs away from the study's")
    return args


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    from asml.engine.config import RunConfig

    return RunConfig.model_validate(config).model_dump(mode="json")


def _without_run_dir(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "run_dir"}


def _without_paths(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without where it and its data set live (a built set is the same on any disk:
    ``benchmarks/real_data.py`` checks its sources' sha256)."""
    config = _without_run_dir(config)
    if isinstance(config.get("data"), dict):
        config = {**config, "data": {key: value for key, value in config["data"].items() if key != "root"}}
    return config


def _asm_class_defaults() -> dict[str, Any]:
    """``AdversarialStructureMatching``'s keyword defaults, as they read in a YAML config (lists)."""
    from asml import AdversarialStructureMatching

    parameters = inspect.signature(AdversarialStructureMatching).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {name: list(value) if isinstance(value, tuple) else value for name, value in defaults.items()}


# ASM options that the cells began to pin after records had been written without them: such a record
# ran with the class's default. Only these are filled in: elsewhere a missing option means
# ``ASM_DEFAULTS`` (``asml train``), not the class's default.
PINNED_LATER = ("analyzer_every", "analyzer_stride")


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without where it lives, the options of ``PINNED_LATER`` filled in with the
    class's defaults where missing."""
    config = _without_paths(config)
    loss = config.get("loss")
    if isinstance(loss, dict) and loss.get("name", "").startswith("asm"):
        defaults = _asm_class_defaults()
        pinned = {name: defaults[name] for name in PINNED_LATER}
        config = {**config, "loss": {**loss, "asm": {**pinned, **loss.get("asm", {})}}}
    return config


def _as_it_ran(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the model options added since filled in as the run was built: FCN's
    ``output_stride`` was 32 for ResNet-18/34 (undilated) and 8 for deeper ResNets (dilated)."""
    model = saved.get("model")
    if isinstance(model, dict) and model.get("name") == "fcn" and "output_stride" not in model:
        stride = 32 if model.get("encoder", "resnet18") in ("resnet18", "resnet34") else 8
        saved = {**saved, "model": {**model, "output_stride": stride}}
    return saved


def _same_config(saved: dict[str, Any], cell: Cell, seed: int, steps: int | None) -> bool:
    """Whether ``saved`` (a run's resolved config) is this cell's (not a smoke test, not an older
    definition of the cell); where the run lives does not count."""
    expected = _resolved(run_config(cell, seed, Path(), steps))
    # Resolved too: keys added to the config since a run was saved (e.g. ``task``) take their defaults.
    return _comparable(_resolved(_as_it_ran(saved))) == _comparable(expected)


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


def _train_one(out: Path, docs: Path, cell: Cell, seed: int, threads: int, steps: int | None) -> tuple[str, float]:
    """Train (or resume) one run in a subprocess, save its record, drop its checkpoints (disk).

    Returns a message and the run's wall-clock seconds in this call."""
    start = time.perf_counter()
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
            return f"FAILED {cell.key()} seed {seed} (exit {result.returncode}); see {log}", 0.0
    save_record(run_dir, record_path(docs, cell, seed))
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    seconds = time.perf_counter() - start
    return f"done {cell.key()} seed {seed} in {seconds / 60:.1f} min", seconds


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
    cost: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool, ProgressBar("ablation", len(todo), unit="run") as bar:
        results = pool.map(lambda job: _train_one(out, docs, job[0], job[1], threads, steps), todo)
        for (cell, _), (message, seconds) in zip(todo, results, strict=True):
            cost[cell.key()] = cost.get(cell.key(), 0.0) + seconds
            bar.advance()
            if message.startswith("FAILED") and bar.live:
                print(f"[ablation] {message}", flush=True)  # kept above the bars, not overwritten
            bar.report(f"{time.strftime('%H:%M:%S')} {message}")  # a line with the study's ETA off a terminal
    for key, seconds in cost.items():  # wall-clock, with ``jobs`` runs sharing the machine
        print(f"[ablation] cell {key}: {seconds / 60:.1f} min of runs this call", flush=True)


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
    scores["training_minutes"] = timing["training_seconds"] / 60
    rows = summary["train"]
    late = [row for row in rows if row["step"] > rows[-1]["step"] / 2] if rows else []
    for key in HINGE:
        values = [row[key] for row in late if key in row]
        scores[key] = statistics.fmean(values) if values else None
    scores["curve"] = rows
    return scores
