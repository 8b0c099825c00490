"""Fused loops compiled with Numba when it is installed (the ``fast`` extra): optimizer updates,
the softmax cross-entropy, the mini-batch row gather, and the weights of an adaptive optimizer's
divided gradient norms (the noise scale the adaptive batch follows).

The NumPy form of Adam makes 13 passes over the flat parameter vector per step (each of m, v, the
denominator and the update is a few whole-array expressions); at 100k parameters that is ~200 us,
a third of a small-batch step. Compiled, the same equations run in one pass over p, g, m and v.
The loops below are the docstring equations of ``optimizers.py`` written element by element, without
branches (each option has its own loop), with scalars in the parameters' dtype so float32 stays
float32 and vectorizes. Adam with ``eps_inside_sqrt`` keeps its NumPy form.

The softmax cross-entropy takes ~12 NumPy calls on a (B, k) array, ~50 us at B=32-64 where the
arithmetic is a few hundred flops; compiled, it is one pass per row.

A mini-batch gather reads rows scattered over the whole training set, so it waits on memory, not
arithmetic. ``np.take`` copies one row after another; copying eight rows side by side keeps eight
streams of cache misses in flight (rows of 784 float32 out of 60000, medians: 64 rows 21 -> 14 us,
1024 rows 347 -> 251 us; four rows side by side gave 16 and 263 us).

Measuring the noise of Adam's or RMSprop's divided gradient weighs each coordinate by 1 / d^2,
d = max(sqrt(v_hat) + eps, a tenth of their mean): seven NumPy passes over the parameters, 150 us
at 100k float32 (784-128-10), most of a measured step's extra cost. Compiled, Adam's divisor
takes one pass (8 us, ``Adam.preconditioner``), and the floor, square and reciprocal two (19 us,
the mean's sum in vector lanes).

Without Numba (or with ``MINIGD_NO_JIT=1`` in the environment) the optimizers and the loss use
their NumPy expressions and MiniBatches gathers with ``np.take``; ``fused=False`` asks for those
explicitly in an optimizer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from types import SimpleNamespace

_KERNELS: SimpleNamespace | None = None
_TRIED = False
_WARM: set = set()
# name -> (plain Python function, its argument kinds, Numba's fastmath flags): kinds "v" a
# vector, "m" a 2x3 matrix, "s" a scalar, all in the dtype being warmed up, and "i" a vector of
# 2 valid row indices (intp)
_REGISTRY: dict[str, tuple[Callable, str, frozenset[str]]] = {}


def _kernel(kinds: str, fastmath: frozenset[str] = frozenset()) -> Callable[[Callable], Callable]:
    """Registers a loop to be compiled by ``_build``, with the kinds of its arguments and the
    fastmath flags it may take ("reassoc": a sum in vector lanes, in any order)."""

    def register(fn: Callable) -> Callable:
        _REGISTRY[fn.__name__] = (fn, kinds.replace(" ", ""), frozenset(fastmath))
        return fn

    return register


def available() -> bool:
    """True when the compiled kernels can be used."""
    return get() is not None


def get() -> SimpleNamespace | None:
    """The compiled kernels (built once, on first use), or None."""
    global _KERNELS, _TRIED
    if not _TRIED:
        _TRIED = True
        if not os.environ.get("MINIGD_NO_JIT"):
            try:
                _KERNELS = _build()
            except ImportError:
                _KERNELS = None
    return _KERNELS


def warm_up(dtype) -> None:
    """Compiles every kernel for ``dtype`` now, or loads it from Numba's on-disk cache (~1-2 s and
    tens of MB the first time on a machine), so that this one-time cost lands neither inside a
    timed epoch nor inside a memory measurement. A no-op without Numba or when already done."""
    import numpy as np

    kernels, dt = get(), np.dtype(dtype)
    if kernels is None or dt in _WARM:
        return
    _WARM.add(dt)
    example = {
        "v": lambda: np.zeros(4, dt),
        "m": lambda: np.zeros((2, 3), dt),
        "s": lambda: dt.type(0),
        "i": lambda: np.zeros(2, np.intp),
    }
    for name, (_, kinds, _) in _REGISTRY.items():
        getattr(kernels, name)(*(example[k]() for k in kinds))
    mapped = example["m"]()
    mapped.flags.writeable = False  # a file's rows mapped read-only (data.leased_map) are gathered
    kernels.gather_rows(mapped, example["i"](), example["m"]())


def _build() -> SimpleNamespace:
    import numba

    # error_model="numpy": no Python ZeroDivisionError check in the loop, which is what lets
    # LLVM vectorize it (Adam on 100k float32: 46 us instead of 345 us).
    def jit(fn: Callable, fastmath: frozenset[str]) -> Callable:
        options = {"fastmath": set(fastmath)} if fastmath else {}
        return numba.njit(cache=True, nogil=True, error_model="numpy", **options)(fn)

    return SimpleNamespace(**{name: jit(fn, fm) for name, (fn, _, fm) in _REGISTRY.items()})


# -- the loops: the equations of optim/optimizers.py and nn/losses.py, element by element -------
@_kernel("vv ss")
def sgd(p, g, lr, wd):
    for i in range(p.size):
        p[i] -= lr * (g[i] + wd * p[i])


@_kernel("vvv ssss")
def sgd_momentum(p, g, buf, lr, wd, decay, damp):
    for i in range(p.size):
        b = decay * buf[i] + damp * (g[i] + wd * p[i])
        buf[i] = b
        p[i] -= lr * b


@_kernel("vvv sssss")
def sgd_nesterov(p, g, buf, lr, wd, decay, damp, momentum):
    for i in range(p.size):
        d = g[i] + wd * p[i]
        b = decay * buf[i] + damp * d
        buf[i] = b
        p[i] -= lr * (d + momentum * b)


@_kernel("vvvv sssssssss")
def adam(p, g, m, v, step, b1, c1, b2, c2, eps, l2, decay, inv_sqrt_bias2):
    for i in range(p.size):
        d = g[i] + l2 * p[i]
        mi = b1 * m[i] + c1 * d
        vi = b2 * v[i] + c2 * d * d
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step * mi / (math.sqrt(vi) * inv_sqrt_bias2 + eps)


@_kernel("vvvvv sssssssss")
def adam_amsgrad(p, g, m, v, vmax, step, b1, c1, b2, c2, eps, l2, decay, inv_sqrt_bias2):
    for i in range(p.size):
        d = g[i] + l2 * p[i]
        mi = b1 * m[i] + c1 * d
        vi = b2 * v[i] + c2 * d * d
        vm = max(vmax[i], vi)
        m[i] = mi
        v[i] = vi
        vmax[i] = vm
        p[i] = p[i] * decay - step * mi / (math.sqrt(vm) * inv_sqrt_bias2 + eps)


@_kernel("vv ss")
def divisor(v, out, scale, eps):
    """out = sqrt(v) * scale + eps: what Adam divides by (scale 1 / sqrt of the second moment's
    bias correction, as in ``adam``)."""
    for i in range(v.size):
        out[i] = math.sqrt(v[i]) * scale + eps


@_kernel("v s", fastmath=frozenset({"reassoc"}))
def floored_inverse_square(d, floor_fraction):
    """d = 1 / max(d, floor_fraction * mean(d))^2 in place: the weights of a divided gradient's
    norm (``noise.halves.DividedNorms``). The sum runs in vector lanes (reassoc): float32
    partial sums, far within what a floor at a fraction of the mean needs."""
    total = d.dtype.type(0)
    for i in range(d.size):
        total += d[i]
    floor = floor_fraction * total / d.size
    one = d.dtype.type(1)
    for i in range(d.size):
        x = max(d[i], floor)
        d[i] = one / (x * x)


@_kernel("mim")
def softmax_cross_entropy(z, y, p):
    """Mean loss of logits z (n, k) against labels y; writes dL/dz into p."""
    n, k = z.shape
    inv_n = 1.0 / n
    total = 0.0
    for i in range(n):
        label = y[i]
        if label < 0 or label >= k:
            raise IndexError("class label out of range")
        top = z[i, 0]
        for j in range(1, k):
            top = max(top, z[i, j])
        norm = 0.0
        for j in range(k):
            e = math.exp(z[i, j] - top)
            p[i, j] = e
            norm += e
        total += math.log(norm) - (z[i, label] - top)
        scale = inv_n / norm
        for j in range(k):
            p[i, j] *= scale
        p[i, label] -= inv_n
    return total * inv_n


@_kernel("mim")
def gather_rows(src, index, out):
    """out[i] = src[index[i]] for 2-D arrays; the indices must be valid (unchecked)."""
    n, d = index.shape[0], src.shape[1]
    n8 = n - n % 8
    for i in range(0, n8, 8):
        r0, r1, r2, r3 = index[i], index[i + 1], index[i + 2], index[i + 3]
        r4, r5, r6, r7 = index[i + 4], index[i + 5], index[i + 6], index[i + 7]
        for j in range(d):
            out[i, j] = src[r0, j]
            out[i + 1, j] = src[r1, j]
            out[i + 2, j] = src[r2, j]
            out[i + 3, j] = src[r3, j]
            out[i + 4, j] = src[r4, j]
            out[i + 5, j] = src[r5, j]
            out[i + 6, j] = src[r6, j]
            out[i + 7, j] = src[r7, j]
    for i in range(n8, n):
        r = index[i]
        for j in range(d):
            out[i, j] = src[r, j]


def compiled_gather(X):
    """The compiled row gather of the ``fast`` extra for a C-ordered numeric X, else None."""
    kernels = get()
    if kernels is None or not X.flags.c_contiguous or X.dtype.kind not in "fiub" or X.size == 0:
        return None
    return kernels.gather_rows
