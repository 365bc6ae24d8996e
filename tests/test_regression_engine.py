"""Depth and surface normals through the whole engine: config, train, resume, eval, predict, DDP."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from asml.cli import main
from asml.data.scenes import render_scene
from asml.engine.config import ConfigError, RunConfig, load_config
from asml.engine.trainer import load_model_from_checkpoint, train

TINY = {
    "model": {"name": "unet", "encoder": "resnet18"},
    "data": {"dataset": "builtin:scenes", "size": 32, "crop_size": 32, "batch_size": 2, "workers": 0, "val_images": 3},
    "train": {"steps": 4, "eval_every": 2, "checkpoint_every": 1, "log_every": 1, "keep_last": 4},
}


def tiny_config(run_dir: Path, task: str, **sections: dict[str, object]) -> RunConfig:
    tree: dict[str, object] = {"run_dir": str(run_dir), "task": task, **{k: dict(v) for k, v in TINY.items()}}
    for name, values in sections.items():
        tree[name] = {**tree.get(name, {}), **values}  # type: ignore[dict-item]
    return RunConfig.model_validate(tree)


def test_regression_tasks_take_their_own_defaults_and_refuse_the_other_kind() -> None:
    config = load_config(None, ["task=normals", "data.dataset=builtin:scenes"])
    assert (config.loss.name, config.train.best_metric) == ("asm+iid", "within_11.25")
    assert load_config(None, ["task=depth"]).train.best_metric == "delta1"
    assert load_config(None, []).loss.name == "asm+ce"  # segmentation unchanged
    with pytest.raises(ConfigError, match="'ce' is for segmentation; task normals takes iid, asm, asm\\+iid or gan"):
        load_config(None, ["task=normals", "loss.name=ce"])
    with pytest.raises(ConfigError, match="'iid' is for depth and normals"):
        load_config(None, ["loss.name=iid"])
    with pytest.raises(ConfigError, match="'cosine' is not a depth loss; choose l1 or l2"):
        load_config(None, ["task=depth", "loss.iid=cosine"])


def test_data_and_best_metric_that_do_not_fit_the_task_are_refused_before_a_run_exists(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'builtin:horses' holds label maps; task normals reads builtin:scenes"):
        train(tiny_config(tmp_path / "a", "normals", data={"dataset": "builtin:horses"}))
    with pytest.raises(ConfigError, match="holds depth and surface normals: set task=depth or task=normals"):
        train(tiny_config(tmp_path / "b", "segmentation"))
    with pytest.raises(ConfigError, match="'mIoU' is not a depth score; choose one of abs_rel"):
        train(tiny_config(tmp_path / "c", "depth", train={"best_metric": "mIoU"}))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("task", "loss", "keys"),
    [
        ("normals", "asm+iid", {"mean_angle", "median_angle", "within_2.8125", "within_11.25", "within_30"}),
        ("normals", "gan", {"mean_angle", "within_5.625"}),
        ("depth", "iid", {"abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta3"}),
        ("depth", "asm", {"abs_rel", "delta1"}),
    ],
)
def test_a_short_run_logs_the_tasks_scores_and_keeps_the_best_checkpoint(
    tmp_path: Path, task: str, loss: str, keys: set[str]
) -> None:
    run_dir = tmp_path / "run"
    summary = train(tiny_config(run_dir, task, loss={"name": loss}))
    assert keys <= set(summary) and all(math.isfinite(summary[k]) for k in keys)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert keys <= set(final) and final["pixels"] > 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if line["kind"] == "eval"]
    assert [line["step"] for line in evals] == [2, 4]
    metric = "within_11.25" if task == "normals" else "delta1"
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)
    scores = {line["step"]: line[metric] for line in evals}
    assert best["best"]["value"] == max(scores.values())  # higher is better for both defaults
    trained = [line for line in lines if line["kind"] == "train"]
    assert all(math.isfinite(line["loss"]) for line in trained)
    if loss.startswith("asm"):
        assert {"matching", "adversarial", "reconstruction"} <= set(trained[0])


def test_a_lower_is_better_best_metric_keeps_the_lowest(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, "normals", loss={"name": "iid"}, train={"best_metric": "mean_angle"}))
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    angles = [line["mean_angle"] for line in evals if line["kind"] == "eval"]
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)
    assert best["best"]["value"] == min(angles)


def final_weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)
    return {
        **{f"model.{k}": v for k, v in state["model"].items()},
        **{f"loss.{k}": v for k, v in state["loss"].items() if isinstance(v, torch.Tensor)},
    }


def test_a_normals_run_resumed_from_a_middle_checkpoint_ends_with_the_same_weights(tmp_path: Path) -> None:
    import shutil

    train(tiny_config(tmp_path / "straight", "normals"))
    halted = tmp_path / "halted"  # as if stopped after step 2: only that checkpoint exists
    (halted / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "straight" / "checkpoints" / "step_00000002.pt", halted / "checkpoints")
    train(tiny_config(halted, "normals"), resume=True)
    expected, got = final_weights(tmp_path / "straight", 4), final_weights(halted, 4)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


def test_eval_and_predict_write_what_the_network_predicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for task in ("depth", "normals"):
        run_dir = tmp_path / task
        train(tiny_config(run_dir, task, loss={"name": "iid"}, train={"steps": 2}))
        capsys.readouterr()
        assert main(["eval", str(run_dir), "--json", str(tmp_path / f"{task}.json")]) == 0
        printed = capsys.readouterr().out
        assert ("angle mean" in printed) if task == "normals" else ("abs_rel" in printed)
        assert json.loads((tmp_path / f"{task}.json").read_text())["pixels"] > 0

        scene = render_scene(5, 32)
        picture = tmp_path / "scene.png"
        Image.fromarray(scene.image.permute(1, 2, 0).numpy()).save(picture)
        out = tmp_path / f"pred_{task}"
        assert main(["predict", str(run_dir), str(picture), "--out", str(out), "--depth-scale", "512"]) == 0
        model, _, _ = load_model_from_checkpoint(run_dir)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        with torch.no_grad():
            output = model(((scene.image.float() / 255 - mean) / std)[None])[0]
        if task == "depth":
            written = np.asarray(Image.open(out / "scene_depth.png")).astype(np.float64)
            expected = np.clip(np.rint(torch.exp(output[0]).double().numpy() * 512), 1, 65535)
            assert written.shape == (32, 32) and np.abs(written - expected).max() <= 1  # float rounding at .5
            assert (out / "scene_depth_preview.png").is_file()
        else:
            written = np.asarray(Image.open(out / "scene_normals.png")).astype(np.float64)
            unit = (output / output.norm(dim=0, keepdim=True)).double().numpy().transpose(1, 2, 0)
            assert np.abs(written - np.rint(127.5 * unit + 127.5)).max() <= 1
        capsys.readouterr()
        assert main(["predict", str(run_dir), str(picture), "--out", str(out)]) != 0
        assert "exist; pass --force to replace them" in capsys.readouterr().err


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def distributed_worker(rank: int, world: int, port: int, run_dir: str, batch: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    torch.set_num_threads(1)
    config = tiny_config(Path(run_dir), "normals", data={"batch_size": batch}, train={"steps": 2, "freeze_bn": True})
    train(config)
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_train_and_reduce_the_scores_exactly(tmp_path: Path) -> None:
    """Under DDP every validation pixel is scored once and the reduced scores equal a one-process
    evaluation of the same weights. (The training means over valid pixels are per process, then
    averaged, as for ignored labels: equal to a one-process run only where the processes hold as
    many valid pixels, which rendered scenes with sky do not, so the weights are not compared.)"""
    from asml.engine.data import build_data
    from asml.engine.tasks import RegressionTask
    from asml.engine.trainer import evaluate

    mp.spawn(distributed_worker, args=(2, free_port(), str(tmp_path / "two"), 2), nprocs=2, join=True)
    reduced = json.loads((tmp_path / "two" / "final_metrics.json").read_text())
    model, config, _ = load_model_from_checkpoint(tmp_path / "two" / "checkpoints" / "step_00000002.pt")
    bundle = build_data(config.data, "normals")
    torch.set_num_threads(1)  # as in the workers: the same convolution kernels, so the same outputs
    try:
        single = evaluate(model, bundle, torch.device("cpu"), task=RegressionTask("normals"))
    finally:
        torch.set_num_threads(2)
    assert reduced["pixels"] == int(single["pixels"])
    for key in ("mean_angle", "median_angle", "within_2.8125", "within_11.25", "within_30"):
        assert reduced[key] == pytest.approx(float(single[key]), rel=1e-12, abs=1e-12), key


def test_compare_reports_every_runs_scores_for_normals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "normals.yaml"
    config.write_text(tiny_config(tmp_path / "unused", "normals", train={"steps": 2, "eval_every": 2}).to_yaml())
    out = tmp_path / "compare"
    assert main(["compare", str(config), "--losses", "iid", "asm+iid", "--seeds", "0", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "<= 11.25 deg (%)" in printed and "asm+iid" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "normals" and results["losses"] == ["iid", "asm+iid"]
    for loss in ("iid", "asm+iid"):
        finals = [json.loads((out / "runs" / f"{loss.replace('+', '_')}-seed{s}" / "final_metrics.json").read_text())
                  for s in (0, 1)]  # fmt: skip
        for key in ("mean_angle", "within_2.8125", "within_30"):
            assert results["summary"][loss][key]["mean"] == pytest.approx((finals[0][key] + finals[1][key]) / 2)
    page = (out / "report.html").read_text()
    assert all(name in page for name in ("thresholds.png", "training_curves.png", "predictions.png"))
    assert all((out / name).is_file() for name in ("thresholds.png", "training_curves.png", "predictions.png"))


def test_demo_refuses_a_data_set_without_the_task(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo", "--task", "normals", "--datasets", "horses", "--out", str(tmp_path)]) != 0
    assert "built-in 'horses' does not hold normals" in capsys.readouterr().err


def test_bf16_autocast_run_and_tensorboard_pictures_for_depth(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "bf16"
    summary = train(tiny_config(run_dir, "depth", loss={"name": "asm+iid"}, train={"steps": 2, "amp": "bf16"}))
    assert all(math.isfinite(summary[k]) for k in ("abs_rel", "rmse", "delta1"))
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    assert {"validation/image_target_prediction_error", "analyzer_loss_map/conv1", "analyzer_loss_map/conv2"} <= tags
    picture = events.Images("validation/image_target_prediction_error")[-1]
    assert (picture.width, picture.height) == (4 * 32, 32)  # image | target | prediction | error
    assert {"train/matching", "train/iid", "eval/delta1", "eval/abs_rel"} <= set(events.Tags()["scalars"])


def test_best_checkpoint_direction_follows_the_metric() -> None:
    from asml.engine.tasks import RegressionTask, SegmentationTask

    normals = RegressionTask("normals")
    assert normals.is_better("mean_angle", 10.0, 12.0) and not normals.is_better("mean_angle", 12.0, 10.0)
    assert normals.is_better("within_11.25", 0.6, 0.5) and not normals.is_better("within_11.25", 0.5, 0.6)
    depth = RegressionTask("depth")
    assert depth.is_better("abs_rel", 0.1, 0.2) and depth.is_better("delta1", 0.9, 0.8)
    assert not depth.is_better("rmse", float("nan"), 1.0) and depth.is_better("rmse", 3.0, -math.inf)
    segmentation = SegmentationTask((1, 4))
    assert segmentation.is_better("mIoU", 0.7, 0.6) and not segmentation.is_better("BF", 0.1, 0.2)
    segmentation.check_best_metric("trimap_mIoU@4px")
    with pytest.raises(ConfigError, match="'trimap_mIoU@8px' is not a segmentation score"):
        segmentation.check_best_metric("trimap_mIoU@8px")


def test_wrong_task_losses_and_options_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "normals.yaml"
    config.write_text(tiny_config(tmp_path / "unused", "normals").to_yaml())
    assert main(["compare", str(config), "--losses", "ce", "--seeds", "0", "--out", str(tmp_path / "c")]) != 0
    assert "loss.name 'ce' is for segmentation; task normals takes iid, asm, asm+iid or gan" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"loss.asm options \['hinge_pixels'\] do not apply to normals"):
        train(tiny_config(tmp_path / "run", "normals", loss={"name": "asm", "asm": {"hinge_pixels": "errors"}}))
    with pytest.raises(ConfigError, match="depth scale must be a positive number"):
        from asml.engine.tasks import RegressionTask

        RegressionTask("depth", depth_scale=0.0)
