"""Progress a person can read: live bars on a terminal, plain lines everywhere else.

On a terminal every ``ProgressBar`` is a row of one shared ``rich`` display (description, bar,
done/total, rate, elapsed, time left, and the latest values such as the losses), so nested bars
(a comparison's runs, the run's steps, an evaluation's images) stack instead of fighting for the
line; a nested bar disappears when it is done, the outermost one stays. Anything printed meanwhile
appears above the bars. When the output is not a terminal (CI, a file) nothing is drawn and
``report`` prints one line each time it is called, e.g. one per log step of training.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

__all__ = ["ProgressBar", "format_values"]


def _format_rate(rate: float | None, unit: str) -> str:
    """``2.50 step/s``, or ``12.3 s/run`` when slower than one per second."""
    if not rate:
        return f"- {unit}/s"
    return f"{rate:.2f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}"


class _RateColumn(ProgressColumn):
    """Units per second (or seconds per unit when slower than one per second)."""

    def render(self, task: Task) -> Text:
        return Text(_format_rate(task.speed, task.fields.get("unit", "it")), style="progress.data.speed")


class _Display:
    """The one live display shared by every open bar of this process."""

    progress: Progress | None = None
    open_bars = 0


def _new_progress(console: Console) -> Progress:
    # The description keeps its width and the values are cut with an ellipsis, not the other way round.
    return Progress(
        TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, min_width=12)),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
        console=console,
        redirect_stdout=True,
        redirect_stderr=True,
    )


def format_values(values: dict[str, float], digits: int = 4) -> str:
    """``loss 0.1234  hinge 0.5``: the scalar values, names with a ``/`` (per-layer logs) left out."""
    return "  ".join(f"{name} {value:.{digits}f}" for name, value in values.items() if "/" not in name)


class ProgressBar:
    """A progress bar over ``total`` units (steps, images, runs), used as a context manager.

    Args:
        description: what is being counted, shown first (``train``, ``eval``, ``compare``).
        total: units to do in all.
        completed: units already done (a resumed run starts part-way).
        unit: the unit's name in the rate column and the plain lines.
        enabled: False draws and prints nothing (e.g. on every process but the first under torchrun).
        console: where to draw; by default standard output. Bars are drawn only if it is a terminal.
    """

    def __init__(
        self,
        description: str,
        total: int,
        completed: int = 0,
        unit: str = "step",
        enabled: bool = True,
        console: Console | None = None,
    ) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.first = self.completed = completed
        self.enabled = enabled
        self.console = console if console is not None else Console()
        self.live = enabled and self.console.is_terminal
        self.start = time.perf_counter()
        self.task: TaskID | None = None

    def __enter__(self) -> ProgressBar:
        if self.live:
            if _Display.progress is None:
                _Display.progress = _new_progress(self.console)
                _Display.progress.start()
            _Display.open_bars += 1
            self.task = _Display.progress.add_task(
                self.description, total=self.total, completed=self.completed, unit=self.unit, info=""
            )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.task is None or _Display.progress is None:
            return
        _Display.open_bars -= 1
        if _Display.open_bars > 0:  # a nested bar: make room for the next one
            _Display.progress.remove_task(self.task)
        else:
            _Display.progress.stop()
            _Display.progress, _Display.open_bars = None, 0
        self.task = None

    def advance(self, units: int = 1) -> None:
        """``units`` more are done."""
        self.completed += units
        if self.task is not None and _Display.progress is not None:
            _Display.progress.update(self.task, completed=self.completed)

    def show(self, info: str) -> None:
        """Show ``info`` next to the bar on a terminal; print nothing elsewhere."""
        if self.task is not None and _Display.progress is not None:
            _Display.progress.update(self.task, info=info)

    def report(self, info: str, brief: str | None = None) -> None:
        """Show ``brief`` (or ``info``) next to the bar, or, off a terminal, print one line:
        ``<description> <done>/<total>  <info>  <rate>  ETA <seconds> s``."""
        if not self.enabled:
            return
        if self.task is not None and _Display.progress is not None:
            _Display.progress.update(self.task, info=info if brief is None else brief)
            return
        rate = self.rate()
        eta = f"{(self.total - self.completed) / rate:.0f} s" if rate > 0 else "unknown"
        parts = [f"{self.description} {self.completed}/{self.total}", info, _format_rate(rate, self.unit), f"ETA {eta}"]
        print("  ".join(part for part in parts if part), flush=True)

    def rate(self) -> float:
        """Units per second since the bar was opened."""
        elapsed = time.perf_counter() - self.start
        return (self.completed - self.first) / elapsed if elapsed > 0 else 0.0
