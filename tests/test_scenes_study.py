"""The scenes study script (benchmarks/scenes_study.py) end to end at two steps per run: it trains the
missing runs once and reports paired differences that match the runs' own files."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from benchmark_scripts import load_benchmark


def load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_benchmark("scenes_study", monkeypatch)


@pytest.mark.slow
def test_depth_cells_train_once_and_report_paired_differences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    study = load_script(monkeypatch)
    out, docs = tmp_path / "runs", tmp_path / "docs"
    arguments = ["--only", "depth", "--seeds", "0", "--steps", "2", "--out", str(out), "--docs", str(docs)]
    assert study.main(arguments) == 0
    assert "3 runs to train" in capsys.readouterr().out
    assert study.main(arguments) == 0
    assert "0 runs to train" in capsys.readouterr().out
    results = json.loads((docs / "results.json").read_text())
    cell = results["scenes-depth/unet-r18::asm+iid"]
    finals = {
        name: json.loads((out / "runs" / "scenes-depth_unet-r18" / f"{name}-seed0" / "final_metrics.json").read_text())
        for name in ("asm_iid", "iid")
    }
    for key, scale in (("abs_rel", 1), ("rmse", 1), ("delta1", 100), ("delta3", 100)):
        expected = scale * (finals["asm_iid"][key] - finals["iid"][key])
        assert cell["paired"]["iid"][key]["values"] == pytest.approx([expected], abs=1e-9), key
    page = (docs / "README.md").read_text()
    assert "## scenes-depth/unet-r18" in page and "### Paired differences to IID at lr 0.01" in page
    assert (docs / "runs" / "scenes-depth_unet-r18" / "asm_iid-seed0.json").is_file()
