"""Exponential moving average of the weights, used for validation and saved in checkpoints.

The decay ramps up (``decay * (1 - exp(-updates / ramp))``, ``ramp`` 2,000 updates by default)
so that early, fast-changing weights are not averaged with the random initialisation for
thousands of steps. Floating buffers (BatchNorm statistics) are averaged like weights; integer
ones (batch counters) copied.

The ramp is scaled to the run's length when the run's planned number of updates is known
(:func:`scaled_ramp`): ``min(ramp, planned_steps / 10)``. Ten ramp constants then fit into the
run, so by its end the ramp factor ``1 - exp(-10)`` is within 5e-5 of 1 and the averaging window
is set by ``decay`` (``1 / (1 - decay)`` = 5,000 updates at 0.9998) and by the run's length, not
by the ramp. With the fixed 2,000-update ramp a 4,000-update run ends at a decay of 0.86: half of
its average's weight lies on the last 5 updates, 90 % on the last 16. Scaled (ramp 400), half
lies on the last ~1,300 updates and 90 % on the last ~1,900. Runs of 20,000 updates or more keep the ramp as
configured.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from fashionvision.engine.distributed import unwrap  # the trainer imports it from here too


#: ramp constants that fit into a run of known length (see the module docstring)
RAMPS_PER_RUN = 10.0


def scaled_ramp(ramp: float, planned_steps: float | None) -> float:
    """The ramp (in updates) for a run of ``planned_steps`` optimizer steps.

    ``min(ramp, planned_steps / RAMPS_PER_RUN)``; ``ramp`` unchanged when the length is unknown
    (None, e.g. a wall-clock budget before its speed is measured) and for ``ramp <= 0`` (the
    full decay from the first update).
    """
    ramp = float(ramp)
    if planned_steps is None or ramp <= 0 or planned_steps <= 0:
        return ramp
    return min(ramp, max(float(planned_steps) / RAMPS_PER_RUN, 1.0))


class ModelEMA:
    """An averaged copy of a model, updated after every optimizer step.

    Args:
        model: the model to average (DDP / compile wrappers are unwrapped).
        decay: the decay once the ramp is over.
        ramp: updates over which the decay ramps up (``trainer.ema_ramp``); an upper bound
            when ``planned_steps`` is given.
        planned_steps: optimizer steps the run will take, when known: the ramp is scaled to
            it (:func:`scaled_ramp`). None keeps ``ramp`` as given.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp: float = 2000.0,
                 planned_steps: float | None = None):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = float(decay)
        self.max_ramp = float(ramp)
        self.ramp = scaled_ramp(ramp, planned_steps)
        self.updates = 0

    def plan(self, planned_steps: float | None) -> None:
        """Rescale the ramp to a run length learnt later (e.g. the steps a time budget allows)."""
        self.ramp = scaled_ramp(self.max_ramp, planned_steps)

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.ramp)) if self.ramp > 0 else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``average += (1 - decay) * (weights - average)`` for every floating tensor at once.

        One multi-tensor ``lerp`` instead of a Python loop of two ops per tensor: on a CPU
        the loop cost 8.7 ms per step for a MobileNetV2 U-Net, the foreach call 1.8 ms.
        """
        self.updates += 1
        decay = self.current_decay()
        source = unwrap(model).state_dict()
        averages, weights, counters, counts = [], [], [], []
        for name, value in self.module.state_dict().items():
            new = source[name].detach()
            if value.dtype.is_floating_point:
                averages.append(value)
                weights.append(new.to(value.dtype))
            else:
                counters.append(value)
                counts.append(new)
        if averages:
            torch._foreach_lerp_(averages, weights, 1.0 - decay)
        if counters:
            torch._foreach_copy_(counters, counts)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state.get("decay", self.decay))
