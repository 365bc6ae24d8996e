"""The ASM ablation study: which parts of Adversarial Structure Matching earn their cost, with paired seeds.

Every cell is one setting trained with several seeds; the same seed means the same initialisation and
data order in every cell, so cells are compared in pairs (per-seed differences, then mean and spread).
Runs are ordinary ``asml train`` runs (one subprocess each, ``--jobs`` at a time); a finished run is
kept, an interrupted one resumed, so the study continues where it stopped when started again.

    .venv/bin/python benchmarks/ablation.py                     # run what is missing, then report
    .venv/bin/python benchmarks/ablation.py --report-only       # rebuild docs/ablation from the runs
    .venv/bin/python benchmarks/ablation.py --only length riders  # some groups only

All 161 runs take about five and a half hours on 2 CPU cores (two runs at a time, one thread each: 1.4x the
throughput of one run on two threads for these small models; a 450-step U-Net-ResNet-18 run takes 3-5
minutes, a PSPNet, FCN or Lite0 run 1-2). The cells are listed, and trained, in the order of what they
decide, seed by seed within a base, so a study cut short still holds whole paired comparisons; seeds 3
and 4 (of the cells that have five) come after every cell has its first three. The report lists the
cells left out.

The cells are data, in ``study/cells.py`` (the runs in ``study/runs.py``, the report in
``study/report.py``); each run, and each cell at the end of a call, prints what it cost.

The report (tables, paired differences, plots) goes to ``docs/ablation/``, with one small record per
finished run in ``docs/ablation/runs/`` (versioned: the report is rebuilt from these alone); the run
folders go to ``--out`` (default ``study-ablation/``, not versioned, checkpoints dropped once a run
is done).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study package next to this script
from study.cells import CELLS, DEFAULT, GROUPS, RELEASED, RELEASED_ASM, Cell
from study.report import comparisons, report
from study.runs import parse_study_arguments, run_missing, study_parser, training_order

__all__ = ["CELLS", "DEFAULT", "RELEASED", "RELEASED_ASM", "Cell", "comparisons", "main", "training_order"]

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__, ROOT / "study-ablation", ROOT / "docs" / "ablation")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=None, help="groups to run (default: all)")
    args = parse_study_arguments(parser, argv)
    cells = [cell for cell in CELLS if args.only is None or cell.group in args.only]
    if args.only is not None:  # a group's pairs need their references
        references = [other for cell in cells for other in comparisons(cell, CELLS).values()]
        cells += [cell for cell in CELLS if cell in references and cell not in cells]
    if args.seeds is not None:
        cells = [replace(cell, seeds=tuple(args.seeds)) for cell in cells]
    if not args.report_only:
        run_missing(args.out, args.docs, cells, args.jobs, args.threads, args.steps)
    report(args.docs, cells if args.seeds is not None else CELLS, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
