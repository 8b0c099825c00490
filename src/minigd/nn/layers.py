"""Layers with hand-written forward and backward passes.

Shapes: a batch is (n, features), samples as rows. Every layer writes its outputs into buffers it
keeps per input shape, so after the first step of a given batch size a train step allocates no
array memory. Two consequences for callers:

- An array a layer returns is valid until that layer runs again on the same shape: copy to keep it.
- ``backward`` may overwrite the ``dy`` it is given (activations scale it in place).

Trainable parameters are not owned by the layers: ``Sequential`` binds each layer's ``weight`` and
``bias`` (and their gradients) to views of one flat vector. Gradients are *written*, not
accumulated, so no zeroing is needed between steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from minigd._validation import check_float, check_int, message
from minigd.nn import registry
from minigd.nn.buffers import Buffers
from minigd.nn.init import initialize

LAYERS: dict[str, type[Layer]] = {}  # saved "type" -> class, filled as layers are defined
ACTIVATIONS: dict[str, type[Layer]] = {}  # mlp's activation= name -> class


class Layer:
    """Base class: a forward pass, a backward pass, named parameters and buffers.

    Attributes:
        needs_output: backward reads this layer's own output (so a later layer must not
            overwrite it in place).
        supports_inplace: forward may overwrite its input instead of a buffer of its own.
        transposed_storage: names of 2-D parameters kept in the flat vector as their transpose
            (the layer sees an F-ordered view of the usual shape).
        activation: the name ``mlp(activation=...)`` knows this layer by, if it is one.
        init_scheme: how to initialise the Dense layer before this one ("he" keeps the variance
            of ReLU-like outputs; None leaves the choice to the next layer, else "glorot").

    A subclass is saved under its class name and registered when it is defined, so
    ``Sequential.load`` finds it once its module is imported; pass ``register=False`` in the
    class statement for a base class that is never saved.
    """

    needs_output: ClassVar[bool] = False
    supports_inplace: ClassVar[bool] = False
    transposed_storage: ClassVar[frozenset[str]] = frozenset()
    activation: ClassVar[str | None] = None
    init_scheme: ClassVar[str | None] = None

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not register:
            return
        registry.register(LAYERS, cls.__name__, cls, "layer")
        if "activation" in cls.__dict__ and cls.activation is not None:
            registry.register(ACTIVATIONS, cls.activation, cls, "activation")

    def __init__(self) -> None:
        self.inplace = False
        self._buffers = Buffers()

    # -- parameters -----------------------------------------------------------------------
    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of each trainable parameter, in torch's order."""
        return []

    def bind(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Receives views of the flat parameter and gradient vectors."""
        for name, view in params.items():
            setattr(self, name, view)
        for name, view in grads.items():
            setattr(self, "grad_" + name, view)

    def init_params(self, rng: np.random.Generator, scheme: str) -> None:
        """Fills the bound parameters with their initial values."""

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the model (BatchNorm running statistics)."""
        return {}

    def buffer_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of each buffer, known before the layer is bound (to check a file)."""
        return [(name, np.shape(value)) for name, value in self.buffers().items()]

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-friendly, to rebuild the layer."""
        return {}

    # -- memory ---------------------------------------------------------------------------
    def output_width(self, width: int) -> int:
        """Features per sample out of the layer, given ``width`` in."""
        return width

    def batch_bytes(self, n: int, width: int, itemsize: int, first: bool) -> tuple[int, int]:
        """(bytes kept for the backward pass, bytes of the dL/dx buffer) at batch size n.

        The layer allocates these buffers, so it is the one that knows their size; the memory
        model (``minigd.batchsize.memory``) adds them up. Default: an output buffer of the
        input's shape, unless the layer works in place.
        """
        return (0 if self.inplace else n * width * itemsize), 0

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def _buffer(self, tag: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A scratch array for this tag and shape, created once and then reused."""
        return self._buffers.get(tag, shape, dtype)

    def _ones(self, n: int, dtype: Any) -> np.ndarray:
        return self._buffers.ones(n, dtype)

    def _out(self, x: np.ndarray, tag: str = "y") -> np.ndarray:
        return x if self.inplace else self._buffer(tag, x.shape, x.dtype)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _row_sq(a: np.ndarray) -> np.ndarray:
    """Each row's squared norm."""
    return _row_dot(a, a)


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row of ``a`` dotted with the same row of ``b``: NumPy 2's ``vecdot`` ufunc, or
    einsum before it (slower to call)."""
    if _vecdot is not None:
        return _vecdot(a, b)
    return np.einsum("ij,ij->i", a, b)


_vecdot = getattr(np, "vecdot", None)


class Dense(Layer):
    """Fully connected layer, y = x W^T + b, with W of shape (out_features, in_features).

    The weight has torch.nn.Linear's shape, so weights copy between the two without transposes.
    In memory it is stored transposed, (in_features, out_features) row-major: the weight gradient
    x^T dy is then a C-ordered BLAS output of shape (in, out), which OpenBLAS computes faster than
    dy^T x of shape (out, in) (784x128 from a batch of 64: ~110 us against ~180 us here).

    Args:
        in_features: n, the width of the input.
        out_features: the width of the output.
        bias: whether to add a learned bias.
        init: "he" (normal, std sqrt(2/n), for ReLU), "glorot" (uniform, limit sqrt(6/(n+out))),
            or None to let Sequential choose from the activation that follows.
    """

    transposed_storage = frozenset({"weight"})
    # set by noise.ExampleNoise for the steps it measures: backward then also writes
    # ``example_sq_norms``, each sample's own gradient norm squared over this layer's parameters
    # (each coordinate divided by d, when ``example_inverse_sq`` holds 1 / d^2: Adam's divisor)
    track_example_norms = False
    example_inverse_sq: dict[str, np.ndarray] | None = None

    def __init__(
        self, in_features: int, out_features: int, *, bias: bool = True, init: str | None = None
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.use_bias = bool(bias)
        self.init = init

    def param_shapes(self):
        shapes = [("weight", (self.out_features, self.in_features))]
        if self.use_bias:
            shapes.append(("bias", (self.out_features,)))
        return shapes

    def init_params(self, rng, scheme):
        initialize(self.weight, self.init or scheme, rng)
        if self.use_bias:
            self.bias.fill(0)

    def config(self):
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.use_bias,
            "init": self.init,
        }

    def output_width(self, width):
        return self.out_features

    def batch_bytes(self, n, width, itemsize, first):
        # the output, and dL/dx unless this is the first layer (nothing asks for that one)
        return n * self.out_features * itemsize, 0 if first else n * self.in_features * itemsize

    def forward(self, x, training):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                message(
                    "the input of Dense",
                    f"of shape (n, {self.in_features})",
                    x,
                    "Check the model's input width against X's features (and sample_axis).",
                )
            )
        self._x = x
        y = self._buffer("y", (x.shape[0], self.out_features), self.weight.dtype)
        np.matmul(x, self.weight.T, out=y)
        if self.use_bias:
            y += self.bias
        return y

    def backward(self, dy, need_dx=True):
        # dL/dW = dy^T x, written as its transpose x^T dy into the C-ordered storage;
        # dL/db = sum over the batch of dy; dL/dx = dy W
        grad_weight_t = self.grad_weight.T
        if self.track_example_norms:
            self.example_sq_norms = self._example_sq_norms(dy)
        if dy.shape[0] == 1:
            # an outer product: np.matmul takes a slow non-BLAS loop for an inner size of 1
            # (~160 us at 128x784, against ~25 us for np.dot), which dominated SGD at B=1
            np.dot(self._x.T, dy, out=grad_weight_t)
        else:
            np.matmul(self._x.T, dy, out=grad_weight_t)
        if self.use_bias:
            np.matmul(self._ones(dy.shape[0], dy.dtype), dy, out=self.grad_bias)
        if not need_dx:
            return None
        dx = self._buffer("dx", self._x.shape, dy.dtype)
        np.matmul(dy, self.weight, out=dx)
        return dx

    def _example_sq_norms(self, dy: np.ndarray) -> np.ndarray:
        """|g_i|^2 for each sample i, without forming g_i: sample i's weight gradient is the
        outer product dy_i x_i^T, whose squared norm is |dy_i|^2 |x_i|^2, and its bias gradient
        is dy_i. ``dy`` is the batch-mean loss's gradient, 1/n of each sample's own: hence n^2."""
        n = dy.shape[0]
        if self.example_inverse_sq is not None:
            return self._divided_sq_norms(dy) * (n * n)
        x_sq = _row_sq(self._x).astype(np.float64)
        if self.use_bias:
            x_sq += 1.0
        x_sq *= _row_sq(dy)
        x_sq *= n * n
        return x_sq

    def _divided_sq_norms(self, dy: np.ndarray) -> np.ndarray:
        """Each sample's |g_i / d|^2 for a divisor d per coordinate: with u = 1 / d^2 laid out
        as the weight, sum_jk dy_ij^2 x_ik^2 u_jk = (x_i^2 @ u^T) . dy_i^2, one product the
        size of backward's dx, and dy_i^2 . u_bias for the bias."""
        u = self.example_inverse_sq
        dy_sq = np.square(dy)
        per_sample = _row_dot(np.square(self._x) @ u["weight"].T, dy_sq)
        if self.use_bias:
            per_sample += dy_sq @ u["bias"]
        return per_sample.astype(np.float64)


class ReLU(Layer):
    """y = max(x, 0); dy/dx = 1 where y > 0."""

    needs_output = True
    supports_inplace = True
    activation = "relu"
    init_scheme = "he"

    def forward(self, x, training):
        y = self._out(x)
        np.maximum(x, 0, out=y)
        self._y = y
        return y

    def backward(self, dy, need_dx=True):
        mask = self._buffer("mask", dy.shape, np.bool_)
        np.greater(self._y, 0, out=mask)
        np.multiply(dy, mask, out=dy)
        return dy

    def batch_bytes(self, n, width, itemsize, first):
        out, dx = super().batch_bytes(n, width, itemsize, first)
        return out + n * width, dx  # and the boolean mask


class LeakyReLU(Layer):
    """y = x for x > 0, else negative_slope * x (torch's default slope 0.01)."""

    needs_output = True
    supports_inplace = True
    activation = "leaky_relu"
    init_scheme = "he"

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = check_float(
            "negative_slope", negative_slope, minimum=0.0, maximum=1.0
        )

    def config(self):
        return {"negative_slope": self.negative_slope}

    def forward(self, x, training):
        scaled = self._buffer("scaled", x.shape, x.dtype)
        np.multiply(x, self.negative_slope, out=scaled)
        y = self._out(x)
        np.maximum(x, scaled, out=y)  # valid because 0 <= slope <= 1
        self._y = y
        return y

    def backward(self, dy, need_dx=True):
        slope = self._buffer("slope", dy.shape, dy.dtype)
        np.greater(self._y, 0, out=slope)
        slope *= 1.0 - self.negative_slope
        slope += self.negative_slope
        np.multiply(dy, slope, out=dy)
        return dy

    def batch_bytes(self, n, width, itemsize, first):
        out, dx = super().batch_bytes(n, width, itemsize, first)
        return out + 2 * n * width * itemsize, dx  # the scaled input and the slope


class Tanh(Layer):
    """y = tanh(x); dy/dx = 1 - y^2."""

    needs_output = True
    supports_inplace = True
    activation = "tanh"
    init_scheme = "glorot"

    def forward(self, x, training):
        y = self._out(x)
        np.tanh(x, out=y)
        self._y = y
        return y

    def backward(self, dy, need_dx=True):
        deriv = self._buffer("deriv", dy.shape, dy.dtype)
        np.multiply(self._y, self._y, out=deriv)
        np.subtract(1, deriv, out=deriv)
        np.multiply(dy, deriv, out=dy)
        return dy

    def batch_bytes(self, n, width, itemsize, first):
        out, dx = super().batch_bytes(n, width, itemsize, first)
        return out + n * width * itemsize, dx  # the derivative


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)); dy/dx = y (1 - y)."""

    needs_output = True
    supports_inplace = True
    activation = "sigmoid"
    init_scheme = "glorot"

    def forward(self, x, training):
        y = self._out(x)
        stable_sigmoid(x, out=y)
        self._y = y
        return y

    def backward(self, dy, need_dx=True):
        deriv = self._buffer("deriv", dy.shape, dy.dtype)
        np.subtract(1, self._y, out=deriv)
        deriv *= self._y
        np.multiply(dy, deriv, out=dy)
        return dy

    def batch_bytes(self, n, width, itemsize, first):
        out, dx = super().batch_bytes(n, width, itemsize, first)
        return out + 4 * n * width * itemsize, dx  # the derivative and the stable temporaries


def stable_sigmoid(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp is only taken of -|x|."""
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)  # e = exp(-|x|) in (0, 1]
    positive = x >= 0
    np.divide(1.0, 1.0 + e, out=out, where=positive)
    np.divide(e, 1.0 + e, out=out, where=~positive)
    return out


class Dropout(Layer):
    """Zeroes each input with probability p in training and scales the rest by 1/(1-p).

    The mask of the k-th training forward pass is drawn from ``default_rng((seed, k))``: runs are
    reproducible, and k is saved with the model so a resumed run draws the masks it would have.
    In evaluation it is the identity, as torch.nn.Dropout.
    """

    supports_inplace = True

    def __init__(self, p: float = 0.5, *, seed: int = 0) -> None:
        super().__init__()
        self.p = check_float("p", p, minimum=0.0, maximum=1.0, inclusive=True)
        if self.p >= 1.0:
            raise ValueError(
                message("the dropout probability p", "in [0, 1)", p, "p=1 would drop every unit.")
            )
        self.seed = check_int("seed", seed, minimum=0)
        self.calls = np.zeros((), dtype=np.int64)

    def config(self):
        return {"p": self.p, "seed": self.seed}

    def buffers(self):
        return {"calls": self.calls}

    def forward(self, x, training):
        if not training or self.p == 0.0:
            self._mask = None
            return x
        mask = self._buffer("mask", x.shape, x.dtype)
        rng = np.random.default_rng((self.seed, int(self.calls)))
        rng.random(out=mask, dtype=x.dtype)
        self.calls += 1
        np.greater_equal(mask, self.p, out=mask)
        mask *= 1.0 / (1.0 - self.p)
        self._mask = mask
        y = self._out(x)
        np.multiply(x, mask, out=y)
        return y

    def backward(self, dy, need_dx=True):
        if self._mask is not None:
            np.multiply(dy, self._mask, out=dy)
        return dy

    def batch_bytes(self, n, width, itemsize, first):
        out, dx = super().batch_bytes(n, width, itemsize, first)
        return out + (n * width * itemsize if self.p > 0 else 0), dx  # the mask


class BatchNorm(Layer):
    """Batch normalization over features, as torch.nn.BatchNorm1d on (n, features).

    Training: y = (x - mean_B) / sqrt(var_B + eps) * weight + bias with the batch's mean and biased
    variance; the running statistics move by ``momentum`` toward the batch mean and the *unbiased*
    batch variance. Evaluation uses the running statistics.

    A batch of one sample has no variance to estimate; training on it is an error.

    Data-parallel training sets ``sync`` (``minigd.distributed.DataParallel``): the batch
    statistics and the two sums of the backward pass are then summed over the ranks' shares of
    the global batch (a synchronized BatchNorm), so N ranks compute what one process computes.
    """

    sync = None  # an object with .count (the global batch) and .allreduce(array), or None

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = check_int("num_features", num_features, minimum=1)
        self.eps = check_float("eps", eps, minimum=0.0, inclusive=False)
        self.momentum = check_float("momentum", momentum, minimum=0.0, maximum=1.0)
        self.num_batches_tracked = np.zeros((), dtype=np.int64)
        # the running statistics are allocated in bind(), in the parameters' dtype: building the
        # layer allocates nothing, so an architecture can be checked before memory is committed

    def param_shapes(self):
        return [("weight", (self.num_features,)), ("bias", (self.num_features,))]

    def buffer_shapes(self):
        n = (self.num_features,)
        return [("running_mean", n), ("running_var", n), ("num_batches_tracked", ())]

    def bind(self, params, grads):
        super().bind(params, grads)
        dtype = params["weight"].dtype
        self.running_mean = np.zeros(self.num_features, dtype)
        self.running_var = np.ones(self.num_features, dtype)

    def init_params(self, rng, scheme):
        self.weight.fill(1)
        self.bias.fill(0)
        self.running_mean.fill(0)
        self.running_var.fill(1)
        self.num_batches_tracked[...] = 0

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def batch_bytes(self, n, width, itemsize, first):
        # the output, the normalized input and a scratch array; and dL/dx
        return 3 * n * width * itemsize, n * width * itemsize

    def buffers(self):
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "num_batches_tracked": self.num_batches_tracked,
        }

    def forward(self, x, training):
        n, d = x.shape
        y = self._buffer("y", x.shape, x.dtype)
        if not training:
            scale = self._buffer("scale", (d,), x.dtype)
            shift = self._buffer("shift", (d,), x.dtype)
            np.add(self.running_var, self.eps, out=scale)
            np.sqrt(scale, out=scale)
            np.divide(self.weight, scale, out=scale)
            np.multiply(self.running_mean, scale, out=shift)
            np.subtract(self.bias, shift, out=shift)
            np.multiply(x, scale, out=y)
            y += shift
            self._training, self._x, self._scale = False, x, scale
            return y
        total = n if self.sync is None else self.sync.count  # the global batch when synced
        if total < 2:
            raise ValueError(
                "BatchNorm cannot train on a batch of 1 sample (its variance is undefined). "
                "Use last_batch='merge' (fold the last small batch into the one before) or "
                "'drop', or a batch size of at least 2."
            )
        mean = self._buffer("mean", (d,), x.dtype)
        var = self._buffer("var", (d,), x.dtype)
        invstd = self._buffer("invstd", (d,), x.dtype)
        xhat = self._buffer("xhat", x.shape, x.dtype)
        self._batch_mean(x, mean)
        np.subtract(x, mean, out=xhat)
        np.multiply(xhat, xhat, out=y)  # y as scratch for the squares
        self._batch_mean(y, var)
        np.add(var, self.eps, out=invstd)
        np.sqrt(invstd, out=invstd)
        np.divide(1.0, invstd, out=invstd)
        xhat *= invstd
        np.multiply(xhat, self.weight, out=y)
        y += self.bias
        m = self.momentum
        self.running_mean *= 1.0 - m
        self.running_mean += m * mean
        self.running_var *= 1.0 - m
        self.running_var += (m * total / (total - 1)) * var
        self.num_batches_tracked += 1
        self._training, self._xhat, self._invstd = True, xhat, invstd
        return y

    def _batch_mean(self, a: np.ndarray, out: np.ndarray) -> None:
        """Column means of ``a`` over the batch: this process's rows, or every rank's."""
        if self.sync is None:
            np.mean(a, axis=0, out=out)
            return
        np.sum(a, axis=0, out=out)
        self.sync.allreduce(out)
        out /= self.sync.count

    def backward(self, dy, need_dx=True):
        if not self._training:
            return self._backward_eval(dy, need_dx)
        n = dy.shape[0]
        xhat = self._xhat
        scratch = self._buffer("scratch", dy.shape, dy.dtype)
        np.sum(dy, axis=0, out=self.grad_bias)
        np.multiply(dy, xhat, out=scratch)
        np.sum(scratch, axis=0, out=self.grad_weight)
        if not need_dx:
            return None
        # dx = weight * invstd * (dy - sum(dy)/n - xhat * sum(dy * xhat)/n)
        sum_dy, sum_dy_xhat = self._global_sums(n)
        coef = self._buffer("coef", self.grad_weight.shape, dy.dtype)
        np.multiply(sum_dy_xhat, 1.0 / n, out=coef)
        dx = self._buffer("dx", dy.shape, dy.dtype)
        np.multiply(xhat, coef, out=scratch)
        np.subtract(dy, scratch, out=dx)
        np.multiply(sum_dy, 1.0 / n, out=coef)
        dx -= coef
        np.multiply(self.weight, self._invstd, out=coef)
        dx *= coef
        return dx

    def _global_sums(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(sum of dy, sum of dy * xhat) in this rank's scale. Each rank's dy carries its own
        1/n_r; with a global batch of B, the true sums are S = sum_r (n_r / B) s_r, and this
        rank's dx needs S / n_r in place of s_r / n_r: one Allreduce of 2 x features."""
        if self.sync is None:
            return self.grad_bias, self.grad_weight
        d = self.grad_bias.shape[0]
        sums = self._buffer("sums", (2 * d,), self.grad_bias.dtype)
        np.multiply(self.grad_bias, n / self.sync.count, out=sums[:d])
        np.multiply(self.grad_weight, n / self.sync.count, out=sums[d:])
        self.sync.allreduce(sums)
        return sums[:d], sums[d:]

    def _backward_eval(self, dy, need_dx):
        # With fixed statistics the layer is affine: y = x * scale + shift, where
        # scale = weight / sqrt(running_var + eps); d(scale)/d(weight) = scale / weight.
        scratch = self._buffer("scratch", dy.shape, dy.dtype)
        np.sum(dy, axis=0, out=self.grad_bias)
        np.subtract(self._x, self.running_mean, out=scratch)
        scratch *= dy
        np.sum(scratch, axis=0, out=self.grad_weight)
        self.grad_weight /= np.sqrt(self.running_var + self.eps)
        if not need_dx:
            return None
        dx = self._buffer("dx", dy.shape, dy.dtype)
        np.multiply(dy, self._scale, out=dx)
        return dx
