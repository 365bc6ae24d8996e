"""The training loop: one process or many (``torchrun``), resumable, with evaluation and logging.

Read top to bottom: ``train`` sets up the run (directory, distributed group, data, model, loss,
optimizer), then loops over steps: forward, loss (which updates ASM's analyzer or the GAN's
discriminator on the batch), a check that every loss term is finite, backward, optimizer step,
logging, periodic evaluation and checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from asml.core import PolyDecay
from asml.data import DatasetError
from asml.engine.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_atomic, step_path
from asml.engine.config import ConfigError, RunConfig
from asml.engine.data import DataBundle, build_data, check_headers, training_batches, validation_loader
from asml.engine.progress import ProgressBar, format_values
from asml.engine.tasks import SegmentationTask, Task, task_for
from asml.losses import SegmentationLoss
from asml.models import SegmentationModel, build

__all__ = ["NonFiniteLossError", "RunDirectoryError", "evaluate", "train"]


class RunDirectoryError(RuntimeError):
    """The run directory holds a run and neither --resume nor --force was given."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the step and the term."""


@dataclass
class _Processes:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _start_processes(device_name: str) -> _Processes:
    """Join the ``torchrun`` group if there is one (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device_name == "auto" else device_name.startswith("cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return _Processes(rank, world, device)


def _prepare_run_directory(config: RunConfig, resume: bool, force: bool, processes: _Processes) -> Path:
    run_dir = Path(config.run_dir)
    holds_run = (run_dir / "config.yaml").exists() or (run_dir / "checkpoints").exists()
    if holds_run and not resume and not force:
        raise RunDirectoryError(f"{run_dir} already holds a run; pass --resume to continue it or --force to replace it")
    if dist.is_initialized():
        dist.barrier()  # every process has looked before the main one writes
    if processes.is_main:
        if holds_run and force and not resume:
            for name in ("checkpoints", "tensorboard", "metrics.jsonl", "config.yaml", "final_metrics.json"):
                target = run_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
    if dist.is_initialized():
        dist.barrier()
    return run_dir


def _check_devices(config: RunConfig, device: torch.device) -> None:
    """Settings this device cannot run, refused before anything is written."""
    if config.train.sync_bn and device.type != "cuda":
        raise ConfigError(
            "train.sync_bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only); on the CPU use "
            "train.freeze_bn=true or a larger data.batch_size per process"
        )
    if config.train.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device; use bf16 on the CPU")


def _build_model(config: RunConfig, out_channels: int, processes: _Processes) -> nn.Module:
    model: nn.Module = build(
        config.model.name,
        out_channels,
        config.model.encoder,
        weights=config.model.weights,
        aux=config.model.aux,
        output_stride=config.model.output_stride,
    )
    if config.train.sync_bn and processes.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    return model.to(processes.device)


def _set_training_mode(model: nn.Module, freeze_bn: bool) -> None:
    """Train mode; with ``freeze_bn`` the batch-norm layers use and keep their running statistics."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    optim = config.optim
    if optim.name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)


def _autocast(config: RunConfig, device: torch.device) -> AbstractContextManager[Any]:
    if config.train.amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if config.train.amp == "bf16" else torch.float16)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# The values shown next to the live bar (every value goes to the plain lines, the logs and TensorBoard).
BRIEF_VALUES = ("loss", "ce", "matching", "adversarial", "lr")


class _Logger:
    """JSON lines and TensorBoard on the main process (the progress bar is ``ProgressBar``'s)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.writer: Any = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            self.jsonl = (run_dir / "metrics.jsonl").open("a")

    def record(self, step: int, kind: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        plain = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
        self.jsonl.write(json.dumps({"step": step, "kind": kind, **plain}, allow_nan=False) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{name}", value, step)

    def pictures(self, step: int, pictures: dict[str, Tensor]) -> None:
        """Images ``[3, H, W]`` in [0, 1] for TensorBoard."""
        if self.enabled:
            for name, picture in pictures.items():
                self.writer.add_image(name, picture, step)

    def __enter__(self) -> _Logger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.enabled:
            self.writer.close()
            self.jsonl.close()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    bundle: DataBundle,
    device: torch.device,
    trimap_widths: tuple[float, ...] = (1, 2, 4, 8, 16),
    rank: int = 0,
    world: int = 1,
    workers: int = 0,
    progress: bool = True,
    task: Task | None = None,
) -> dict[str, Tensor]:
    """Whole-image evaluation of ``model`` on the validation set; reduced across processes.

    ``task`` (default: segmentation) chooses the metrics; ``progress`` shows a bar over the images on
    a terminal (on the first process only)."""
    task = task if task is not None else SegmentationTask()
    was_training = model.training
    model.eval()
    metrics = task.new_metrics(bundle.class_names, trimap_widths).to(device)
    loader = validation_loader(bundle, rank, world, workers)
    with ProgressBar("eval", len(loader), unit="img", enabled=rank == 0 and progress) as bar:
        for image, target in loader:
            task.update_metrics(metrics, model(image.to(device)), target.to(device))
            bar.advance()
    result: dict[str, Tensor] = metrics.compute()
    model.train(was_training)
    return result


@torch.no_grad()
def _validation_pictures(
    model: nn.Module, bundle: DataBundle, loss_fn: SegmentationLoss, device: torch.device, task: Task
) -> dict[str, Tensor]:
    """The first validation sample as the task draws it (image, target, prediction, loss maps)."""
    image, target = bundle.val[0]
    normalised, _ = bundle.eval_transform(image, target)
    output = _unwrap(model).eval()(normalised[None].to(device))
    return task.pictures(output, image, target, loss_fn)


def _next_batch(batches: Iterator[tuple[Tensor, Tensor]], step: int, checkpoints: Path) -> tuple[Tensor, Tensor]:
    """The next training batch; a bad sample stops training with its file named and the way back."""
    try:
        return next(batches)
    except DatasetError as error:
        message = str(error).strip()
        if message.startswith("Caught DatasetError"):  # from a loader worker: the original message is last
            message = message.splitlines()[-1].split("DatasetError: ", 1)[-1]
        last = latest_checkpoint(checkpoints)
        kept = f"the last checkpoint, {last}, is intact" if last is not None else "no checkpoint was written yet"
        raise DatasetError(
            f"{message}\ntraining stopped at step {step}; {kept}: fix the file, then run the same command with --resume"
        ) from None


def _check_finite(loss: Tensor, loss_fn: SegmentationLoss, step: int) -> None:
    """Stop (on every process alike) when any loss term is NaN or infinite, naming the term."""
    # The total goes last: it must not be masked by a loss's own (partial) "loss" entry.
    terms = {**{k: v.float() for k, v in loss_fn.latest.items()}, "loss": loss.detach().float()}
    bad = torch.tensor([0.0 if torch.isfinite(v).all() else 1.0 for v in terms.values()], device=loss.device)
    if dist.is_initialized():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if bool(bad.any()):
        named = [f"{k} = {float(v)}" for (k, v), b in zip(terms.items(), bad.tolist(), strict=True) if b]
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {', '.join(named) or 'on another process'}; "
            "training stopped, the last good checkpoint is untouched"
        )


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _checkpoint_payload(
    config: RunConfig,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: SegmentationLoss,
    scaler: torch.amp.GradScaler,
    best: dict[str, float],
    bundle: DataBundle,
    device: torch.device,
) -> dict[str, Any]:
    return {
        "step": step,
        "config": config.to_yaml(),
        "class_names": list(bundle.class_names),
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "loss": loss_fn.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(device),
        "best": best,
    }


def train(config: RunConfig, resume: bool = False, force: bool = False) -> dict[str, float]:
    """Train as configured; return the final validation scores (also in ``final_metrics.json``)."""
    processes = _start_processes(config.train.device)
    _check_devices(config, processes.device)
    task = task_for(config)
    task.check_best_metric(config.train.best_metric)
    bundle = build_data(config.data, config.task)  # before the run directory: a missing dataset leaves nothing behind
    check_headers(bundle)  # bad files found in seconds, not when their batch comes up
    run_dir = _prepare_run_directory(config, resume, force, processes)
    checkpoints = run_dir / "checkpoints"
    torch.manual_seed(config.seed)
    model = _build_model(config, task.output_channels(bundle.num_classes), processes)
    loss_fn = task.build_loss(config, bundle.num_classes).to(processes.device)
    optimizer = _optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, PolyDecay(config.train.steps, config.optim.poly_power))
    scaler = torch.amp.GradScaler(processes.device.type, enabled=config.train.amp == "fp16")
    best = {"value": -math.inf, "step": -1}
    start_step = 0
    latest = latest_checkpoint(checkpoints) if resume else None
    if latest is not None:
        state = load_checkpoint(latest, processes.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        loss_fn.load_state_dict(state["loss"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), processes.device)
        best, start_step = dict(state["best"]), int(state["step"])
    if processes.world > 1:
        model = DistributedDataParallel(model, find_unused_parameters=True)

    logger = _Logger(run_dir, processes.is_main)
    bar = ProgressBar("train", config.train.steps, completed=start_step, enabled=processes.is_main)
    images_per_step = config.data.batch_size * processes.world
    batches = training_batches(
        bundle, config.data.batch_size, start_step, config.seed, processes.rank, processes.world, config.data.workers
    )
    _set_training_mode(model, config.train.freeze_bn)
    loss_fn.train()
    result: dict[str, Tensor] | None = None
    training_seconds = 0.0  # data, forward, loss, backward and update; not evaluation or checkpoints
    with logger, bar:
        for step in range(start_step + 1, config.train.steps + 1):
            step_start = time.perf_counter()
            images, masks = (t.to(processes.device) for t in _next_batch(batches, step, checkpoints))
            with _autocast(config, processes.device):
                if config.model.aux:
                    logits, aux = model(images, return_aux=True)
                else:
                    logits, aux = model(images), {}
                loss = loss_fn(logits, masks, images)
                for aux_logits in aux.values():
                    loss = loss + config.model.aux_weight * task.aux_loss(aux_logits, masks)
            _check_finite(loss, loss_fn, step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.optim.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            training_seconds += time.perf_counter() - step_start
            bar.advance()

            if step % config.train.log_every == 0 or step == config.train.steps:
                learning_rate = float(scheduler.get_last_lr()[0])
                values = {"loss": float(loss.detach()), **loss_fn.latest_scalars(), "lr": learning_rate}
                logger.record(step, "train", values)
                throughput = f"{bar.rate() * images_per_step:.1f} img/s"
                brief = {key: values[key] for key in BRIEF_VALUES if key in values}
                bar.report(f"{format_values(values)}  {throughput}", f"{format_values(brief)}  {throughput}")
            if step % config.train.eval_every == 0 or step == config.train.steps:
                result = evaluate(
                    _unwrap(model), bundle, processes.device, config.train.trimap_widths,
                    processes.rank, processes.world, 0, task=task,
                )  # fmt: skip
                summary = task.summary(result)
                logger.record(step, "eval", summary)
                if processes.is_main:
                    print(f"eval at step {step}: " + task.headline(summary), flush=True)
                    logger.pictures(step, _validation_pictures(model, bundle, loss_fn, processes.device, task))
                score = summary.get(config.train.best_metric, float("nan"))
                if task.is_better(config.train.best_metric, score, best["value"]):
                    best = {"value": score, "step": step}
                    if processes.is_main:
                        save_atomic(
                            _checkpoint_payload(config, step, model, optimizer, scheduler, loss_fn, scaler, best,
                                                bundle, processes.device),
                            checkpoints / "best.pt",
                        )  # fmt: skip
                _set_training_mode(model, config.train.freeze_bn)
            if processes.is_main and (step % config.train.checkpoint_every == 0 or step == config.train.steps):
                payload = _checkpoint_payload(
                    config, step, model, optimizer, scheduler, loss_fn, scaler, best, bundle, processes.device
                )
                save_atomic(payload, step_path(checkpoints, step))
                prune_checkpoints(checkpoints, config.train.keep_last)
    if result is None:  # resumed after the last step: evaluate what is there
        result = evaluate(_unwrap(model), bundle, processes.device, config.train.trimap_widths,
                          processes.rank, processes.world, 0, task=task)  # fmt: skip
    summary = task.summary(result)
    steps_run = config.train.steps - start_step
    summary["seconds_per_step"] = training_seconds / steps_run if steps_run > 0 else float("nan")
    if processes.is_main:
        timing = {"training_seconds": training_seconds, "steps": steps_run}
        (run_dir / "timing.json").write_text(json.dumps(timing))
        (run_dir / "final_metrics.json").write_text(
            json.dumps(task.to_json(result, bundle.class_names), indent=1, allow_nan=False)
        )
        print(task.table(result, bundle.class_names))
    return summary


def load_model_from_checkpoint(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[SegmentationModel, RunConfig, list[str]]:
    """The network of a checkpoint (or the latest/best in a run directory), its config and class names
    (none for depth and normals)."""
    from asml.engine.config import load_config_text

    if path.is_dir():
        candidates = [path / "checkpoints" / "best.pt", latest_checkpoint(path / "checkpoints")]
        found = next((c for c in candidates if c is not None and c.is_file()), None)
        if found is None:
            raise ConfigError(f"{path} holds no checkpoints (looked for checkpoints/best.pt and step_*.pt)")
        path = found
    state = load_checkpoint(path, device)
    config = load_config_text(state["config"], str(path))
    class_names = list(state["class_names"])
    channels = task_for(config).output_channels(len(class_names))
    spec = config.model
    model = build(spec.name, channels, spec.encoder, aux=spec.aux, output_stride=spec.output_stride)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, class_names
