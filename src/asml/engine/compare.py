"""``asml compare``: one config, a grid of losses x seeds, everything else shared; then a report.

Runs live in ``<out>/runs/<loss>-seed<seed>``; a finished run (``final_metrics.json``) is skipped and an
interrupted one resumed, so an interrupted comparison continues where it stopped. Same seed = same
initialisation and data order for every loss, so losses are compared in pairs.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asml.engine.config import ConfigError, RunConfig
from asml.engine.progress import ProgressBar
from asml.engine.trainer import train

__all__ = ["aggregate", "run_directory", "run_grid"]

HEADLINE = ("mIoU", "BF", "mean_boundary_IoU", "context_share")


def run_directory(out_dir: Path, loss: str, seed: int) -> Path:
    """Where the run of ``loss`` with ``seed`` lives."""
    return out_dir / "runs" / f"{loss.replace('+', '_')}-seed{seed}"


def run_grid(base: RunConfig, losses: Sequence[str], seeds: Sequence[int], out_dir: Path) -> None:
    """Train every (loss, seed) not finished yet; resume the interrupted ones."""
    if not losses or not seeds:
        raise ConfigError("compare needs at least one loss and one seed")
    grid = [(loss, seed) for seed in seeds for loss in losses]
    with ProgressBar("compare", len(grid), unit="run") as bar:
        for loss, seed in grid:
            run_dir = run_directory(out_dir, loss, seed)
            if (run_dir / "final_metrics.json").is_file():
                print(f"[compare] {loss} seed {seed}: finished earlier, kept")
                bar.advance()
                continue
            config = base.model_copy(deep=True)
            config.run_dir, config.seed = str(run_dir), seed
            config.loss.name = loss  # type: ignore[assignment]
            resume = (run_dir / "checkpoints").is_dir()
            print(f"[compare] {loss} seed {seed}: {'resuming' if resume else 'training'} in {run_dir}")
            bar.show(f"{loss} seed {seed}")
            train(RunConfig.model_validate(config.model_dump()), resume=resume, force=False)
            bar.advance()
            bar.report(f"{loss} seed {seed} done")


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
        loss_fn = build_loss(loss, len(class_names), asm_options=run_config.loss.asm)
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
