"""Run configuration: YAML validated into typed objects, with dotted ``key=value`` overrides.

An unknown key or a wrong type is a ``ConfigError`` that names the key (dotted) and, for unknown
keys, suggests the nearest valid one.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "describe_defaults",
    "load_config",
    "load_config_text",
]


# The checkpoint kept as best.pt unless train.best_metric says otherwise, per regression task.
TASK_BEST_METRICS = {"depth": "delta1", "normals": "within_11.25"}
REGRESSION_ONLY_LOSSES = ("iid", "asm+iid")
TASK_IID_LOSSES = {"depth": ("l1", "l2"), "normals": ("cosine", "l2")}


class ConfigError(ValueError):
    """A configuration problem; the message names the key and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """The segmenter: ``asml.models.build(name, num_classes, encoder, weights=weights, aux=aux,
    output_stride=output_stride)``."""

    name: str = "unet"
    encoder: str = "resnet18"
    weights: str | None = None
    aux: bool = False
    output_stride: int | None = Field(None, description="FCN only: 8 (default), 16 or 32")
    aux_weight: float = Field(0.4, ge=0)


class DataConfig(_Strict):
    """Where the images come from and how they are batched.

    ``dataset``: for segmentation ``builtin:horses``, ``builtin:riders``, ``voc``, ``cityscapes``,
    ``weizmann_horse`` or ``folder`` (the last four read ``root``); for depth and normals
    ``builtin:scenes``, ``stanford2d3ds`` (by ``fold``) or ``nyu`` (a folder export; both read ``root``).
    """

    dataset: str = "builtin:horses"
    root: str | None = None
    sbd_root: str | None = None
    num_classes: int | None = Field(None, ge=2)
    fold: int = Field(1, ge=1, le=3, description="Stanford 2D-3D-S fold (1: area 5 for validation)")
    train_split: str = "train"
    val_split: str = "val"
    size: int = Field(64, ge=32, description="image side of the built-in sets")
    crop_size: int = Field(64, ge=16)
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = Field(True, description="flip training crops left-right at random (off for oriented images)")
    eval_size: int | None = None
    val_images: int | None = Field(None, ge=1, description="evaluate on the first N validation images only")
    batch_size: int = Field(8, ge=1)
    workers: int = Field(2, ge=0)


class LossConfig(_Strict):
    """The network's loss (``asml.losses.build_loss``, or ``build_regression_loss`` for depth and
    normals); ``asm`` holds ASM keyword arguments.

    ``name`` for segmentation: ``ce``, ``asm``, ``asm+ce``, ``gan``, ``lovasz(+ce)``, ``dice(+ce)``;
    for depth and normals: ``iid``, ``asm``, ``asm+iid``, ``gan``. Unless set, ``asm+ce`` for
    segmentation and ``asm+iid`` for depth and normals.
    """

    name: Literal["ce", "asm", "asm+ce", "gan", "lovasz", "lovasz+ce", "dice", "dice+ce", "iid", "asm+iid"] = "asm+ce"
    ce_weight: float = Field(1.0, ge=0)
    iid: Literal["l1", "l2", "cosine"] | None = Field(
        None, description="per-pixel loss of depth (l1, l2 on log-depth) or normals (cosine, l2); None: l1 / cosine"
    )
    iid_weight: float = Field(1.0, ge=0)
    gan_weight: float = Field(0.01, ge=0)
    gan_lr: float = Field(2e-4, gt=0)
    asm: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(_Strict):
    """The segmenter's optimizer and poly learning-rate decay."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(5e-4, ge=0)
    poly_power: float = Field(0.9, ge=0)
    grad_clip: float | None = Field(None, gt=0)


class TrainConfig(_Strict):
    """Schedule, evaluation, checkpoints, precision and devices."""

    steps: int = Field(1000, ge=1)
    eval_every: int = Field(200, ge=1)
    log_every: int = Field(20, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    keep_last: int = Field(2, ge=1)
    best_metric: str = Field("mIoU", description="unless set: mIoU, or for depth delta1, for normals within_11.25")
    amp: Literal["none", "bf16", "fp16"] = "none"
    sync_bn: bool = False
    freeze_bn: bool = False
    device: str = "auto"
    trimap_widths: tuple[float, ...] = (1, 2, 4, 8, 16)
    depth_range: tuple[float, float] | None = Field(
        None,
        description="depth: predictions clamped to [min, max] metres and targets beyond max left out when scored; "
        "None: the data set's protocol (stanford2d3ds [0.0996, 51.875], nyu [0.001, 10], else [0.001, none])",
    )


class RunConfig(_Strict):
    """Everything a run needs; saved as ``config.yaml`` in the run directory."""

    run_dir: str = "runs/run"
    task: Literal["segmentation", "depth", "normals"] = "segmentation"
    seed: int = 0
    model: ModelConfig = Field(default_factory=lambda: ModelConfig())
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    loss: LossConfig = Field(default_factory=lambda: LossConfig())
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig())
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())

    @model_validator(mode="after")
    def _task_defaults(self) -> RunConfig:
        """Depth and normals take their own loss and best metric unless the config sets them, and
        refuse losses of the other kind."""
        if self.task == "segmentation":
            if self.loss.name in REGRESSION_ONLY_LOSSES:
                raise ValueError(f"loss.name {self.loss.name!r} is for depth and normals, not for segmentation")
            return self
        if "name" not in self.loss.model_fields_set:
            self.loss.name = "asm+iid"
        if "best_metric" not in self.train.model_fields_set:
            self.train.best_metric = TASK_BEST_METRICS[self.task]
        if self.loss.name not in ("iid", "asm", "asm+iid", "gan"):
            raise ValueError(
                f"loss.name {self.loss.name!r} is for segmentation; task {self.task} takes iid, asm, asm+iid or gan"
            )
        allowed = TASK_IID_LOSSES[self.task]
        if self.loss.iid is not None and self.loss.iid not in allowed:
            raise ValueError(f"loss.iid {self.loss.iid!r} is not a {self.task} loss; choose {' or '.join(allowed)}")
        return self

    def to_yaml(self) -> str:
        """The resolved configuration as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def describe_defaults() -> str:
    """Every configuration key with its default, one ``section.key: default`` per line."""
    lines = []
    defaults = RunConfig().model_dump(mode="json")
    for key, value in defaults.items():
        if key in ("model", "data", "loss", "optim", "train"):
            for inner, inner_value in value.items():
                lines.append(f"  {key}.{inner}: {inner_value!r}")
        else:
            lines.append(f"  {key}: {value!r}")
    return "\n".join(lines)


def _fields_at(path: Sequence[str | int]) -> list[str]:
    """Valid field names of the config section at ``path``."""
    model: type[BaseModel] = RunConfig
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def explain_validation(error: ValidationError, source: str) -> ConfigError:
    """A ``ConfigError`` naming each bad key of ``error`` (see ``_explain``)."""
    return _explain(error, source)


def _explain(error: ValidationError, source: str) -> ConfigError:
    lines = []
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        key = ".".join(location)
        if problem["type"] == "extra_forbidden":
            choices = _fields_at(location[:-1])
            close = difflib.get_close_matches(location[-1], choices, n=1)
            hint = f"; did you mean {'.'.join([*location[:-1], close[0]])!r}?" if close else ""
            lines.append(f"unknown key {key!r}{hint} (valid here: {', '.join(choices)})")
        elif not location:  # a check across sections (RunConfig's validator): its message says it all
            lines.append(str(problem["msg"]).removeprefix("Value error, "))
        else:
            lines.append(f"{key}: {problem['msg']} (got {problem.get('input')!r})")
    return ConfigError(f"invalid configuration in {source}:\n  " + "\n  ".join(lines))


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def load_config_text(text: str, source: str) -> RunConfig:
    """Validate a YAML text (e.g. the config stored in a checkpoint)."""
    try:
        return RunConfig.model_validate(yaml.safe_load(text) or {})
    except ValidationError as error:
        raise _explain(error, source) from None


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML file (None: defaults), apply ``key=value`` overrides (values parsed as YAML), validate."""
    tree: dict[str, Any] = {}
    source = "the defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
        tree = loaded or {}
        source = str(path)
    for override in overrides:
        key, separator, raw = override.partition("=")
        if not separator or not key:
            raise ConfigError(f"override {override!r} must look like section.key=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    if overrides:
        source += " with overrides " + " ".join(overrides)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as error:
        raise _explain(error, source) from None
