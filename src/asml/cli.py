"""The ``asml`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from asml.engine.quick_demo import LOSSES, QuickDemoSettings


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = QuickDemoSettings()
    demo = commands.add_parser(
        "demo",
        help="train a small segmenter with ASM on generated data and print its losses",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--loss", choices=LOSSES, default=defaults.loss, help="segmenter loss")
    demo.add_argument("--steps", type=int, default=defaults.steps, help="training steps")
    demo.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per step")
    demo.add_argument("--image-size", type=int, default=defaults.image_size, help="side of the square images")
    demo.add_argument("--num-classes", type=int, default=defaults.num_classes, help="classes incl. background")
    demo.add_argument("--seed", type=int, default=defaults.seed, help="seed of model and data")
    demo.add_argument("--log-every", type=int, default=defaults.log_every, help="print losses every N steps")


def _add_data(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from asml.data.builtin import BUILTIN_DATASETS, SPLIT_SIZES

    data = commands.add_parser("data", help="look at the built-in datasets")
    actions = data.add_subparsers(dest="action", required=True)
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``asml`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="asml", description="Adversarial Structure Matching for segmentation models.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    _add_data(commands)
    return parser


def _run_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from asml.engine.quick_demo import run_quick_demo

    try:
        settings = QuickDemoSettings(
            loss=args.loss,
            steps=args.steps,
            batch_size=args.batch_size,
            image_size=args.image_size,
            num_classes=args.num_classes,
            seed=args.seed,
            log_every=args.log_every,
        )
    except ValueError as error:
        parser.error(str(error))
    run_quick_demo(settings)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asml`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _run_demo(parser, args)
    return _run_preview(parser, args)


if __name__ == "__main__":
    sys.exit(main())
