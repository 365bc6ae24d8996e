"""What every ASM loss shares, whatever the task: the analyzer as the segmenter's adversary.

``AnalyzerAdversary`` owns the structure analyzer, its SGD optimizer and poly LR schedule, the
decaying adversarial weight ``w_adv(t)``, the update cadence (``analyzer_every``), the precision of
the analyzer's passes, the broadcast of rank 0's analyzer under ``torch.distributed`` and the
state that a checkpoint saves. The task-specific losses build on it: label maps
(``AdversarialStructureMatching``) and depth or surface normals (``RegressionStructureMatching``);
they decide what the analyzer reads, what the hard negative is and what it reconstructs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from asml.core.analyzer import StructureAnalyzer
from asml.core.distributed import average_gradients, broadcast_parameters

__all__ = ["ANALYZER_PRECISIONS", "AnalyzerAdversary", "PolyDecay"]

ANALYZER_PRECISIONS = ("float32", "bfloat16")


class PolyDecay:
    """LR factor ``(1 - t / total_steps) ** power`` (0 after the end); 1 when ``total_steps`` is None.

    A class rather than a lambda so that ``LambdaLR.state_dict()`` can save it as plain numbers.
    """

    def __init__(self, total_steps: int | None, power: float) -> None:
        self.total_steps = total_steps
        self.power = power

    def __call__(self, step: int) -> float:
        if self.total_steps is None:
            return 1.0
        return float(max(0.0, 1.0 - step / self.total_steps) ** self.power)


def check_common_options(
    *,
    total_steps: int | None,
    matched_layers: Sequence[str],
    margin: float,
    adversarial_decay: float,
    weights: dict[str, float],
) -> tuple[str, ...]:
    """Validate the options every ASM loss takes; return ``matched_layers`` as a tuple.

    ``weights`` maps option names to loss weights that must be >= 0. Raises ``ValueError`` naming
    the option and what was expected.
    """
    if total_steps is not None and total_steps < 1:
        raise ValueError(f"total_steps must be a positive number of steps or None, got {total_steps}")
    layers = (matched_layers,) if isinstance(matched_layers, str) else tuple(matched_layers)
    if not layers:
        raise ValueError("matched_layers must name at least one analyzer layer, e.g. ('conv1', 'conv2')")
    for name, value in [("margin", margin), ("adversarial_decay", adversarial_decay)]:
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    for name, value in weights.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    return layers


def check_cadence_and_precision(analyzer_every: int, analyzer_precision: str) -> None:
    """``analyzer_every`` a whole number >= 1, ``analyzer_precision`` one of ``ANALYZER_PRECISIONS``."""
    if isinstance(analyzer_every, bool) or not isinstance(analyzer_every, int) or analyzer_every < 1:
        raise ValueError(f"analyzer_every must be a whole number of steps >= 1, got {analyzer_every!r}")
    if analyzer_precision not in ANALYZER_PRECISIONS:
        raise ValueError(f"analyzer_precision must be one of {ANALYZER_PRECISIONS}, got {analyzer_precision!r}")


class AnalyzerAdversary(nn.Module):
    """The analyzer with its optimizer, LR schedule, adversarial weight, cadence and saved state.

    Subclasses validate their own options, then call ``setup_adversary`` once with a ready analyzer.
    They call ``update_due()`` to learn whether this call updates the analyzer, ``step_analyzer(loss)``
    for the update itself and ``advance_schedule()`` once per training call.
    """

    analyzer: StructureAnalyzer

    def setup_adversary(
        self,
        analyzer: StructureAnalyzer,
        *,
        matched_layers: tuple[str, ...],
        margin: float,
        adversarial_weight: float,
        adversarial_decay: float,
        total_steps: int | None,
        reconstruction_weight: float,
        matching_weight: float,
        analyzer_lr: float,
        analyzer_momentum: float,
        analyzer_weight_decay: float,
        lr_power: float,
        analyzer_every: int,
        analyzer_precision: Literal["float32", "bfloat16"],
    ) -> None:
        """Keep the analyzer and the shared settings; build its optimizer and schedule.

        Weight decay applies to the convolution kernels only, not to biases (as released).
        """
        self.analyzer = analyzer
        for name in matched_layers:
            self.analyzer.layer_index(name)  # raises on unknown names
        self.matched_layers = matched_layers
        self.margin = margin
        self.adversarial_weight = adversarial_weight
        self.adversarial_decay = adversarial_decay
        self.total_steps = total_steps
        self.reconstruction_weight = reconstruction_weight
        self.matching_weight = matching_weight
        self.analyzer_every = analyzer_every
        self.analyzer_precision = analyzer_precision
        self.step = 0
        self.latest: dict[str, Tensor] = {}
        self._latest_update: dict[str, Tensor] = {}  # the last update's scalars, logged until the next

        kernels = self.analyzer.conv_kernels()
        kernel_ids = {id(k) for k in kernels}
        others = [p for p in self.analyzer.parameters() if id(p) not in kernel_ids]
        self.optimizer = torch.optim.SGD(
            [
                {"params": kernels, "weight_decay": analyzer_weight_decay},
                {"params": others, "weight_decay": 0.0},
            ],
            lr=analyzer_lr,
            momentum=analyzer_momentum,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, PolyDecay(total_steps, lr_power))
        self._parameters_synced = False

    def current_adversarial_weight(self) -> float:
        """``w_adv(t) = adversarial_weight * adversarial_decay ** (t / total_steps)``, t clamped to T."""
        if self.total_steps is None:
            return self.adversarial_weight
        progress = min(self.step, self.total_steps) / self.total_steps
        return float(self.adversarial_weight * self.adversarial_decay**progress)

    def latest_scalars(self) -> dict[str, float]:
        """The parts of the last call as floats (loss, matching, matching/<layer>, adversarial, ...)."""
        return {name: float(value) for name, value in self.latest.items()}

    def sync_analyzer_once(self) -> None:
        """Every process starts from rank 0's analyzer (in any mode), on the first call."""
        if not self._parameters_synced:
            broadcast_parameters(self.analyzer)
            self._parameters_synced = True

    def training_call(self) -> bool:
        """True when this call trains: training mode with gradients enabled."""
        return self.training and torch.is_grad_enabled()

    def update_due(self) -> bool:
        """True when this training call updates the analyzer (every ``analyzer_every``-th call)."""
        return self.step % self.analyzer_every == 0

    def step_analyzer(self, analyzer_loss: Tensor) -> None:
        """One SGD step of the analyzer on ``analyzer_loss``, gradients averaged across processes."""
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(analyzer_loss)
        average_gradients(self.analyzer)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def advance_schedule(self) -> None:
        """One training call done: the analyzer's LR and ``w_adv`` move on, updated or not."""
        self.scheduler.step()
        self.step += 1

    def analyzer_autocast(self, device: torch.device) -> torch.autocast:
        """The precision of the analyzer's passes: float32 whatever the caller's autocast, or bf16."""
        if self.analyzer_precision == "bfloat16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=device.type, enabled=False)

    def check_device(self, tensor: Tensor, what: str = "logits") -> None:
        """A clear error when the input and the analyzer are on different devices."""
        analyzer_device = next(self.analyzer.parameters()).device
        if analyzer_device != tensor.device:
            raise ValueError(
                f"{what} are on {tensor.device} but the structure analyzer is on {analyzer_device}; "
                f"move the ASM module once before training: asm.to({str(tensor.device)!r})"
            )

    def get_extra_state(self) -> dict[str, object]:
        """Saved by ``state_dict()`` next to the analyzer's weights: step, optimizer and scheduler."""
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def set_extra_state(self, state: dict[str, object]) -> None:
        """Restore what ``get_extra_state`` saved (called by ``load_state_dict``)."""
        missing = {"step", "optimizer", "scheduler"} - set(state)
        if missing:
            raise KeyError(f"ASM state is missing {sorted(missing)}; was it saved by an ASM loss of asml?")
        self.step = int(state["step"])  # type: ignore[call-overload]
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
        self.scheduler.load_state_dict(state["scheduler"])  # type: ignore[arg-type]
        # LambdaLR.load_state_dict restores the saved PolyDecay's attributes; keep this module's
        # total_steps so that the LR and the adversarial weight decay over the same length.
        decay = self.scheduler.lr_lambdas[0]
        if isinstance(decay, PolyDecay):
            decay.total_steps = self.total_steps
