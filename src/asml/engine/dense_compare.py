"""``asml compare`` for depth and surface normals: the grid's results and report (the grid itself,
its runs and their resumption are ``asml.engine.compare``'s, whatever the task)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from asml.engine.compare import _checkpoint_file, _mean_std, run_directory
from asml.engine.config import ConfigError
from asml.engine.tasks import RegressionTask

__all__ = ["aggregate_regression", "build_regression_report", "format_regression_summary"]


def aggregate_regression(out_dir: Path, losses: Sequence[str], seeds: Sequence[int], task: str) -> dict[str, Any]:
    """``results.json``'s content: per loss, mean and std over seeds of every score of the task and
    of seconds per training step; and every run's scores."""
    keys = RegressionTask(task).summary_keys()
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
            timing_file = run_dir / "timing.json"
            timing = json.loads(timing_file.read_text()) if timing_file.is_file() else None
            scores["seconds_per_step"] = (
                timing["training_seconds"] / timing["steps"] if timing and timing["steps"] else None
            )
            runs[f"{loss}/seed{seed}"] = scores
    summary = {
        loss: {
            key: _mean_std([runs[f"{loss}/seed{seed}"][key] for seed in seeds]) for key in (*keys, "seconds_per_step")
        }
        for loss in losses
    }
    return {"task": task, "losses": list(losses), "seeds": list(seeds), "summary": summary, "runs": runs}


def format_regression_summary(results: dict[str, Any]) -> str:
    """The terminal table: per loss, mean ± std over seeds."""
    from asml.viz.dense_report import regression_summary_table

    header, rows = regression_summary_table(results)
    columns = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, columns, strict=True)) for row in [header, *rows]]
    seeds = len(results["seeds"])
    return "\n".join(lines) + f"\n(mean ± std over {seeds} seed{'s' if seeds > 1 else ''})"


def build_regression_report(
    out_dir: Path, losses: Sequence[str], seeds: Sequence[int], title: str, task: str, pictures: int = 4
) -> Path:
    """Aggregate the finished runs into ``results.json``, figures and ``report.html``; return its path."""
    from asml.engine.data import build_data
    from asml.engine.trainer import load_model_from_checkpoint
    from asml.viz import dense_report

    results = aggregate_regression(out_dir, losses, seeds, task)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    logs = {
        f"{loss} seed {seed}": run_directory(out_dir, loss, seed) / "metrics.jsonl" for loss in losses for seed in seeds
    }
    figures = {
        "thresholds": dense_report.threshold_chart(results, out_dir),
        "curves": dense_report.regression_curves(logs, task, out_dir),
    }
    models = {loss: load_model_from_checkpoint(_checkpoint_file(out_dir, loss, seeds[0])) for loss in losses}
    config = next(iter(models.values()))[1]
    bundle = build_data(config.data, task)
    raw = [bundle.val[i] for i in range(min(pictures, len(bundle.val)))]  # type: ignore[arg-type]
    inputs = [bundle.eval_transform(image, target) for image, target in raw]
    decode = RegressionTask(task).encoding.decode
    with torch.no_grad():
        predictions = {loss: [decode(model(x[None]))[0] for x, _ in inputs] for loss, (model, _, _) in models.items()}
    figures["predictions"] = dense_report.error_grid(
        [image for image, _ in raw], [target for _, target in inputs], predictions, task, out_dir
    )
    return dense_report.write_regression_report(results, figures, out_dir, title)
