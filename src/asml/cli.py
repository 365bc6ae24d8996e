"""The ``asml`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asml.engine.config import RunConfig


class _DefaultsAndRawEpilog(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show option defaults and keep the epilog's line breaks."""


DEMO_LOSSES = ("ce", "asm+ce")
COMPARE_LOSSES = ("ce", "asm", "asm+ce")
# For depth and normals: the per-pixel baseline against ASM with it (demo), and ASM alone (compare).
REGRESSION_DEMO_LOSSES = ("iid", "asm+iid")
REGRESSION_COMPARE_LOSSES = ("iid", "asm", "asm+iid")
LONG_DEMO_STEPS = 1350


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="compare CE and ASM+CE on the built-in horses and write a report (about 4 minutes on 2 CPU cores)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a U-Net-ResNet-18 from scratch with CE and with ASM+CE (same initialisation and data "
        "order) on the built-in horses at 64 px, 450 steps, two runs at a time, then print the scores and write "
        f"a report. --long trains {LONG_DEMO_STEPS} steps instead (about 10 minutes), where the boundary gain "
        "is larger. --task normals (or depth) compares the per-pixel loss (iid) with ASM+IID on the built-in "
        "rendered scenes instead.",
    )
    demo.add_argument(
        "--task", choices=("segmentation", "normals", "depth"), default="segmentation", help="what to predict"
    )
    demo.add_argument("--out", default="demo-report", help="folder for the runs and the reports")
    demo.add_argument("--steps", type=int, default=None, help="training steps per run (default 450)")
    demo.add_argument("--long", action="store_true", help=f"train {LONG_DEMO_STEPS} steps per run")
    demo.add_argument(
        "--losses",
        nargs="+",
        default=None,
        help=f"losses to compare (default {' '.join(DEMO_LOSSES)}; for "
        f"normals and depth {' '.join(REGRESSION_DEMO_LOSSES)})",
    )
    demo.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (same seed = same init and data order)")
    demo.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        help="built-in datasets (horses, riders, knights; default horses, or scenes for normals and depth)",
    )
    demo.add_argument("--val-images", type=int, default=None, help="evaluate on the first N images only")
    demo.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")


def _add_compare(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compare = commands.add_parser(
        "compare",
        help="train one config with several losses and seeds, then write a report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    compare.add_argument("config", help="YAML config (its loss.name and seed are replaced per run)")
    compare.add_argument("overrides", nargs="*", help="section.key=value overrides")
    compare.add_argument(
        "--losses",
        nargs="+",
        default=None,
        help=f"losses to compare (default {' '.join(COMPARE_LOSSES)}; for "
        f"normals and depth {' '.join(REGRESSION_COMPARE_LOSSES)})",
    )
    compare.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds")
    compare.add_argument("--out", required=True, help="folder for the runs and the report (reused to resume)")
    compare.add_argument("--report-only", action="store_true", help="rebuild the report from finished runs")
    compare.add_argument("--title", default=None, help="report title (default: the config's name)")
    compare.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (CPU threads shared)")


def _add_data(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from asml.data.builtin import BUILTIN_DATASETS, SPLIT_SIZES

    data = commands.add_parser("data", help="check a dataset, or look at the built-in ones")
    actions = data.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check",
        help="read every sample of a config's train and val splits; list each bad file, then the class histogram",
        description="Read every sample of the config's train and val splits once, fully, as training would. "
        "Each bad file is listed with its path (unreadable or truncated, image and mask sizes differ, labels "
        "outside the classes, wrong channels, listed ids without files), then pixels and images per class and "
        "split, and the classes that never occur. Exit status 1 if any problem was found. Writes nothing.",
    )
    check.add_argument("config", help="YAML config (its data section is checked)")
    check.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.root=/data/voc")
    preview = actions.add_parser(
        "preview",
        help="write a picture of a built-in dataset's samples",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    preview.add_argument("name", choices=sorted(BUILTIN_DATASETS), help="built-in dataset")
    preview.add_argument("--split", choices=sorted(SPLIT_SIZES), default="train", help="which split")
    preview.add_argument("--size", type=int, default=64, help="image side in pixels")
    preview.add_argument("--count", type=int, default=8, help="number of samples shown")
    preview.add_argument("--seed", type=int, default=0, help="dataset seed")
    preview.add_argument("--out", default=None, help="PNG to write (default: <name>-<split>.png)")
    preview.add_argument("--force", action="store_true", help="replace --out if it exists")


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser(
        "export",
        help="write a trained segmenter as TorchScript or ONNX, for use without asml",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Export the segmenter of a run (its best checkpoint, else the latest) or of a checkpoint "
        "file. Only the segmenter: the analyzer is for training only. The exported model takes normalised "
        "images float32 [B, 3, H, W] of any batch and size and returns logits [B, C, H, W].",
    )
    export.add_argument("run", help="run directory or checkpoint file (.pt)")
    export.add_argument("--format", choices=["torchscript", "onnx"], required=True, help="file format")
    export.add_argument("--out", required=True, help="file to write")
    export.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"), help="example image size")
    export.add_argument("--force", action="store_true", help="replace --out if it exists")


def _add_train_eval_predict(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from asml.engine.config import describe_defaults

    formatter = argparse.ArgumentDefaultsHelpFormatter
    train = commands.add_parser(
        "train",
        help="train a segmenter from a YAML config",
        formatter_class=_DefaultsAndRawEpilog,
        description="Train from CONFIG.yaml. Override any key with section.key=value (parsed as YAML), e.g. "
        "train.steps=500 loss.name=ce. Launch several processes with: torchrun --nproc_per_node N -m asml.cli "
        "train CONFIG.yaml",
        epilog="configuration keys and their defaults:\n" + describe_defaults(),
    )
    train.add_argument("config", help="YAML config file (see configs/)")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides (values parsed as YAML)")
    train.add_argument("--resume", action="store_true", help="continue the run in run_dir from its last checkpoint")
    train.add_argument("--force", action="store_true", help="replace a run that already exists in run_dir")
    evaluate = commands.add_parser("eval", help="evaluate a run or checkpoint", formatter_class=formatter)
    evaluate.add_argument("run", help="run directory (its best checkpoint) or checkpoint file")
    evaluate.add_argument("--data", nargs="*", default=[], help="data.key=value overrides, e.g. data.val_split=test")
    evaluate.add_argument("--json", default=None, help="also write the scores to this JSON file (never overwritten)")
    predict = commands.add_parser(
        "predict", help="predict masks, depth or normals for images", formatter_class=formatter
    )
    predict.add_argument("checkpoint", help="run directory or checkpoint file")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument(
        "--out",
        required=True,
        help="folder for <name>_mask.png and <name>_overlay.png (segmentation), <name>_depth.png (16-bit) "
        "and <name>_depth_preview.png (depth) or <name>_normals.png (RGB = 127.5 n + 127.5)",
    )
    predict.add_argument(
        "--depth-scale", type=float, default=1000.0, help="units per metre of the 16-bit depth PNGs (512 for 2D-3D-S)"
    )
    predict.add_argument("--force", action="store_true", help="replace existing output files")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``asml`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="asml", description="Adversarial Structure Matching for segmentation models.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    _add_compare(commands)
    _add_train_eval_predict(commands)
    _add_export(commands)
    _add_data(commands)
    return parser


def _demo_config(
    dataset: str, steps: int, out: Path, val_images: int | None, jobs: int, task: str = "segmentation"
) -> RunConfig:
    from asml.engine.config import RunConfig

    workers = 0 if jobs > 1 else 2  # runs side by side already fill the cores: loader processes would compete
    # U-Net for both: PSPNet's output stride 8 leaves an 8x8 map at 64 px, too coarse for thin parts.
    model = {"name": "unet", "encoder": "resnet18"}
    return RunConfig.model_validate(
        {
            "run_dir": str(out),
            "task": task,
            "model": model,
            "data": {"dataset": f"builtin:{dataset}", "size": 64, "crop_size": 64, "scale_range": [0.75, 1.5],
                     "batch_size": 8, "workers": workers, "val_images": val_images},
            "train": {"steps": steps, "eval_every": steps, "checkpoint_every": max(1, steps // 3),
                      "log_every": max(1, steps // 45)},
        }
    )  # fmt: skip


def _compare_and_report(
    config: RunConfig,
    losses: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    title: str,
    report_only: bool,
    jobs: int = 1,
) -> Path:
    from asml.engine.compare import aggregate, build_report, format_summary, run_grid
    from asml.engine.dense_compare import aggregate_regression, build_regression_report, format_regression_summary

    if not report_only:
        run_grid(config, losses, seeds, out, jobs)
    if config.task == "segmentation":
        path = build_report(out, losses, seeds, title)
        table = format_summary(aggregate(out, losses, seeds))
    else:
        path = build_regression_report(out, losses, seeds, title, config.task)
        table = format_regression_summary(aggregate_regression(out, losses, seeds, config.task))
    print(f"\n{title}\n" + table)
    print(f"report: {path}")
    return path


def _run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asml.engine.config import ConfigError

    out = Path(args.out)
    if args.long and args.steps is not None:
        raise ConfigError(f"--long trains {LONG_DEMO_STEPS} steps; give either --long or --steps, not both")
    steps = LONG_DEMO_STEPS if args.long else (args.steps or 450)
    segmentation = args.task == "segmentation"
    datasets = args.datasets or (["horses"] if segmentation else ["scenes"])
    losses = args.losses or list(DEMO_LOSSES if segmentation else REGRESSION_DEMO_LOSSES)
    for dataset in datasets:
        if (dataset == "scenes") == segmentation:
            raise ConfigError(
                f"built-in {dataset!r} does not hold {args.task}: use horses, riders or knights for segmentation, "
                "scenes for normals and depth"
            )
        folder = out / dataset if segmentation else out / f"{dataset}-{args.task}"
        config = _demo_config(dataset, steps, folder, args.val_images, args.jobs, args.task)
        versus = "CE vs ASM" if segmentation else "IID vs ASM"
        title = f"built-in {dataset}{'' if segmentation else f' ({args.task})'}, {steps} steps: {versus}"
        _compare_and_report(config, losses, args.seeds, folder, title, False, args.jobs)
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asml.engine.config import load_config

    config = load_config(args.config, args.overrides)
    title = args.title or Path(args.config).stem
    losses = args.losses or list(COMPARE_LOSSES if config.task == "segmentation" else REGRESSION_COMPARE_LOSSES)
    _compare_and_report(config, losses, args.seeds, Path(args.out), title, args.report_only, args.jobs)
    return 0


def _run_preview(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from asml.data.builtin import BuiltinSegmentation
    from asml.viz.preview import save_dataset_preview

    if args.count < 1:
        parser.error(f"--count must be >= 1, got {args.count}")
    try:
        dataset = BuiltinSegmentation(args.name, args.split, args.size, seed=args.seed)
        out = args.out or f"{args.name}-{args.split}.png"
        written = save_dataset_preview(dataset, out, args.count, dataset.class_names, overwrite=args.force)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    print(f"wrote {written} ({min(args.count, len(dataset))} samples of {args.name}/{args.split}, {args.size} px)")
    return 0


def _run_data_check(args: argparse.Namespace) -> int:
    from asml.data import DatasetError
    from asml.data.check import SplitReport, check_dataset, format_report
    from asml.engine.config import load_config
    from asml.engine.data import open_split
    from asml.engine.progress import ProgressBar

    config = load_config(args.config, args.overrides)
    if config.task != "segmentation":
        return _check_dense_data(config)
    reports: list[SplitReport] = []
    class_names: tuple[str, ...] = ()
    unopened = []
    for split in dict.fromkeys((config.data.train_split, config.data.val_split)):
        try:
            dataset = open_split(config.data, split)
        except DatasetError as error:  # e.g. listed ids without files: named together by the reader
            unopened.append(f"{split}: {error}")
            continue
        class_names = tuple(dataset.class_names)  # type: ignore[attr-defined]
        with ProgressBar(f"check {split}", len(dataset), unit="img") as bar:  # type: ignore[arg-type]
            ignore = getattr(dataset, "ignore_index", 255)
            reports.append(check_dataset(split, dataset, len(class_names), ignore, bar.advance))
    for message in unopened:
        print(message)
    if reports:
        print(format_report(reports, class_names))
    bad = len(unopened) + sum(len(report.problems) for report in reports)
    print(f"{bad} problem(s) found" if bad else "no problems found")
    return 1 if bad else 0


def _check_dense_data(config: RunConfig) -> int:
    """``asml data check`` for depth and normals: bad files, then the valid pixels per split."""
    from asml.data import DatasetError
    from asml.data.check import DenseSplitReport, check_dense_dataset, format_dense_report
    from asml.engine.data import open_split
    from asml.engine.progress import ProgressBar

    reports: list[DenseSplitReport] = []
    unopened = []
    for split in dict.fromkeys((config.data.train_split, config.data.val_split)):
        try:
            dataset = open_split(config.data, split, config.task)
        except DatasetError as error:
            unopened.append(f"{split}: {error}")
            continue
        with ProgressBar(f"check {split}", len(dataset), unit="img") as bar:  # type: ignore[arg-type]
            reports.append(check_dense_dataset(split, dataset, config.task, bar.advance))
    for message in unopened:
        print(message)
    if reports:
        print(format_dense_report(reports))
    bad = len(unopened) + sum(len(report.problems) for report in reports)
    print(f"{bad} problem(s) found" if bad else "no problems found")
    return 1 if bad else 0


def _run_train(args: argparse.Namespace) -> int:
    from asml.engine.config import load_config
    from asml.engine.trainer import train

    config = load_config(args.config, args.overrides)
    train(config, resume=args.resume, force=args.force)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from asml.engine.data import build_data
    from asml.engine.tasks import task_for
    from asml.engine.trainer import evaluate, load_model_from_checkpoint

    if args.json is not None and Path(args.json).exists():
        raise FileExistsError(f"{args.json} exists; choose another --json path")
    model, config, class_names = load_model_from_checkpoint(Path(args.run))
    task = task_for(config)
    data_config = config.data.model_copy(update=_parse_overrides(args.data, "data"))
    bundle = build_data(type(config.data).model_validate(data_config.model_dump()), config.task)
    device = next(model.parameters()).device
    result = evaluate(model, bundle, device, config.train.trimap_widths, task=task)
    print(task.table(result, class_names))
    if args.json is not None:
        Path(args.json).write_text(json.dumps(task.to_json(result, class_names), indent=1, allow_nan=False))
    return 0


def _parse_overrides(pairs: Sequence[str], section: str) -> dict[str, object]:
    import yaml

    from asml.engine.config import ConfigError

    parsed: dict[str, object] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        prefix = f"{section}."
        if not separator or not key.startswith(prefix):
            raise ConfigError(f"--{section} takes {section}.key=value pairs, got {pair!r}")
        parsed[key[len(prefix) :]] = yaml.safe_load(value)
    return parsed


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asml.engine.predict import predict_files
    from asml.engine.tasks import task_for
    from asml.engine.trainer import load_model_from_checkpoint

    model, config, _ = load_model_from_checkpoint(Path(args.checkpoint))
    task = task_for(config, args.depth_scale)
    for written in predict_files(model, [Path(p) for p in args.images], Path(args.out), task, args.force):
        print(f"wrote {written}")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asml.engine.config import ConfigError
    from asml.engine.export import export_segmenter
    from asml.engine.trainer import load_model_from_checkpoint

    if min(args.size) < 1:
        raise ConfigError(f"--size takes a positive height and width, got {args.size[0]} {args.size[1]}")
    model, config, class_names = load_model_from_checkpoint(Path(args.run))
    written = export_segmenter(model, Path(args.out), args.format, tuple(args.size), overwrite=args.force)
    outputs = {
        "segmentation": f"{len(class_names)} classes: logits",
        "depth": "depth: 1 channel of log-depth in metres (depth = exp(output))",
        "normals": "normals: 3 channels, to be normalised per pixel",
    }
    print(f"wrote {written} ({args.format}; {model.architecture}-{model.encoder}, {outputs[config.task]})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asml`` console script; returns the process exit code."""
    from asml.data.readers import DatasetError
    from asml.engine.checkpoint import CheckpointError
    from asml.engine.config import ConfigError
    from asml.engine.export import ExportError
    from asml.engine.trainer import NonFiniteLossError, RunDirectoryError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "data" and args.action == "preview":
        return _run_preview(parser, args)
    runners = {
        "train": _run_train,
        "eval": _run_eval,
        "predict": _run_predict,
        "demo": _run_demo,
        "compare": _run_compare,
        "data": _run_data_check,
        "export": _run_export,
    }
    try:
        return runners[args.command](args)
    except (ConfigError, DatasetError, CheckpointError, RunDirectoryError, ExportError, FileExistsError) as error:
        print(f"asml {args.command}: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"asml {args.command}: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
