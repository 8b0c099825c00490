"""The gradient noise scale measured as training goes, in one process.

A data-parallel run gets B_simple for free: each rank's gradient is a small batch and the reduced
one a big batch (``minigd.distributed``). One process gets the same from two halves of each step's
batch (every ``every`` steps): the gradients g_1 and g_2 of a random split are the small batches,
their size-weighted mean the whole batch's (McCandlish et al. 2018, appendix A.1,
``noise.estimator``). With equal halves the two estimates reduce to |G|^2 ~ g_1.g_2 and
tr(Sigma) ~ (B/4)|g_1 - g_2|^2: the true gradient cancels out of the noise estimate, which keeps it
steady when the gradient is large, early in training. StepNoise is one of the Trainer's gradient
paths (``training.gradient``).

The split is random, not the batch's front and back, because a batch's rows are sorted by index
and the front of a class-sorted data set would be one class. Without BatchNorm the step's own
gradient *is* the mean of the halves (equal to one pass over the batch up to rounding), so the
measurement costs the copy of the batch into two halves. With BatchNorm two halves would change
the statistics the step normalizes with: the whole batch's pass runs as well (a step costs about
twice as much), and the running statistics are put back after the halves.

For Adam and RMSprop the noise that matters is that of the step they take, the gradient divided
per coordinate by ``sqrt(v) + eps``: given ``precondition`` (``Optimizer.preconditioner``), both
norms are taken of the gradients divided by it (adaptdl's pre-conditioned noise scale), each
coordinate of the divisor raised to at least ``FLOOR`` times their mean. Without that floor a
coordinate Adam has (nearly) never seen a gradient for counts divided by eps = 1e-8: on mnist-5k
the weights of pixels that were almost always blank, 1% of the coordinates, held 99-100% of the
pre-conditioned variance, B_noise read 10^4-10^6 (the raw gradient's: 120-1600), and the
adaptive batch went to 512: 1.70x the time to target of a fixed 32 (6 seeds), floored 1.47x.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from minigd import _kernels
from minigd._validation import check_float, check_int
from minigd.noise.estimator import RunningNoiseScale, norm_sq

FLOOR = 0.1  # a pre-conditioned coordinate's divisor counts as at least this times their mean


class StepNoise:
    """B_simple from the steps' own batches, smoothed over about ``1/(1-beta)`` measurements.

    Args:
        every: measure every this many steps (the others are plain passes).
        beta: the running average's decay per measurement.
        seed: seeds each measured step's split, as ``default_rng((seed, step, ...))``.
        population: m, the training set's size (corrects for drawing without replacement).
        precondition: returns the divisor of each gradient coordinate (or None, not yet known)
            before the norms are taken, written in its ``out`` argument where it can:
            ``optimizer.preconditioner`` for Adam and RMSprop.
        warm: measure at every step until this many measurements are in (a policy that acts
            on the noise scale waits for them: at ``every`` = 8 the first 5 took 40 steps).
    """

    rank, ranks, local_processes = 0, 1, 1
    stop_requested = False

    def __init__(
        self,
        every: int = 1,
        *,
        beta: float = 0.98,
        seed: int = 0,
        population: int | None = None,
        precondition: Callable[..., np.ndarray | None] | None = None,
        warm: int = 0,
    ) -> None:
        self.every = check_int("every", every, minimum=1)
        self.warm = check_int("warm", warm, minimum=0)
        beta = check_float("beta", beta, minimum=0.0, maximum=1.0, inclusive=False)
        self.seed = check_int("seed", seed, minimum=0)
        self.population = population
        self.noise = RunningNoiseScale(beta)
        self.precondition = precondition
        self.divided = None if precondition is None else DividedNorms(precondition)
        self._g_1: np.ndarray | None = None

    @property
    def value(self) -> float:
        """The smoothed B_simple (nan until the first measurement)."""
        return self.noise.value

    def due(self, step: int) -> bool:
        """Whether step ``step`` (0-based) measures: every ``every``-th, and every one while
        fewer than ``warm`` measurements are in."""
        return step % self.every == 0 or self.noise.steps < self.warm

    def begin(self, model, batches, agreed) -> None:
        """Nothing to agree on in one process."""

    def abandon(self, exc: BaseException) -> None:
        """No one waits on a lone process."""

    def loss_and_grad(self, model, xb, yb, n: int, step: int, stop: bool = False) -> float:
        """The step's loss and gradient (in ``model.grads``), measuring the noise on step
        ``step`` (0-based) when it is due."""
        if not self.due(step) or n < 4:
            self.noise.skip()
            return model.loss_and_grad(xb, yb)
        saved = [(v, v.copy()) for _, v in model.named_buffers()] if model.has_batchnorm else []
        first, second = self._split(n, step)
        n_1, n_2 = len(first), len(second)
        loss_1 = model.loss_and_grad(xb[first], yb[first])
        g_1 = self._scratch(model.grads)
        loss_2 = model.loss_and_grad(xb[second], yb[second])
        g_2 = model.grads  # norms in the model's dtype: BLAS dots, no float64 copies
        u = self.inverse_square(model.grads)
        halves_sq = (n_1 * self.norm_sq(g_1, u) + n_2 * self.norm_sq(g_2, u)) / n
        if saved:  # BatchNorm: the step trains on the whole batch's statistics
            for target, value in saved:
                np.copyto(target, value)
            loss = model.loss_and_grad(xb, yb)
        else:  # the whole batch's gradient, in place: (n_1 g_1 + n_2 g_2) / n
            g_2 *= n_2 / n
            g_1 *= n_1 / n
            g_2 += g_1
            loss = (n_1 * loss_1 + n_2 * loss_2) / n
        self.noise.update(halves_sq, self.norm_sq(model.grads, u), n / 2, n, self.population)
        return loss

    def inverse_square(self, like: np.ndarray) -> np.ndarray | None:
        """1 / d^2 per coordinate for the floored divisor d of ``precondition`` (None without
        one, or before the optimizer's first step)."""
        return None if self.divided is None else self.divided.inverse_square(like)

    def norm_sq(self, g: np.ndarray, inverse_sq: np.ndarray | None) -> float:
        """``|g / d|^2`` given ``1 / d^2`` (``|g|^2`` given None)."""
        return norm_sq(g) if inverse_sq is None else self.divided.norm_sq(g, inverse_sq)

    def _split(self, n: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """A random split of the batch's rows into halves, each sorted (faster to gather)."""
        rows = np.random.default_rng((self.seed, step, 0x401E)).permutation(n)
        return np.sort(rows[: n // 2]), np.sort(rows[n // 2 :])

    def _scratch(self, grads: np.ndarray) -> np.ndarray:
        """A copy of the first half's gradient, in a buffer kept between steps."""
        if self._g_1 is None or self._g_1.shape != grads.shape or self._g_1.dtype != grads.dtype:
            self._g_1 = np.empty_like(grads)
        np.copyto(self._g_1, grads)
        return self._g_1

    def columns(self) -> dict[str, float]:
        """History's per-step noise columns (``noise.COLUMNS``)."""
        return self.noise.columns()

    def summary(self) -> dict[str, float]:
        return {"b_simple": self.value}

    def state(self) -> dict[str, float]:
        return {"every": self.every, "seed": self.seed, **self.noise.state()}

    def load_state(self, state: dict[str, float]) -> None:
        self.noise.load_state(state)

    def __repr__(self) -> str:
        return f"StepNoise(every={self.every}, beta={self.noise.beta}, seed={self.seed})"


def floored(divisor: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray | None:
    """An adaptive optimizer's divisor with each coordinate at least ``FLOOR`` times their
    mean (in ``out`` if given): the noise of a coordinate whose second moment rests on a few
    gradients (or none) is not measurable, and divided by eps it would be all the variance."""
    if divisor is None:
        return None
    floor = FLOOR * divisor.mean(dtype=np.float64)
    return np.maximum(divisor, floor, out=out, dtype=divisor.dtype)


class DividedNorms:
    """Norms of gradients divided per coordinate by an optimizer's floored divisor d, through
    1 / d^2 computed in arrays kept between measurements: with a new array (100k coordinates)
    for each step of the computation, a measured pass of mnist-5k's MLP at B=32 took 0.8 ms;
    in kept arrays 0.33 ms, of which 1 / d^2 took 0.14 (seven NumPy passes); with the compiled
    divisor and floor (``minigd._kernels``, the ``fast`` extra) 1 / d^2 takes 0.03 ms."""

    def __init__(self, precondition: Callable[..., np.ndarray | None]) -> None:
        self.precondition = precondition
        self._u: np.ndarray | None = None
        self._scratch: np.ndarray | None = None

    def inverse_square(self, like: np.ndarray) -> np.ndarray | None:
        """1 / d^2, laid out as ``like`` (the gradient); None before the optimizer's first step."""
        if self._u is None or self._u.shape != like.shape or self._u.dtype != like.dtype:
            self._u, self._scratch = np.empty_like(like), np.empty_like(like)
        d = self.precondition(out=self._u)
        if d is None:
            return None
        kernels = _kernels.get()
        if kernels is not None:
            if d is not self._u:  # into the kept array, whether or not it was written there
                np.copyto(self._u, d)
            kernels.floored_inverse_square(self._u, self._u.dtype.type(FLOOR))
            return self._u
        d = floored(d, out=self._u)
        np.square(d, out=d)
        return np.reciprocal(d, out=d)

    def norm_sq(self, g: np.ndarray, inverse_sq: np.ndarray) -> float:
        """sum(g^2 / d^2), one multiply into a kept array and one BLAS dot."""
        np.multiply(g, inverse_sq, out=self._scratch)
        return float(np.dot(self._scratch, g))
