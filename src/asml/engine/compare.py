"""``asml compare``: one config, a grid of losses x seeds, everything else shared; then a report.

Runs live in ``<out>/runs/<loss>-seed<seed>``; a finished run (``final_metrics.json``) is skipped and an
interrupted one resumed, so an interrupted comparison continues where it stopped. Same seed = same
initialisation and data order for every loss, so losses are compared in pairs.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from asml.engine.config import ConfigError, RunConfig, explain_validation
from asml.engine.progress import ProgressBar
from asml.engine.trainer import train

__all__ = ["aggregate", "run_directory", "run_grid"]

HEADLINE = ("mIoU", "BF", "mean_boundary_IoU", "context_share")


def run_directory(out_dir: Path, loss: str, seed: int) -> Path:
    """Where the run of ``loss`` with ``seed`` lives."""
    return out_dir / "runs" / f"{loss.replace('+', '_')}-seed{seed}"


def run_grid(base: RunConfig, losses: Sequence[str], seeds: Sequence[int], out_dir: Path, jobs: int = 1) -> None:
    """Train every (loss, seed) not finished yet; resume the interrupted ones.

    ``jobs`` > 1 trains that many runs at once, each an ``asml train`` process with an equal share of
    the CPU threads (on 2 cores, two one-thread runs finish sooner than two two-thread runs in turn);
    each run's output goes to ``<out>/runs/<run>.log``. The runs are the same either way."""
    if not losses or not seeds:
        raise ConfigError("compare needs at least one loss and one seed")
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    if jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--jobs > 1 starts its own training processes; under torchrun use --jobs 1")
    grid = [(loss, seed) for seed in seeds for loss in losses]
    with ProgressBar("compare", len(grid), unit="run", enabled=int(os.environ.get("RANK", "0")) == 0) as bar:
        todo = []
        for loss, seed in grid:
            if (run_directory(out_dir, loss, seed) / "final_metrics.json").is_file():
                if bar.enabled:
                    print(f"[compare] {loss} seed {seed}: finished earlier, kept")
                bar.advance()
            else:
                todo.append((loss, seed))
        if jobs == 1:
            for loss, seed in todo:
                config, resume = _run_config(base, out_dir, loss, seed)
                if bar.enabled:
                    print(f"[compare] {loss} seed {seed}: {'resuming' if resume else 'training'} in {config.run_dir}")
                bar.show(f"{loss} seed {seed}")
                train(config, resume=resume, force=False)
                bar.advance()
                bar.report(f"{loss} seed {seed} done")
        else:
            _train_in_processes(base, todo, out_dir, jobs, bar)


def _run_config(base: RunConfig, out_dir: Path, loss: str, seed: int) -> tuple[RunConfig, bool]:
    """The config of one run of the grid, and whether it resumes an interrupted run."""
    run_dir = run_directory(out_dir, loss, seed)
    config = base.model_copy(deep=True)
    config.run_dir, config.seed = str(run_dir), seed
    tree = config.model_dump()
    tree["loss"]["name"] = loss
    try:
        validated = RunConfig.model_validate(tree)
    except ValidationError as error:  # e.g. a segmentation loss for a depth config: named, not a traceback
        raise explain_validation(error, f"the comparison's run of loss {loss!r}") from None
    # A run stopped before its first checkpoint holds only its config: resuming it starts it afresh.
    return validated, (run_dir / "config.yaml").is_file()


def _latest_step(run_dir: Path) -> int:
    """The last training step a run has logged (0 before its first log). The file is being written
    by another process: a last line without its newline is not complete yet and is left out."""
    log = run_dir / "metrics.jsonl"
    text = log.read_text() if log.is_file() else ""
    steps = []
    for line in text.split("\n")[:-1]:  # the piece after the last newline is incomplete (or empty)
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("kind") == "train":
            steps.append(int(row["step"]))
    return max(steps, default=0)


@dataclass
class _Process:
    """One run trained by an ``asml train`` process, with its bar and log."""

    name: str
    run_dir: Path
    process: subprocess.Popen[bytes]
    bar: ProgressBar
    log: Path


def _start_process(base: RunConfig, out_dir: Path, loss: str, seed: int, environment: dict[str, str]) -> _Process:
    config, resume = _run_config(base, out_dir, loss, seed)
    run_dir = Path(config.run_dir)
    config_file = run_dir.parent / f"{run_dir.name}.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(config.to_yaml())
    log = config_file.with_suffix(".log")
    command = [sys.executable, "-m", "asml.cli", "train", str(config_file), *(["--resume"] if resume else [])]
    with log.open("ab") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=environment)
    print(f"[compare] {loss} seed {seed}: {'resuming' if resume else 'training'} in {run_dir} (log: {log})")
    name = f"{loss} seed {seed}"
    return _Process(name, run_dir, process, ProgressBar(name, config.train.steps), log)


def _train_in_processes(
    base: RunConfig, todo: list[tuple[str, int]], out_dir: Path, jobs: int, grid_bar: ProgressBar
) -> None:
    """Train ``todo`` as ``asml train`` processes, ``jobs`` at a time, one bar per running run."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    waiting, running = list(todo), list[_Process]()
    previous_handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so `finally` stops the children
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                running.append(_start_process(base, out_dir, *waiting.pop(0), environment))
                running[-1].bar.__enter__()
            time.sleep(0.5)
            for run in list(running):
                run.bar.advance(_latest_step(run.run_dir) - run.bar.completed)
                if run.process.poll() is None:
                    continue
                running.remove(run)
                run.bar.__exit__(None, None, None)
                if run.process.returncode != 0:
                    tail = "\n".join(run.log.read_text(errors="replace").splitlines()[-5:])
                    raise ConfigError(f"run {run.name} failed (exit {run.process.returncode}); {run.log} ends:\n{tail}")
                grid_bar.advance()
                grid_bar.report(f"{run.name} done")
    finally:
        for run in running:  # an error, Ctrl-C or SIGTERM: stop the others; their checkpoints stay for resuming
            run.process.terminate()
            run.process.wait()
            run.bar.__exit__(None, None, None)
        signal.signal(signal.SIGTERM, previous_handler)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _mean_std(values: list[float]) -> dict[str, float | None]:
    finite = [v for v in values if v is not None and v == v]
    if not finite:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(finite), "std": statistics.stdev(finite) if len(finite) > 1 else 0.0}


def aggregate(out_dir: Path, losses: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """``results.json``'s content: per loss, mean and std over seeds of the headline scores, trimap
    mIoU per width, per-class IoU and BF, and seconds per training step; and every run's scores."""
    runs: dict[str, dict[str, Any]] = {}
    for loss in losses:
        for seed in seeds:
            run_dir = run_directory(out_dir, loss, seed)
            final = run_dir / "final_metrics.json"
            if not final.is_file():
                raise ConfigError(
                    f"run {run_dir} has not finished (no final_metrics.json); run compare without --report-only"
                )
            scores = json.loads(final.read_text())
            timing_file = run_dir / "timing.json"  # written by the trainer: loop time without evaluation
            timing = json.loads(timing_file.read_text()) if timing_file.is_file() else None
            scores["seconds_per_step"] = (
                timing["training_seconds"] / timing["steps"] if timing and timing["steps"] else None
            )
            runs[f"{loss}/seed{seed}"] = scores
    summary: dict[str, Any] = {}
    class_names: list[str] = []
    for loss in losses:
        per_seed = [runs[f"{loss}/seed{seed}"] for seed in seeds]
        class_names = per_seed[0]["class_names"]
        entry: dict[str, Any] = {key: _mean_std([r[key] for r in per_seed]) for key in (*HEADLINE, "seconds_per_step")}
        widths = per_seed[0]["trimap_widths"]
        entry["trimap_mIoU"] = {
            f"{w:g}": _mean_std([r["trimap_mIoU"][i] for r in per_seed]) for i, w in enumerate(widths)
        }
        for key in ("IoU", "BF_per_class", "boundary_IoU"):
            entry[key] = {name: _mean_std([r[key][i] for r in per_seed]) for i, name in enumerate(class_names)}
        summary[loss] = entry
    return {"losses": list(losses), "seeds": list(seeds), "class_names": class_names, "summary": summary, "runs": runs}


def format_summary(results: dict[str, Any]) -> str:
    """The terminal table: per loss, mean ± std over seeds (scores in %)."""
    from asml.viz.report import summary_table

    header, rows = summary_table(results)
    columns = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(row, columns, strict=True)) for row in [header, *rows]
    ]
    seeds = len(results["seeds"])
    return "\n".join(lines) + f"\n(mean ± std over {seeds} seed{'s' if seeds > 1 else ''}; scores in %, s/step in s)"


def _checkpoint_file(out_dir: Path, loss: str, seed: int) -> Path:
    """The run's best checkpoint, or its latest one."""
    from asml.engine.checkpoint import latest_checkpoint

    checkpoints = run_directory(out_dir, loss, seed) / "checkpoints"
    best = checkpoints / "best.pt"
    latest = latest_checkpoint(checkpoints)
    if best.is_file():
        return best
    if latest is None:
        raise ConfigError(f"{checkpoints} holds no checkpoint")
    return latest


def build_report(out_dir: Path, losses: Sequence[str], seeds: Sequence[int], title: str, pictures: int = 4) -> Path:
    """Aggregate the finished runs into ``results.json``, figures and ``report.html``; return its path."""
    import torch

    from asml.core import AdversarialStructureMatching
    from asml.engine.checkpoint import load_checkpoint
    from asml.engine.data import build_data
    from asml.engine.trainer import load_model_from_checkpoint
    from asml.losses import build_loss
    from asml.models import canonical_architecture
    from asml.viz import report

    results = aggregate(out_dir, losses, seeds)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    figures = {
        "bf_gain": report.boundary_gain_chart(results, out_dir),
        "trimap": report.trimap_chart(results, out_dir),
        "curves": report.training_curves(
            {
                f"{loss} seed {seed}": run_directory(out_dir, loss, seed) / "metrics.jsonl"
                for loss in losses
                for seed in seeds
            },
            out_dir,
        ),
    }
    seed = seeds[0]
    models = {loss: load_model_from_checkpoint(_checkpoint_file(out_dir, loss, seed)) for loss in losses}
    config = next(iter(models.values()))[1]
    bundle = build_data(config.data)
    count = min(pictures, len(bundle.val))  # type: ignore[arg-type]
    raw = [bundle.val[i] for i in range(count)]
    inputs = [bundle.eval_transform(image, mask)[0] for image, mask in raw]
    predictions: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for loss, (model, _, _) in models.items():
            predictions[loss] = [model(x[None]).argmax(1)[0] for x in inputs]
    figures["predictions"] = report.prediction_grid([i for i, _ in raw], [m for _, m in raw], predictions, out_dir)
    asm_losses = [loss for loss in losses if loss.startswith("asm")]
    if asm_losses:
        loss = asm_losses[0]
        model, run_config, class_names = models[loss]
        state = load_checkpoint(_checkpoint_file(out_dir, loss, seed))
        loss_fn = build_loss(
            loss,
            len(class_names),
            asm_options=run_config.loss.asm,
            segmenter=canonical_architecture(run_config.model.name),
        )
        loss_fn.load_state_dict(state["loss"])
        asm = loss_fn.asm
        assert isinstance(asm, AdversarialStructureMatching)
        with torch.no_grad():
            logits = model(inputs[0][None])
            probabilities = torch.softmax(logits, dim=1)
            completion = asm.analyzer(probabilities, layers=(), reconstruct=True).reconstruction.argmax(1)[0]
            maps = {k: v[0] for k, v in asm.loss_maps(logits, raw[0][1][None]).items()}
        figures["analyzer"] = report.analyzer_view(raw[0][0], logits.argmax(1)[0], completion, maps, out_dir)
    return report.write_report(results, figures, out_dir, title)
