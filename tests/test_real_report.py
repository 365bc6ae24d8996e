"""The real-data study's report (benchmarks/study/real_report.py) from hand-written records: the best
CE is found by mean mIoU, ASM cells are paired with it seed by seed, and the class shares and error
splits are computed from the records' confusion matrices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark

BASE = "brain/unet-r18"
NAMES = ["outside", "lobe", "insula"]


def _record(docs: Path, cell: object, seed: int, miou: float, bf: float, confusion: list[list[int]]) -> None:
    from study.runs import _resolved, record_path, run_config

    co_occurring = [[value if t != p else 0 for p, value in enumerate(row)] for t, row in enumerate(confusion)]
    absent = [[0] * len(row) for row in confusion]
    absent[2][0], co_occurring[2][0] = co_occurring[2][0], 0  # insula predicted "outside" where none is
    final = {
        "mIoU": miou, "BF": bf, "mean_boundary_IoU": miou / 2, "trimap_mIoU": [miou / 3],
        "IoU": [0.9, miou, 0.0], "BF_per_class": [0.8, bf, None], "class_names": NAMES,
        "confusion_matrix": confusion, "co_occurring_confusion": co_occurring, "absent_confusion": absent,
        "wrong_pixels": sum(map(sum, co_occurring)) + sum(map(sum, absent)),
    }  # fmt: skip
    summary = {
        "config": _resolved(run_config(cell, seed, Path())),  # type: ignore[arg-type]
        "final": final,
        "timing": {"training_seconds": 90.0, "steps": 450},
        "train": [{"step": 25, "loss": 1.0, "hinge_errors": 0.5}, {"step": 450, "loss": 0.5, "hinge_errors": 1.0}],
    }
    path = record_path(docs, cell, seed)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))


def test_report_pairs_asm_with_the_best_ce_and_splits_errors_by_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_benchmark("real_study", monkeypatch)  # puts benchmarks/ on the path for the study package
    from study.cells import Cell
    from study.real_report import report

    ce = Cell("ce", "baseline lr", BASE, "ce", seeds=(0, 1))
    ce_fast = Cell("ce lr=0.03", "baseline lr", BASE, "ce", optim={"lr": 0.03}, seeds=(0, 1))
    asm = Cell("asm+ce released lr=0.03", "loss", BASE, "asm+ce", {"matched_layers": ["conv1", "conv2"]},
               optim={"lr": 0.03}, seeds=(0, 1))  # fmt: skip
    # 100 valid pixels: 70 outside, 25 lobe, 5 insula; insula wrong as "outside" (absent) or "lobe".
    confusion = [[68, 2, 0], [3, 22, 0], [4, 1, 0]]
    for seed, (ce_miou, fast_miou, asm_miou) in enumerate([(0.50, 0.60, 0.65), (0.52, 0.70, 0.66)]):
        _record(tmp_path, ce, seed, ce_miou, 0.40, confusion)
        _record(tmp_path, ce_fast, seed, fast_miou, 0.45 + seed / 10, confusion)
        _record(tmp_path, asm, seed, asm_miou, 0.50, confusion)

    table = report(tmp_path, [ce, ce_fast, asm])

    assert table["_best_ce"][BASE] == ce_fast.key()  # 65.0 mean mIoU against 51.0
    paired = table[asm.key()]["paired"]["best ce"]
    assert paired["mIoU"]["values"] == pytest.approx([5.0, -4.0])  # 65 - 60, 66 - 70
    assert paired["mIoU"]["better"] == 1
    assert paired["BF"]["values"] == pytest.approx([5.0, -5.0])
    assert table[asm.key()]["pixel_share"] == pytest.approx([70.0, 25.0, 5.0])
    # Wrong pixels: 2 + 3 + 1 with a class in the image, 4 with the absent one, of 100.
    assert table[asm.key()]["co_occurring_errors"]["mean"] == pytest.approx(6.0)
    assert table[asm.key()]["absent_errors"]["mean"] == pytest.approx(4.0)
    assert table[asm.key()]["absent"][2][0] == 8  # summed over the two seeds
    page = (tmp_path / "README.md").read_text()
    assert f"| {BASE} | 0.03, 65.0 ± 7.1, 50.0 ± 7.1 | asm+ce released lr=0.03 | +0.5 ± 6.4 (1/2) |" in page
    assert "| insula | 5.0 | 0.0 | - |" in page
    assert (tmp_path / "paired_vs_best_ce.png").stat().st_size > 0
    assert (tmp_path / "training_curves.png").stat().st_size > 0
    assert "curves" not in json.loads((tmp_path / "results.json").read_text())[asm.key()]


def test_a_partial_call_reports_every_cell_with_records_not_only_the_bases_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = load_benchmark("real_study", monkeypatch)
    brain = next(cell for cell in study.REAL_CELLS if cell.base == BASE)
    other = next(cell for cell in study.REAL_CELLS if cell.base != BASE)
    confusion = [[68, 2, 0], [3, 22, 0], [4, 1, 0]]
    _record(tmp_path, brain, 0, 0.5, 0.4, confusion)
    _record(tmp_path, other, 0, 0.6, 0.3, confusion)
    arguments = ["--report-only", "--only", BASE, "--seeds", "0", "--docs", str(tmp_path),
                 "--out", str(tmp_path / "out")]  # fmt: skip
    assert study.main(arguments) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results[other.key()]["mIoU"]["mean"] == pytest.approx(60.0)
    assert results[other.key()]["missing_seeds"] == [seed for seed in other.seeds if seed != 0]
    assert results[brain.key()]["seeds"] == [0]


def test_each_set_is_built_with_its_bases_arguments_and_two_ways_of_one_folder_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = load_benchmark("real_study", monkeypatch)
    from study.cells import BASES, Cell

    builds = study.set_builds(study.REAL_CELLS)
    assert builds["brain"] == ("brain",)
    assert builds["brain-256px"] == ("brain", "--size", "256")
    assert builds["nuclei"] == ("nuclei",)
    assert "knights" not in builds  # built in memory (asml.data.builtin), not on disk
    monkeypatch.setitem(BASES, "brain/clash", {**BASES[BASE], "build": ["brain", "--size", "64"]})
    with pytest.raises(SystemExit, match=r"brain/clash.*'brain'.*--size"):
        study.set_builds([Cell("ce", "baseline lr", BASE, "ce"), Cell("ce", "baseline lr", "brain/clash", "ce")])
