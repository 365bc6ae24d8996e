"""The training engine and its command line: configs, end-to-end runs, faults, resume, processes."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

import asml.engine.tasks as tasks_module
from asml.cli import main
from asml.engine.config import ConfigError, RunConfig, load_config
from asml.engine.tasks import task_for
from asml.engine.trainer import NonFiniteLossError, RunDirectoryError, train
from asml.losses import LOSS_NAMES

TINY = {
    "model": {"name": "unet", "encoder": "resnet18"},
    "data": {"dataset": "builtin:horses", "size": 32, "crop_size": 32, "batch_size": 2, "workers": 0, "val_images": 4},
    "train": {"steps": 3, "eval_every": 3, "checkpoint_every": 1, "log_every": 1, "keep_last": 2},
}


def tiny_config(run_dir: Path, **sections: dict[str, object]) -> RunConfig:
    tree: dict[str, object] = {"run_dir": str(run_dir), **{k: dict(v) for k, v in TINY.items()}}
    for name, values in sections.items():
        tree[name] = {**tree.get(name, {}), **values}  # type: ignore[dict-item]
    return RunConfig.model_validate(tree)


# ---------------------------------------------------------------- configuration


def test_unknown_keys_are_named_with_the_nearest_valid_one(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stpes: 10\nmodle: {name: unet}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "unknown key 'train.stpes'; did you mean 'train.steps'?" in message
    assert "unknown key 'modle'; did you mean 'model'?" in message


def test_wrong_types_and_bad_overrides_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.steps: .*\(got 'many'\)"):
        load_config(None, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"loss\.name: .*\(got 'focal'\)"):
        load_config(None, ["loss.name=focal"])
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config(None, ["train.steps"])
    with pytest.raises(ConfigError, match=r"config file .*nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_data_flip_reaches_the_training_transform_of_each_task() -> None:
    from asml.engine.data import DataBundle

    for task in ("segmentation", "depth"):
        for flip in (True, False):
            config = load_config(None, [f"data.flip={str(flip).lower()}"]).data
            assert DataBundle([], [], ("a", "b"), config, task).train_transform.flip is flip


def test_overrides_are_parsed_as_yaml_and_every_shipped_config_is_valid() -> None:
    config = load_config(None, ["train.steps=7", "data.scale_range=[1, 1]", "loss.asm={margin: 0.5}"])
    assert config.train.steps == 7 and config.data.scale_range == (1.0, 1.0) and config.loss.asm == {"margin": 0.5}
    shipped = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert shipped
    for path in shipped:
        config = load_config(path)
        if config.loss.name.startswith("asm"):  # its ASM options are real keyword arguments
            task_for(config).build_loss(config, 2)


def test_the_trainer_gives_asm_the_defaults_of_the_configured_segmenter_family() -> None:
    # model.name as a user may write it (an alias, any case) picks the family's defaults.
    for name, stride in (("PSP", 2), ("pspnet", 2), ("unet", 1), ("deeplabv3+", 1)):
        config = load_config(None, ["loss.name=asm+ce", f"model.name={name}"])
        loss = task_for(config).build_loss(config, 3)
        assert loss.asm.analyzer_stride == stride, name  # type: ignore[union-attr]
    config = load_config(None, ["loss.name=asm+ce", "model.name=pspnet", "loss.asm={analyzer_stride: 1}"])
    assert task_for(config).build_loss(config, 3).asm.analyzer_stride == 1  # type: ignore[union-attr]


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_a_short_run_with_each_loss_writes_finite_logs_checkpoints_and_metrics(tmp_path: Path, loss: str) -> None:
    run_dir = tmp_path / loss.replace("+", "_")
    summary = train(tiny_config(run_dir, loss={"name": loss}))
    assert all(math.isfinite(v) for v in summary.values())
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["best.pt", "step_00000002.pt", "step_00000003.pt"]  # keep_last = 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert all(math.isfinite(v) for r in records for k, v in r.items() if isinstance(v, float))
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["mIoU"] == pytest.approx(summary["mIoU"])
    assert (run_dir / "config.yaml").is_file() and any((run_dir / "tensorboard").iterdir())


def test_eval_reproduces_the_metrics_logged_at_the_end_of_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, loss={"name": "asm+ce"}))
    final = json.loads((run_dir / "final_metrics.json").read_text())
    out = tmp_path / "eval.json"
    assert main(["eval", str(run_dir / "checkpoints" / "step_00000003.pt"), "--json", str(out)]) == 0
    again = json.loads(out.read_text())
    for key in ("mIoU", "BF", "mean_boundary_IoU", "pixel_accuracy", "trimap_mIoU"):
        assert again[key] == pytest.approx(final[key], abs=1e-9), key
    assert main(["eval", str(run_dir), "--json", str(out)]) == 2  # never overwrites


def test_predict_writes_index_masks_and_overlays_without_overwriting(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, loss={"name": "ce"}))
    image = tmp_path / "horse.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "pred"
    assert main(["predict", str(run_dir), str(image), "--out", str(out)]) == 0
    mask = np.asarray(Image.open(out / "horse_mask.png"))
    assert mask.shape == (40, 48) and set(np.unique(mask)) <= {0, 1}
    assert np.asarray(Image.open(out / "horse_overlay.png")).shape == (40, 48, 3)
    assert main(["predict", str(run_dir), str(image), "--out", str(out)]) == 2
    assert main(["predict", str(run_dir), str(tmp_path / "missing.png"), "--out", str(tmp_path / "p2")]) == 2


# ---------------------------------------------------------------- faults


def test_a_missing_dataset_shows_the_expected_layout_and_creates_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).resolve().parents[1] / "configs" / "voc-pspnet-ce.yaml"
    run_dir = tmp_path / "voc"
    code = main(["train", str(config), f"run_dir={run_dir}", f"data.root={tmp_path / 'nothing'}"])
    assert code == 2
    assert "no PASCAL VOC 2012 dataset at" in capsys.readouterr().err
    assert not run_dir.exists()


def test_sync_batch_norm_on_the_cpu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.sync_bn needs CUDA"):
        train(tiny_config(tmp_path / "run", train={"sync_bn": True}))
    with pytest.raises(ConfigError, match=r"train\.amp=fp16 needs a CUDA device"):
        train(tiny_config(tmp_path / "run", train={"amp": "fp16"}))
    assert not (tmp_path / "run").exists()


def test_a_run_directory_is_never_overwritten_without_force(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", train={"steps": 1, "eval_every": 1})
    train(config)
    before = (tmp_path / "run" / "checkpoints" / "step_00000001.pt").read_bytes()
    with pytest.raises(RunDirectoryError, match=r"already holds a run; pass --resume .* or --force"):
        train(config)
    assert (tmp_path / "run" / "checkpoints" / "step_00000001.pt").read_bytes() == before
    train(config, force=True)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = tasks_module.build_loss
    calls = {"n": 0}

    def poisoned(*args: object, **kwargs: object) -> torch.nn.Module:
        loss_fn = original(*args, **kwargs)  # type: ignore[arg-type]
        forward = loss_fn.forward

        def maybe_nan(logits: torch.Tensor, target: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
            calls["n"] += 1
            value = forward(logits, target, images)
            return value * float("nan") if calls["n"] == 3 else value

        loss_fn.forward = maybe_nan  # type: ignore[method-assign]
        return loss_fn

    monkeypatch.setattr(tasks_module, "build_loss", poisoned)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3: loss = nan"):
        train(tiny_config(run_dir, loss={"name": "ce"}, train={"steps": 5}))
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000001.pt", "step_00000002.pt"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, run_dir: Path, steps: int) -> Path:
    config = tiny_config(run_dir, loss={"name": "asm+ce"}, train={"steps": steps, "eval_every": steps})
    path.write_text(config.to_yaml())
    return path


def final_state(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)
    return {
        **{f"model.{k}": v for k, v in state["model"].items()},
        **{f"loss.{k}": v for k, v in state["loss"].items() if isinstance(v, torch.Tensor)},
    }


def test_a_run_killed_with_sigkill_and_resumed_ends_with_the_same_weights(tmp_path: Path) -> None:
    steps = 12
    straight = tmp_path / "straight"
    train(load_config(write_config(tmp_path / "a.yaml", straight, steps)))
    killed = tmp_path / "killed"
    config = write_config(tmp_path / "b.yaml", killed, steps)
    command = [sys.executable, "-m", "asml.cli", "train", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_00000004.pt").exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / f"step_{steps:08d}.pt").exists()  # killed mid-run
    assert main(["train", str(config), "--resume"]) == 0
    expected, resumed = final_state(straight, steps), final_state(killed, steps)
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        assert torch.equal(value, resumed[key]), key


def distributed_worker(rank: int, world: int, port: int, run_dir: str, batch: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    torch.set_num_threads(1)
    config = tiny_config(
        Path(run_dir),
        loss={"name": "asm+ce"},
        data={"batch_size": batch, "scale_range": [1.0, 1.0]},
        train={"steps": 3, "freeze_bn": True},
    )
    train(config)
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_with_batch_b_match_one_process_with_batch_2b(tmp_path: Path) -> None:
    mp.spawn(distributed_worker, args=(2, free_port(), str(tmp_path / "two"), 2), nprocs=2, join=True)
    torch.set_num_threads(1)
    try:
        config = tiny_config(
            tmp_path / "one",
            loss={"name": "asm+ce"},
            data={"batch_size": 4, "scale_range": [1.0, 1.0]},
            train={"steps": 3, "freeze_bn": True},
        )
        train(config)
    finally:
        torch.set_num_threads(2)
    two, one = final_state(tmp_path / "two", 3), final_state(tmp_path / "one", 3)
    for key, value in one.items():
        if value.is_floating_point():
            torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_bf16_autocast_run_and_tensorboard_pictures(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "bf16"
    summary = train(tiny_config(run_dir, loss={"name": "asm"}, train={"steps": 2, "eval_every": 2, "amp": "bf16"}))
    assert all(math.isfinite(v) for v in summary.values())
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    assert {"validation/image_target_prediction", "analyzer_loss_map/conv1", "analyzer_loss_map/conv2"} <= tags
    assert "train/matching" in events.Tags()["scalars"] and "eval/mIoU" in events.Tags()["scalars"]
