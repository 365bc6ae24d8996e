"""Checkpoints: written atomically, the last k kept, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "latest_checkpoint", "load_checkpoint", "prune_checkpoints", "save_atomic", "step_path"]

_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file."""


def step_path(directory: Path, step: int) -> Path:
    """``<directory>/step_<8-digit step>.pt``."""
    return directory / f"step_{step:08d}.pt"


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def latest_checkpoint(directory: Path) -> Path | None:
    """The step checkpoint with the highest step, or None."""
    if not directory.is_dir():
        return None
    steps = sorted(p for p in directory.iterdir() if _STEP_FILE.match(p.name))
    return steps[-1] if steps else None


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest step checkpoints (``best.pt`` is never touched)."""
    steps = sorted(p for p in directory.iterdir() if _STEP_FILE.match(p.name))
    for old in steps[:-keep_last]:
        old.unlink()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True`` (a checkpoint cannot run code); clear errors for bad files."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt or foreign files raise many different errors
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path} is not an asml checkpoint (expected the keys 'model' and 'config')")
    return payload
