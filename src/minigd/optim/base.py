"""The optimizer protocol: update two flat arrays in place, keep state as named flat arrays.

An optimizer never sees layers. ``step(params, grads)`` receives the model's flat parameter vector
and its flat gradient and updates the parameters in place with a few vectorized expressions. Its
state is a step count plus a few arrays of the parameters' shape (optax's ``ScaleByAdamState(count,
mu, nu)`` is the model), all of which ``state_dict`` exports for checkpoints.

``step`` may overwrite ``grads`` (weight decay is added into it, as torch does on a copy): the next
backward pass writes fresh gradients anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from minigd import _kernels
from minigd._validation import check_float, message

LearningRate = float | Callable[[int], float]


class Optimizer:
    """Base class. Subclasses set ``state_names`` and implement ``_update``.

    The learning rate has one owner, the optimizer, and two parts (optax's split of a schedule
    from a scale)::

        lr(t) = base(t) * lr_scale

    ``base`` is the constant or the schedule the optimizer was built with (or that
    ``set_schedule`` installed); ``lr_scale`` is a multiplier, 1 until a plateau rule
    (``ReduceLROnPlateau``) cuts it. A cut therefore persists under any schedule and stacks with
    the next cut, and a checkpoint restores both the step count and the scale.

    Args:
        lr: the learning rate, or a schedule: a function of the number of steps already taken
            (0 for the first step) that returns the learning rate (see ``minigd.optim.schedules``).
        fused: where a compiled one-pass update exists (SGD, Adam, AdamW): None uses it when
            Numba is installed, True requires it, False keeps the NumPy expressions. As torch's
            ``fused``, it changes speed and round-off, not the equations.
    """

    state_names: ClassVar[tuple[str, ...]] = ()
    fusable: ClassVar[bool] = False  # a compiled one-pass update exists (minigd._kernels)
    # normalizes each coordinate by its gradient's scale (Adam, RMSprop): decides the lr scaling
    adaptive: ClassVar[bool] = False

    def __init__(self, lr: LearningRate, fused: bool | None = None) -> None:
        self.lr_scale = 1.0
        self.steps = 0
        # the clock a schedule reads, when not ``steps``: an adaptive batch (AdaScale) counts
        # scale-invariant steps, the sum of its steps' gains, so a schedule means the same
        # progress whatever the batch size does
        self.progress: float | None = None
        self.set_schedule(lr)
        self.state: dict[str, np.ndarray] = {}
        self._scratch: np.ndarray | None = None
        self.fused = fused
        self._kernels = None
        if fused is not False and type(self).fusable:
            self._kernels = _kernels.get()
            if fused and self._kernels is None:
                raise ImportError(
                    "fused=True needs the compiled kernels: pip install "
                    "'minigd[fast]' (numba), or leave fused=None."
                )

    # -- the learning rate --------------------------------------------------------------------
    def set_schedule(self, lr: LearningRate) -> None:
        """Makes ``lr`` (a number or a function of the step) the base learning rate."""
        if callable(lr):
            self.schedule: Callable[[int], float] | None = lr
            self._base = float("nan")
        else:
            self.schedule = None
            self._base = check_float(
                "lr",
                lr,
                minimum=0.0,
                inclusive=False,
                fix="Typical values: 0.01-0.1 for SGD, 1e-3 for Adam.",
            )
        self._refresh_lr()

    def base_lr(self, t: int | None = None) -> float:
        """The base learning rate of step t (default: the next step), before ``lr_scale``."""
        if self.schedule is None:
            return self._base
        if t is None:
            t = self.steps if self.progress is None else self.progress
        return float(self.schedule(t))

    @property
    def lr(self) -> float:
        """The learning rate of the next step (the one the last step used, once stepping)."""
        return self._lr

    @lr.setter
    def lr(self, value: LearningRate) -> None:
        """Assigning replaces both parts: ``value`` becomes the base and ``lr_scale`` returns to 1,
        so ``opt.lr = 0.05`` then reads back 0.05 (as assigning a torch param group's lr)."""
        self.lr_scale = 1.0
        self.set_schedule(value)

    def scale_lr(self, factor: float, *, min_lr: float = 0.0) -> None:
        """Multiplies ``lr_scale`` by ``factor``, keeping the learning rate at least ``min_lr``."""
        base = self.base_lr()
        scale = self.lr_scale * factor
        if base > 0 and base * scale < min_lr:
            scale = min_lr / base
        self.lr_scale = scale
        self._refresh_lr()

    def preconditioner(self, out: np.ndarray | None = None) -> np.ndarray | None:
        """What this optimizer divides each coordinate of the gradient by (Adam's and RMSprop's
        ``sqrt(v) + eps``), as it stands after the last step, in ``out`` if given; None for an
        optimizer that does not (SGD) or before the first step. The noise scale of an adaptive
        optimizer is measured on the gradient divided by it (adaptdl's pre-conditioned gradient
        noise)."""
        return None

    def _refresh_lr(self, t: int | None = None) -> None:
        self._lr = self.base_lr(t) * self.lr_scale

    def __getstate__(self) -> dict[str, Any]:
        """Pickles the settings and state arrays; the compiled kernels are looked up again and
        the scratch array made again where the optimizer is unpickled."""
        return self.__dict__ | {"_kernels": self._kernels is not None, "_scratch": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._kernels = _kernels.get() if state["_kernels"] else None

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Takes one optimization step: updates ``params`` in place from ``grads``."""
        if self._scratch is None or self._scratch.shape != params.shape:
            self._allocate(params)
        if self.schedule is not None:
            self._refresh_lr()
        self.steps += 1
        self._update(params, grads, self._scratch)

    def fresh(self) -> Optimizer:
        """A new optimizer of this kind with the same schedule and settings and no state."""
        return type(self)(self.schedule or self._base, **self.hyperparameters())

    def _allocate(self, params: np.ndarray) -> None:
        self._scratch = np.empty_like(params)
        for name in self.state_names:
            current = self.state.get(name)
            if current is None or current.shape != params.shape:
                self.state[name] = np.zeros_like(params)

    def _update(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray) -> None:
        raise NotImplementedError

    def _add_weight_decay(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray) -> None:
        """g <- g + lambda theta: torch's L2 penalty, added to the gradient (not AdamW's)."""
        if self.weight_decay:
            np.multiply(p, self.weight_decay, out=tmp)
            g += tmp

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments other than lr."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: step count, lr scale, state arrays.

        The base learning rate (constant or schedule) is configuration, as in torch, where an
        LRScheduler is rebuilt by the caller: it is recorded (``base_lr``, ``schedule``) so a
        resume can check it, and is not restored from here.
        """
        return {
            "name": type(self).__name__,
            "steps": self.steps,
            "lr": self.lr,
            "lr_scale": self.lr_scale,
            "progress": self.progress,
            **self._base_config(),
            "hyperparameters": self.hyperparameters(),
            "arrays": {name: value.copy() for name, value in self.state.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != type(self).__name__:
            raise ValueError(
                f"the saved optimizer state is for {state.get('name')}, not "
                f"{type(self).__name__}; resume with the optimizer you trained with."
            )
        saved = state.get("hyperparameters", {})
        if saved and saved != self.hyperparameters():
            raise ValueError(
                f"the saved {type(self).__name__} used {saved}, this one "
                f"{self.hyperparameters()}; resume with the same settings."
            )
        saved_base = {k: state.get(k) for k in ("base_lr", "schedule")}
        if saved_base != self._base_config():
            raise ValueError(
                f"the saved {type(self).__name__} was trained with {_describe(saved_base)}, this "
                f"one has {_describe(self._base_config())}. Resume with the learning rate the run "
                "was started with, or start a new run to change it."
            )
        self.steps = int(state["steps"])
        self.lr_scale = float(state.get("lr_scale", 1.0))
        progress = state.get("progress")
        self.progress = None if progress is None else float(progress)
        self._refresh_lr(max(0, self.steps - 1))  # the lr the last step used, as after step()
        self.state = {name: np.array(value) for name, value in state["arrays"].items()}
        self._scratch = None

    def _base_config(self) -> dict[str, Any]:
        if self.schedule is not None:
            return {"base_lr": None, "schedule": repr(self.schedule)}
        return {"base_lr": self._base, "schedule": None}

    def __repr__(self) -> str:
        lr = repr(self.schedule) if self.schedule is not None else f"{self._base:g}"
        args = "".join(f", {k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}(lr={lr}{args})"


def _describe(base: dict[str, Any]) -> str:
    return f"lr {base['base_lr']:g}" if base["schedule"] is None else f"lr {base['schedule']}"


def check_unit(name: str, value: float) -> float:
    """A coefficient in [0, 1)."""
    value = check_float(name, value, minimum=0.0)
    if value >= 1.0:
        raise ValueError(message(name, "in [0, 1)", value))
    return value
