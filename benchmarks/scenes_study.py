"""The surface-normals study on builtin:scenes: does ASM gain on the fine angle thresholds, and at what cost?

Paired seeds (same initialisation and data order in every cell), ordinary ``asml train`` runs, two at
a time, resumable: a finished run is kept, an interrupted one resumed (the ablation study's
machinery, ``study/runs.py``). The cells are data in ``study/scenes.py``.

    .venv/bin/python benchmarks/scenes_study.py                 # run what is missing, then report
    .venv/bin/python benchmarks/scenes_study.py --report-only   # rebuild docs/scenes from the records

A 900-step run takes about 6-8 minutes with one thread (two runs at a time on 2 cores); the 21 runs
about an hour and a half. The report goes to ``docs/scenes/`` (one small versioned record per run in
``docs/scenes/runs/``), the run folders to ``--out`` (default ``study-scenes/``, not versioned).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study package next to this script
from study.runs import run_missing
from study.scenes import SCENE_CELLS, report

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "study-scenes", help="runs folder (reused to resume)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "scenes", help="where the report goes")
    groups = sorted({cell.group for cell in SCENE_CELLS})
    parser.add_argument("--only", nargs="+", choices=groups, default=None, help="groups to run (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override every cell's seeds (smoke tests)")
    parser.add_argument("--steps", type=int, default=None, help="override every run's length (smoke tests only)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    args = parser.parse_args(argv)
    smoke = args.steps is not None or args.seeds is not None
    if smoke and (args.out == parser.get_default("out") or args.docs == parser.get_default("docs")):
        parser.error("--steps and --seeds are for smoke tests: give --out and --docs away from the study's")
    cells = [cell for cell in SCENE_CELLS if args.only is None or cell.group in args.only]
    if args.only is not None:  # every cell is compared with its base's IID
        cells += [c for c in SCENE_CELLS if c.name == "iid" and c.base in {x.base for x in cells} and c not in cells]
    if args.seeds is not None:
        cells = [replace(cell, seeds=tuple(args.seeds)) for cell in cells]
    if not args.report_only:
        run_missing(args.out, args.docs, cells, args.jobs, args.threads, args.steps)
    report(args.docs, cells, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
