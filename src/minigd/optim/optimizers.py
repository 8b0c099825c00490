"""SGD (with momentum and Nesterov), RMSprop, Adam and AdamW, as ``torch.optim`` defines them.

Names, defaults and update equations follow torch.optim (2.x documentation), eps outside the square
root. Notation: theta parameters, g gradient, gamma lr, lambda weight_decay, t the step count
(1 for the first step). Every update is written as in-place expressions over the flat arrays;
``tmp`` is a scratch array of the parameters' shape, so a step allocates nothing.

Keras differs in where eps goes: its RMSprop divides by sqrt(v + eps); its Adam adds eps to sqrt(v)
*before* bias correction. ``eps_inside_sqrt=True`` on RMSprop and Adam divides by sqrt(v_hat + eps),
which is Keras' RMSprop exactly and the usual reading of "eps inside" for Adam.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from minigd._validation import check_float, message
from minigd.optim.base import LearningRate, Optimizer, check_unit


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 decay.

    Update (torch.optim.SGD), with momentum mu and dampening tau::

        g <- g + lambda theta
        b <- g                              (t = 1)
        b <- mu b + (1 - tau) g             (t > 1)
        g <- g + mu b  if nesterov, else  g <- b      (only when mu > 0)
        theta <- theta - gamma g
    """

    state_names = ("momentum_buffer",)
    fusable = True

    def __init__(
        self,
        lr: LearningRate = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ) -> None:
        super().__init__(lr, fused)
        self.momentum = check_float("momentum", momentum, minimum=0.0)
        self.dampening = check_float("dampening", dampening, minimum=0.0, maximum=1.0)
        self.nesterov = bool(nesterov)
        self.weight_decay = check_float("weight_decay", weight_decay, minimum=0.0)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(
                message(
                    "nesterov",
                    "used with momentum > 0 and dampening = 0",
                    (momentum, dampening),
                    "As in torch.optim.SGD.",
                )
            )
        if self.momentum == 0:
            self.state_names = ()

    def hyperparameters(self):
        return {
            "momentum": self.momentum,
            "dampening": self.dampening,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def _update(self, p, g, tmp):
        if self._kernels is not None:
            self._fused_update(p, g)
            return
        self._add_weight_decay(p, g, tmp)
        if self.momentum:
            b = self.state["momentum_buffer"]
            if self.steps == 1:
                np.copyto(b, g)
            else:
                b *= self.momentum
                if self.dampening:
                    np.multiply(g, 1.0 - self.dampening, out=tmp)
                    b += tmp
                else:
                    b += g
            if self.nesterov:
                np.multiply(b, self.momentum, out=tmp)
                g += tmp
            else:
                g = b
        np.multiply(g, self.lr, out=tmp)
        p -= tmp

    def _fused_update(self, p, g):
        """The same update in one compiled pass (minigd._kernels), scalars in p's dtype."""
        t, k = p.dtype.type, self._kernels
        lr, wd = t(self.lr), t(self.weight_decay)
        if not self.momentum:
            k.sgd(p, g, lr, wd)
            return
        # torch's first step sets the buffer to the gradient itself: b = 0 * b + 1 * g
        first = self.steps == 1
        decay, damp = t(0 if first else self.momentum), t(1 if first else 1 - self.dampening)
        buf = self.state["momentum_buffer"]
        if self.nesterov:
            k.sgd_nesterov(p, g, buf, lr, wd, decay, damp, t(self.momentum))
        else:
            k.sgd_momentum(p, g, buf, lr, wd, decay, damp)


class RMSprop(Optimizer):
    """Divides the gradient by a running root mean square of its recent values (Hinton 2012).

    Update (torch.optim.RMSprop), smoothing constant alpha, momentum mu::

        g <- g + lambda theta
        v <- alpha v + (1 - alpha) g^2
        v~ <- v - g_avg^2 with g_avg <- alpha g_avg + (1 - alpha) g   if centered, else v~ = v
        d <- sqrt(v~) + eps        (eps_inside_sqrt: d <- sqrt(v~ + eps), Keras' convention)
        b <- mu b + g / d ;  theta <- theta - gamma b          if mu > 0
        theta <- theta - gamma g / d                            otherwise
    """

    state_names = ("square_avg", "momentum_buffer", "grad_avg")
    adaptive = True

    def __init__(
        self,
        lr: LearningRate = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        eps_inside_sqrt: bool = False,
    ) -> None:
        super().__init__(lr)
        self.alpha = check_float("alpha", alpha, minimum=0.0, maximum=1.0)
        self.eps = check_float("eps", eps, minimum=0.0)
        self.weight_decay = check_float("weight_decay", weight_decay, minimum=0.0)
        self.momentum = check_float("momentum", momentum, minimum=0.0)
        self.centered = bool(centered)
        self.eps_inside_sqrt = bool(eps_inside_sqrt)
        self.state_names = (
            ("square_avg",)
            + (("momentum_buffer",) if self.momentum else ())
            + (("grad_avg",) if self.centered else ())
        )

    def hyperparameters(self):
        return {
            "alpha": self.alpha,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "centered": self.centered,
            "eps_inside_sqrt": self.eps_inside_sqrt,
        }

    def preconditioner(self, out=None):
        if not self.steps:
            return None
        v = np.empty_like(self.state["square_avg"]) if out is None else out
        np.copyto(v, self.state["square_avg"])
        if self.centered:
            v -= np.square(self.state["grad_avg"])
        return _denominator(v, self.eps, self.eps_inside_sqrt)

    def _update(self, p, g, tmp):
        a = self.alpha
        self._add_weight_decay(p, g, tmp)
        v = self.state["square_avg"]
        v *= a
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - a
        v += tmp
        if self.centered:
            g_avg = self.state["grad_avg"]
            g_avg *= a
            np.multiply(g, 1.0 - a, out=tmp)
            g_avg += tmp
            np.multiply(g_avg, g_avg, out=tmp)
            np.subtract(v, tmp, out=tmp)
        else:
            np.copyto(tmp, v)
        if self.eps_inside_sqrt:
            tmp += self.eps
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(tmp, out=tmp)
            tmp += self.eps
        np.divide(g, tmp, out=tmp)  # tmp = g / d
        if self.momentum:
            b = self.state["momentum_buffer"]
            b *= self.momentum
            b += tmp
            np.multiply(b, self.lr, out=tmp)
        else:
            tmp *= self.lr
        p -= tmp


class Adam(Optimizer):
    """Adaptive moment estimation (Kingma and Ba 2015), torch.optim.Adam.

    Update, betas (beta1, beta2)::

        g <- g + lambda theta                          (L2 penalty; AdamW decays theta instead)
        m <- beta1 m + (1 - beta1) g
        v <- beta2 v + (1 - beta2) g^2
        v_max <- max(v_max, v) and use v_max for v    (amsgrad)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
        theta <- theta - gamma m_hat / (sqrt(v_hat) + eps)
                  (eps_inside_sqrt: theta <- theta - gamma m_hat / sqrt(v_hat + eps))
    """

    state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    adaptive = True
    decoupled = False
    fusable = True

    def __init__(
        self,
        lr: LearningRate = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        eps_inside_sqrt: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(lr, fused)
        if len(betas) != 2:
            raise ValueError(message("betas", "a pair (beta1, beta2)", betas))
        self.betas = (check_unit("betas[0]", betas[0]), check_unit("betas[1]", betas[1]))
        self.eps = check_float("eps", eps, minimum=0.0)
        self.weight_decay = check_float("weight_decay", weight_decay, minimum=0.0)
        self.amsgrad = bool(amsgrad)
        self.eps_inside_sqrt = bool(eps_inside_sqrt)
        self.state_names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())

    def hyperparameters(self):
        return {
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "amsgrad": self.amsgrad,
            "eps_inside_sqrt": self.eps_inside_sqrt,
        }

    def preconditioner(self, out=None):
        if not self.steps:
            return None
        v = self.state["max_exp_avg_sq" if self.amsgrad else "exp_avg_sq"]
        bias = 1.0 - self.betas[1] ** self.steps
        if self._kernels is not None and not self.eps_inside_sqrt and _fits(out, v):
            out = np.empty_like(v) if out is None else out  # one compiled pass, not three
            t = v.dtype.type
            self._kernels.divisor(v, out, t(1.0 / math.sqrt(bias)), t(self.eps))
            return out
        v_hat = np.divide(v, bias, out=out)
        return _denominator(v_hat, self.eps, self.eps_inside_sqrt)

    def _update(self, p, g, tmp):
        b1, b2 = self.betas
        t = self.steps
        if self._kernels is not None and not self.eps_inside_sqrt:
            self._fused_update(p, g, 1.0 - b1**t, 1.0 - b2**t)
            return
        if self.decoupled:
            p *= 1.0 - self.lr * self.weight_decay
        else:
            self._add_weight_decay(p, g, tmp)
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        m *= b1
        np.multiply(g, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        if self.amsgrad:
            v_max = self.state["max_exp_avg_sq"]
            np.maximum(v_max, v, out=v_max)
            v = v_max
        bias1, bias2 = 1.0 - b1**t, 1.0 - b2**t
        if self.eps_inside_sqrt:
            np.multiply(v, 1.0 / bias2, out=tmp)
            tmp += self.eps
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(v, out=tmp)
            tmp *= 1.0 / math.sqrt(bias2)
            tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / bias1
        p -= tmp

    def _fused_update(self, p, g, bias1, bias2):
        """The same update in one compiled pass (minigd._kernels), scalars in p's dtype."""
        t, k = p.dtype.type, self._kernels
        b1, b2 = self.betas
        wd = self.weight_decay
        l2, decay = (0.0, 1.0 - self.lr * wd) if self.decoupled else (wd, 1.0)
        args = (
            t(self.lr / bias1),
            t(b1),
            t(1 - b1),
            t(b2),
            t(1 - b2),
            t(self.eps),
            t(l2),
            t(decay),
            t(1 / math.sqrt(bias2)),
        )
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        if self.amsgrad:
            k.adam_amsgrad(p, g, m, v, self.state["max_exp_avg_sq"], *args)
        else:
            k.adam(p, g, m, v, *args)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019), torch.optim.AdamW.

    As Adam, except that instead of adding lambda theta to g, each step first shrinks the
    parameters: theta <- theta (1 - gamma lambda). Default weight_decay 1e-2, as torch.
    """

    decoupled = True

    def __init__(
        self,
        lr: LearningRate = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        eps_inside_sqrt: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad, eps_inside_sqrt, fused)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": SGD,
    "momentum": partial(SGD, momentum=0.9),
    "nesterov": partial(SGD, momentum=0.9, nesterov=True),
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
}  # every name an optimizer may be given by: the API, the estimators and the CLI's choices


def get_optimizer(optimizer: str | Optimizer, lr: LearningRate | None = None) -> Optimizer:
    """An optimizer by name (a key of ``OPTIMIZERS``) or as given.

    "momentum" is SGD with momentum 0.9 and "nesterov" adds Nesterov's correction. With lr None
    each takes its torch default (SGD, which has none in torch, takes 0.01 as Keras does).
    """
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            raise ValueError("pass lr to the optimizer's constructor, not beside an Optimizer.")
        return optimizer
    name = str(optimizer).lower()
    if name not in OPTIMIZERS:
        known = ", ".join(map(repr, OPTIMIZERS))
        raise ValueError(message("optimizer", f"one of {known} or an Optimizer", optimizer))
    return OPTIMIZERS[name](**({} if lr is None else {"lr": lr}))


def _fits(out: np.ndarray | None, like: np.ndarray) -> bool:
    """Whether a compiled loop may write ``like``'s values into ``out`` (None: a new array): the
    same shape, dtype and contiguous layout; anything else takes the NumPy expressions, which
    cast or raise (a compiled loop does not check its bounds)."""
    if out is None:
        return True
    return out.shape == like.shape and out.dtype == like.dtype and out.flags.c_contiguous


def _denominator(v: np.ndarray, eps: float, inside: bool) -> np.ndarray:
    """``sqrt(v) + eps`` (or ``sqrt(v + eps)``), in place in ``v``, an array of the caller's:
    what Adam and RMSprop divide by."""
    if inside:
        v += eps
    np.sqrt(v, out=v)
    if not inside:
        v += eps
    return v
