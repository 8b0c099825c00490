"""A problem whose gradient noise scale is known exactly: least squares with Gaussian noise and an
isotropic Hessian, the case McCandlish et al. 2018 solve in closed form (there B_noise = B_simple).

Data: y = x.w* + b* + e, x ~ N(0, I_d), e ~ N(0, sigma^2), fitted by ``linear_regression`` (MSE,
with a bias). Each data set is *exactly* isotropic: X is centred and whitened so that X^T X / n = I,
and the noise is made orthogonal to [X, 1] with mean square exactly sigma^2. Then, with the
parameter error delta = (u, c) = (w - w*, b - b*):

    loss        = |delta|^2 + sigma^2                         (on the set itself, exactly)
    G           = 2 delta,  Hessian = 2 I
    tr(Sigma)   = 4 (d |delta|^2 + 2 |u|^2 + (d + 1) sigma^2)  (Gaussian fourth moments)
    B_noise     = tr(H Sigma) / (G^T H G) = tr(Sigma) / |G|^2
                = d + 2 |u|^2 / |delta|^2 + (d + 1) sigma^2 / |delta|^2

The fourth moments hold for the sample to about 1/sqrt(n). As the loss falls toward sigma^2,
B_noise grows without bound: the regime where a growing batch pays.

``expected_steps`` follows the expected loss of SGD at a constant learning rate on this problem:
E|delta'|^2 = |delta|^2 (1 - 2 lr)^2 + lr^2 tr(Sigma) / B (1 - (B - 1)/(m - 1)), the last factor
for batches drawn without replacement from m samples. The steps it predicts per batch size (best
lr of a grid) are what a sweep should measure, so the critical batch size fitted to them is the
model's prediction of the sweep's B_crit, to hold against B_noise at the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minigd._validation import check_float, check_int
from minigd.data.files import Dataset


@dataclass(frozen=True)
class IsotropicLeastSquares:
    """The problem's truth (d, sigma, w*, b*) and its exactly isotropic data sets."""

    d: int = 8
    sigma: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("d", self.d, minimum=1)
        check_float("sigma", self.sigma, minimum=0.0, inclusive=False)

    @property
    def truth(self) -> tuple[np.ndarray, float]:
        """(w*, b*), drawn once from the seed: |w*| ~ 2 sqrt(d)."""
        rng = np.random.default_rng((self.seed, 1))
        return 2.0 * rng.standard_normal(self.d), float(rng.standard_normal())

    def data(self, n: int, seed: int = 0, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
        """(X of (n, d), y of (n,)): whitened inputs, noise orthogonal to them (see above)."""
        n = check_int("n", n, minimum=4 * (self.d + 2))
        rng = np.random.default_rng((self.seed, 2, seed))
        X = rng.standard_normal((n, self.d))
        X -= X.mean(axis=0)
        X = X @ np.linalg.inv(np.linalg.cholesky(X.T @ X / n)).T  # X^T X / n = I
        Z = np.column_stack([X, np.ones(n)])
        e = rng.standard_normal(n)
        e -= Z @ np.linalg.lstsq(Z, e, rcond=None)[0]  # orthogonal to every column of Z
        e *= self.sigma / np.sqrt(e @ e / n)
        w, b = self.truth
        return X.astype(dtype), (X @ w + b + e).astype(dtype)

    def split(self, n_train: int, n_test: int, dtype=np.float32) -> tuple[Dataset, Dataset]:
        """(train, test) Datasets, each exactly isotropic: what ``sweep`` and ``compare`` take."""
        name = f"isotropic least squares (d={self.d}, sigma={self.sigma:g})"
        return (
            Dataset(*self.data(n_train, 0, dtype), name=name),
            Dataset(*self.data(n_test, 1, dtype), name=name + ", held out"),
        )

    def error(self, model) -> tuple[np.ndarray, float]:
        """(u, c) = (w - w*, b - b*) of a ``linear_regression`` model."""
        weights = dict(model.named_parameters())
        w = np.asarray(weights["0.weight"], np.float64).reshape(-1)
        b = float(np.asarray(weights["0.bias"]).reshape(-1)[0])
        w_star, b_star = self.truth
        return w - w_star, b - b_star

    def components(self, model) -> tuple[float, float]:
        """(|G|^2, tr(Sigma)) at the model's parameters, from the closed form."""
        u, c = self.error(model)
        uu = float(u @ u)
        dd = uu + c * c
        return 4.0 * dd, 4.0 * (self.d * dd + 2.0 * uu + (self.d + 1) * self.sigma**2)

    def b_noise(self, model) -> float:
        """B_noise = B_simple at the model's parameters."""
        g2, trace = self.components(model)
        return trace / g2

    def b_noise_at_loss(self, loss: float) -> float:
        """B_noise where the loss is ``loss``, taking the error along w (|u| = |delta|): the
        value at a loss target, whichever way the run arrived."""
        dd = check_float("loss", loss, minimum=self.sigma**2, inclusive=False) - self.sigma**2
        return self.d + 2.0 + (self.d + 1) * self.sigma**2 / dd

    def loss(self, model) -> float:
        """The loss on any of the problem's data sets (exact)."""
        u, c = self.error(model)
        return float(u @ u + c * c + self.sigma**2)

    def expected_steps(
        self, batch_size: int, lr: float, loss: float, start: float, m: int, most: int = 100_000
    ) -> int | None:
        """Steps until SGD's expected loss falls to ``loss`` from ``start`` (the initial model's
        loss), at a constant ``lr`` with batches of ``batch_size`` from ``m`` samples; None when
        it never does (the noise floor is above it, or it diverges) within ``most`` steps."""
        d, s2 = self.d, self.sigma**2
        dd, goal = start - s2, loss - s2
        shrink = (1.0 - 2.0 * lr) ** 2
        noise = lr * lr * 4.0 / batch_size * (1.0 - (batch_size - 1) / max(1, m - 1))
        for step in range(1, most + 1):
            dd = dd * shrink + noise * ((d + 2) * dd + (d + 1) * s2)
            if dd <= goal:
                return step
            if not math.isfinite(dd) or dd > 1e12:
                return None
        return None

    def predicted_steps(
        self, batch_sizes, lrs, loss: float, start: float, m: int
    ) -> dict[int, float]:
        """The model's steps to ``loss`` per batch size, at the best of ``lrs`` for each."""
        out = {}
        for b in batch_sizes:
            steps = [self.expected_steps(b, lr, loss, start, m) for lr in lrs]
            steps = [s for s in steps if s is not None]
            if steps:
                out[int(b)] = float(min(steps))
        return out
