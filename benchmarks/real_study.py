"""The real-data study: CE (learning-rate sweep), the released ASM+CE and the default ASM+CE on sets
built from real scans (``benchmarks/real_data.py``) and on the built-in context set (knights), paired
seeds, resumable.

    .venv/bin/python benchmarks/real_study.py                 # build the sets if missing, run what is missing, report
    .venv/bin/python benchmarks/real_study.py --report-only   # rebuild docs/real from the records

A 450-step run at 128 px takes about 8-9 minutes with one thread (two runs at a time on 2 cores).
The report goes to ``docs/real/`` (one small versioned record per run in ``docs/real/runs/``), the
run folders to ``--out`` (default ``study-real/``), the built sets to ``--data`` (default ``data/``);
none of these two is versioned. The cells are data in ``study/real.py``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study package next to this script
import real_data
import study.runs
from study.cells import BASES, Cell
from study.real import REAL_CELLS
from study.real_report import report
from study.runs import parse_study_arguments, run_missing, study_parser

ROOT = Path(__file__).resolve().parents[1]


def set_builds(cells: list[Cell]) -> dict[str, tuple[str, ...]]:
    """Each folder the cells read -> real_data.py's arguments that build it (its base's ``build``, by
    default the folder's name); refuses two bases that would build one folder two ways."""
    builds: dict[str, tuple[str, ...]] = {}
    for cell in cells:
        base = BASES[cell.base]
        if "folder" not in base:
            continue
        arguments = tuple(base.get("build", [base["folder"]]))
        if builds.setdefault(base["folder"], arguments) != arguments:
            raise SystemExit(
                f"[real] base {cell.base!r} builds folder {base['folder']!r} with {list(arguments)}, another "
                f"base with {list(builds[base['folder']])}: give one of them its own folder in study/cells.py"
            )
    return builds


def ensure_sets(data: Path, builds: dict[str, tuple[str, ...]]) -> None:
    """Build each set the cells read that is not on disk yet (from its package, see real_data.py):
    ``builds`` maps a folder to real_data.py's arguments for it (by default, the folder's name)."""
    for folder, arguments in sorted(builds.items()):
        if not (data / folder / "manifest.json").is_file():
            print(f"[real] building {data / folder}", flush=True)
            if real_data.main([*arguments, "--out", str(data / folder)]) != 0:
                raise SystemExit(f"[real] could not build {folder}; see the error above")


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__, ROOT / "study-real", ROOT / "docs" / "real")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="where the built sets are (or go)")
    bases = sorted({cell.base for cell in REAL_CELLS})
    parser.add_argument("--only", nargs="+", choices=bases, default=None, help="bases to run (default: all)")
    args = parse_study_arguments(parser, argv)
    study.runs.DATA_DIR = args.data
    cells = [cell for cell in REAL_CELLS if args.only is None or cell.base in args.only]
    if args.seeds is not None:
        cells = [replace(cell, seeds=tuple(args.seeds)) for cell in cells]
    if not args.report_only:
        ensure_sets(args.data, set_builds(cells))
        run_missing(args.out, args.docs, cells, args.jobs, args.threads, args.steps)
    # The report covers every cell at its declared seeds, whatever this call trained (--only, --seeds):
    # a partial call must not rewrite docs/ with a part of the study.
    report(args.docs, REAL_CELLS, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
