"""How the loop gets a step's loss and gradient: one object, three ways.

The Trainer calls ``gradient.loss_and_grad(model, xb, yb, n, step)`` once per mini-batch and
nothing else of it on the hot path. What differs between the three ways stays inside them:

1. ``ModelGradient`` (here): the model's own forward and backward pass.
2. ``noise.StepNoise``: the same gradient from two random halves of the batch, which also
   measures the gradient noise scale (one process).
3. ``distributed.DataParallel``: this rank's share of the global batch, summed over the ranks
   by one Allreduce (which also measures the noise scale, for free).

Each also says what History records per step (``columns``), what History.meta records at the
end (``summary``), and what a checkpoint keeps (``state``/``load_state``), so the loop needs no
branch on which one it holds. ``make_trainer`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from minigd.noise import RunningNoiseScale


class GradientPath(Protocol):
    """What the Trainer asks of a step's gradient computation.

    Attributes:
        rank, ranks: this process's place among the processes that train together.
        local_processes: processes sharing this machine's cores (what BLAS threads divide).
        noise: the running noise scale this path measures, or None.
        stop_requested: another process asked to stop after this step (Ctrl-C on one rank).
    """

    rank: int
    ranks: int
    local_processes: int
    noise: RunningNoiseScale | None
    stop_requested: bool

    def begin(self, model, batches, agreed: Callable[[], dict[str, Any]]) -> None:
        """Before the first step: checks that must hold before training (all ranks agree)."""

    def loss_and_grad(
        self, model, xb: np.ndarray, yb: np.ndarray, n: int, step: int, stop: bool = False
    ) -> float:
        """The batch's mean loss, with ``model.grads`` its mean gradient. ``n``: the global
        batch's size; ``step``: steps taken before this one; ``stop``: this process was asked to
        stop (passed on to the others)."""

    def abandon(self, exc: BaseException) -> None:
        """Training failed here with ``exc``: let the processes waiting on this one go."""

    def columns(self) -> dict[str, float]:
        """History's per-step columns beyond the loss (the noise vocabulary, if measured)."""

    def summary(self) -> dict[str, Any]:
        """What History.meta records of this path at the end of a run."""

    def state(self) -> dict[str, Any] | None:
        """What a checkpoint keeps (None: nothing)."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Continues from ``state()`` of an earlier run."""


class ModelGradient:
    """The model's own forward and backward pass: one process, nothing measured."""

    rank, ranks, local_processes = 0, 1, 1
    noise = None
    stop_requested = False

    def begin(self, model, batches, agreed) -> None:
        """Nothing to agree on alone."""

    def loss_and_grad(self, model, xb, yb, n, step, stop=False) -> float:
        return model.loss_and_grad(xb, yb)

    def abandon(self, exc: BaseException) -> None:
        """No one waits on a lone process."""

    def columns(self) -> dict[str, float]:
        return {}

    def summary(self) -> dict[str, Any]:
        return {}

    def state(self) -> None:
        return None

    def load_state(self, state: dict[str, Any]) -> None:
        """Nothing was kept."""

    def __repr__(self) -> str:
        return "ModelGradient()"
