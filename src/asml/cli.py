"""The ``asml`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from asml.engine.quick_demo import LOSSES, QuickDemoSettings, run_quick_demo


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``asml`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="asml", description="Adversarial Structure Matching for segmentation models.")
    commands = parser.add_subparsers(dest="command", required=True)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asml`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
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


if __name__ == "__main__":
    sys.exit(main())
