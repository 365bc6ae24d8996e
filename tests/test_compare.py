"""asml compare: a tiny grid writes every report file, the HTML points only at files that exist,
the tables agree with results.json, and a second call resumes instead of retraining."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from asml.cli import main

CONFIG = """
model: {name: unet, encoder: resnet18}
data: {dataset: "builtin:riders", size: 32, crop_size: 32, batch_size: 2, workers: 0, val_images: 3}
train: {steps: 2, eval_every: 2, checkpoint_every: 2, log_every: 1}
"""
REPORT_FILES = {
    "results.json", "report.html", "bf_gain_per_class.png", "trimap_curves.png",
    "training_curves.png", "predictions.png", "analyzer_view.png",
}  # fmt: skip


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("compare")
    config = folder / "tiny.yaml"
    config.write_text(CONFIG)
    out = folder / "report"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["compare", str(config), "--losses", "ce", "asm+ce", "--seeds", "0", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_every_report_file_is_written(compared: tuple[Path, str]) -> None:
    out, _ = compared
    assert {p.name for p in out.iterdir()} >= REPORT_FILES
    for run in ("ce-seed0", "asm_ce-seed0"):
        assert (out / "runs" / run / "final_metrics.json").is_file()


def test_the_html_references_only_files_that_exist(compared: tuple[Path, str]) -> None:
    out, _ = compared
    page = (out / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 5
    assert all((out / source).is_file() for source in sources)
    assert "http" not in page  # opens without a server or network


def test_the_terminal_table_matches_results_json(compared: tuple[Path, str]) -> None:
    out, printed = compared
    results = json.loads((out / "results.json").read_text())
    for loss in ("ce", "asm+ce"):
        row = next(line for line in printed.splitlines() if line.startswith(loss + " "))
        miou = float(row.split()[1])
        assert miou == pytest.approx(100 * results["summary"][loss]["mIoU"]["mean"], abs=0.006)
        run = results["runs"][f"{loss}/seed0"]
        assert results["summary"][loss]["mIoU"]["mean"] == pytest.approx(run["mIoU"])
        assert run["seconds_per_step"] > 0


def test_a_second_call_resumes_and_report_only_rebuilds(
    compared: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = compared
    config = out.parent / "tiny.yaml"
    before = (out / "runs" / "ce-seed0" / "final_metrics.json").read_text()
    assert main(["compare", str(config), "--losses", "ce", "asm+ce", "--seeds", "0", "--out", str(out)]) == 0
    assert "finished earlier, kept" in capsys.readouterr().out
    assert (out / "runs" / "ce-seed0" / "final_metrics.json").read_text() == before
    (out / "report.html").unlink()
    assert (
        main(["compare", str(config), "--losses", "ce", "asm+ce", "--seeds", "0", "--out", str(out), "--report-only"])
        == 0
    )
    assert (out / "report.html").is_file()
    assert (
        main(["compare", str(config), "--losses", "ce", "gan", "--seeds", "0", "--out", str(out), "--report-only"]) == 2
    )


def test_demo_runs_its_comparison_and_prints_the_report_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--steps",
                "1",
                "--datasets",
                "riders",
                "--losses",
                "ce",
                "asm",
                "--val-images",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "built-in riders, 1 steps: CE vs ASM" in printed and f"report: {out / 'riders' / 'report.html'}" in printed
    results = json.loads((out / "riders" / "results.json").read_text())
    assert results["losses"] == ["ce", "asm"] and results["class_names"] == ["background", "horse", "rider", "lance"]
    # Two runs at a time (the demo's default): each an `asml train` process with its own log.
    for run in ("ce-seed0", "asm-seed0"):
        assert "train 1/1" in (out / "riders" / "runs" / f"{run}.log").read_text()
        assert (out / "riders" / "runs" / run / "final_metrics.json").is_file()


def test_progress_polling_skips_a_line_still_being_written(tmp_path: Path) -> None:
    from asml.engine.compare import _latest_step

    rows = [{"step": 10, "kind": "train", "loss": 0.5}, {"step": 10, "kind": "eval", "mIoU": 0.4}]
    text = "".join(json.dumps(row) + "\n" for row in rows) + '{"step": 20, "kind": "train", "lo'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert _latest_step(tmp_path) == 10
    (tmp_path / "metrics.jsonl").write_text(text + 'ss": 0.4}\n')
    assert _latest_step(tmp_path) == 20
    assert _latest_step(tmp_path / "not-started") == 0


def test_parallel_runs_are_refused_under_torchrun_and_a_run_without_checkpoints_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asml.engine.compare import _run_config, run_directory, run_grid
    from asml.engine.config import ConfigError, RunConfig

    base = RunConfig.model_validate({"run_dir": str(tmp_path / "unused")})
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="under torchrun use --jobs 1"):
        run_grid(base, ["ce"], [0], tmp_path, jobs=2)
    run_dir = run_directory(tmp_path, "asm+ce", 3)
    assert _run_config(base, tmp_path, "asm+ce", 3)[1] is False
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("stopped before its first checkpoint")
    config, resume = _run_config(base, tmp_path, "asm+ce", 3)
    assert resume and config.seed == 3 and config.loss.name == "asm+ce" and config.run_dir == str(run_dir)
