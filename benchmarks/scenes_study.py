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

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study package next to this script
from study.runs import parse_study_arguments, run_missing, study_parser
from study.scenes import SCENE_CELLS, report

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__, ROOT / "study-scenes", ROOT / "docs" / "scenes")
    groups = sorted({cell.group for cell in SCENE_CELLS})
    parser.add_argument("--only", nargs="+", choices=groups, default=None, help="groups to run (default: all)")
    args = parse_study_arguments(parser, argv)
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
