"""The ablation study script (benchmarks/ablation.py) end to end at one step per run: it trains the
missing runs, resumes nothing twice, and reports paired differences that match the runs' own files."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from benchmark_scripts import load_benchmark


def load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_benchmark("ablation", monkeypatch)


@pytest.mark.slow
def test_study_trains_missing_runs_once_and_reports_paired_differences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ablation = load_script(monkeypatch)
    out, docs = tmp_path / "runs", tmp_path / "docs"
    arguments = ["--only", "hinge pixels", "--seeds", "0", "--steps", "2", "--out", str(out), "--docs", str(docs)]
    assert ablation.main(arguments) == 0
    # The two cells, and the three they are compared with: CE, the released and the default ASM+CE.
    assert "5 runs to train" in capsys.readouterr().out
    assert ablation.main(arguments) == 0
    assert "0 runs to train" in capsys.readouterr().out  # finished runs are kept
    results = json.loads((docs / "results.json").read_text())
    base = "horses/unet-r18"
    names = {"ce", "asm+ce", "asm+ce conv1-9", "asm+ce hinge@errors", "asm+ce hinge@errors w_adv=0.1"}
    assert set(results) == {f"{base}::{name}" for name in names}
    cell = results[f"{base}::asm+ce hinge@errors"]
    final = {
        name: json.loads((path / "final_metrics.json").read_text())
        for name, path in [
            ("cell", out / "runs" / "horses_unet-r18" / "asm_ce_hinge_at_errors-seed0"),
            ("ce", out / "runs" / "horses_unet-r18" / "ce-seed0"),
            ("released", out / "runs" / "horses_unet-r18" / "asm_ce-seed0"),
            ("default", out / "runs" / "horses_unet-r18" / "asm_ce_conv1-9-seed0"),
        ]
    }
    expected = 100 * (final["cell"]["mIoU"] - final["ce"]["mIoU"])
    assert cell["paired"]["ce"]["mIoU"]["values"] == pytest.approx([expected], abs=1e-9)
    expected = 100 * (final["cell"]["BF"] - final["released"]["BF"])
    assert cell["paired"]["asm+ce"]["BF"]["values"] == pytest.approx([expected], abs=1e-9)
    expected = 100 * (final["cell"]["mean_boundary_IoU"] - final["default"]["mean_boundary_IoU"])
    assert cell["paired"]["default"]["mean_boundary_IoU"]["values"] == pytest.approx([expected], abs=1e-9)
    assert "## Paired differences to the default ASM+CE" in (docs / "results.md").read_text()
    assert cell["hinge_errors"]["mean"] is not None and cell["hinge_all"]["mean"] is not None
    table = (docs / "results.md").read_text()
    assert "| horses/unet-r18 | asm+ce hinge@errors | 1 |" in table
    assert (docs / "paired_differences.png").is_file() and (docs / "hinge_curves.png").is_file()
    assert not (out / "runs" / "horses_unet-r18" / "ce-seed0" / "checkpoints").exists()  # dropped when done

    # The versioned records alone rebuild the same report: the run folders are not needed.
    assert len(list((docs / "runs").rglob("*.json"))) == 5
    moved = tmp_path / "moved-runs"
    out.rename(moved)
    assert ablation.main([*arguments, "--report-only"]) == 0
    assert json.loads((docs / "results.json").read_text()) == results
    moved.rename(out)

    # A run folder made with another setting is never mixed in, nor overwritten.
    with pytest.raises(SystemExit, match="another config"):
        ablation.main([*arguments[:5], "3", "--out", str(out), "--docs", str(docs)])
    with pytest.raises(SystemExit):  # smoke settings must not touch the study's folders
        ablation.main(["--steps", "2"])


def test_every_asm_cell_pins_the_released_settings_it_does_not_vary(monkeypatch: pytest.MonkeyPatch) -> None:
    from asml.losses import ASM_DEFAULTS, RELEASED_ASM

    ablation = load_script(monkeypatch)
    as_lists = {key: list(value) if isinstance(value, tuple) else value for key, value in RELEASED_ASM.items()}
    assert as_lists == ablation.RELEASED_ASM
    for cell in ablation.CELLS:
        if cell.loss.startswith("asm"):  # a change of the library's defaults must change no cell
            assert set(RELEASED_ASM) | set(ASM_DEFAULTS) <= set(cell.asm), cell.key()


def test_training_order_goes_seed_by_seed_within_consecutive_cells_of_one_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ablation = load_script(monkeypatch)
    cells = [
        ablation.Cell("a", "g", "horses/unet-r18", "ce", seeds=(0, 1)),
        ablation.Cell("b", "g", "horses/unet-r18", "ce", seeds=(0, 1, 2)),
        ablation.Cell("c", "g", "riders/unet-r18", "ce", seeds=(0, 1)),
        ablation.Cell("d", "g", "horses/unet-r18", "ce", seeds=(0,)),
    ]
    order = [(cell.name, seed) for cell, seed in ablation.training_order(cells)]
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("c", 0), ("c", 1), ("d", 0)]


def test_seeds_beyond_three_are_trained_after_every_cell_has_three(monkeypatch: pytest.MonkeyPatch) -> None:
    ablation = load_script(monkeypatch)
    cells = [
        ablation.Cell("a", "g", "horses/unet-r18", "ce", seeds=(0, 1, 2, 3, 4)),
        ablation.Cell("b", "g", "riders/unet-r18", "ce", seeds=(0, 1)),
        ablation.Cell("c", "g", "riders/unet-r18", "ce", seeds=(0, 3)),
    ]
    order = [(cell.name, seed) for cell, seed in ablation.training_order(cells)]
    assert order == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("c", 0), ("b", 1), ("a", 3), ("a", 4), ("c", 3)]


def test_cells_are_compared_with_ce_the_released_and_the_default_asm_of_their_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ablation = load_script(monkeypatch)
    base, other_base = "horses/unet-r18", "riders/unet-r18"
    cell = {
        name: ablation.Cell(name, "g", base, "ce" if name.startswith("ce") else "asm+ce")
        for name in ("ce", "ce lr=0.02", ablation.RELEASED, ablation.DEFAULT, "variant")
    }
    lone = ablation.Cell("variant", "g", other_base, "asm+ce")  # its base has no CE, released or default
    cells = [*cell.values(), lone]

    def names(of: object) -> dict[str, tuple[str, str]]:
        return {label: (other.base, other.name) for label, other in ablation.comparisons(of, cells).items()}

    assert names(cell["ce"]) == {}
    assert names(cell["ce lr=0.02"]) == {"ce": (base, "ce")}
    assert names(cell[ablation.RELEASED]) == {"ce": (base, "ce")}
    assert names(cell[ablation.DEFAULT]) == {"ce": (base, "ce"), "asm+ce": (base, ablation.RELEASED)}
    assert names(cell["variant"]) == {
        "ce": (base, "ce"),
        "asm+ce": (base, ablation.RELEASED),
        "default": (base, ablation.DEFAULT),
    }
    assert names(lone) == {}


def test_a_record_made_before_an_option_existed_matches_a_cell_that_pins_its_class_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_script(monkeypatch)  # puts benchmarks/ on the path for the study package
    from study.cells import CELLS, DEFAULT
    from study.runs import _resolved, _same_config, run_config

    cell = next(c for c in CELLS if c.name == DEFAULT and c.base == "horses/unet-r18")
    assert cell.asm["analyzer_every"] == 1  # pinned: the cell ran before the option existed
    saved = _resolved(run_config(cell, 0, Path("elsewhere")))
    older = {
        **saved,
        "loss": {**saved["loss"], "asm": {k: v for k, v in saved["loss"]["asm"].items() if k != "analyzer_every"}},
    }
    assert _same_config(older, cell, 0, None)
    other = {**saved, "loss": {**saved["loss"], "asm": {**saved["loss"]["asm"], "analyzer_every": 2}}}
    assert not _same_config(other, cell, 0, None)
    assert not _same_config(saved, cell, 1, None)  # another seed is another run
