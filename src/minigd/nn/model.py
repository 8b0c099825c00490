"""Sequential: layers over one flat parameter vector.

All trainable parameters live in ``params``, one contiguous array; each layer's weight and bias are
views into it, in the order and under the names torch's ``nn.Sequential`` uses ("0.weight",
"0.bias", "2.weight", ...); a Dense weight is stored transposed there (see ``Dense``) and seen
with torch's shape. Gradients live in ``grads`` with the same layout. An optimizer therefore
updates the whole model with a few vectorized expressions over two arrays, and the same flat
gradient is what a checkpoint stores and what the gradient noise scale measures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minigd._validation import check_int, message
from minigd.data.arrays import as_rows, targets_as_rows
from minigd.data.npz import atomic_savez, read_npz
from minigd.nn.architecture import FORMAT, parse_architecture, state_sizes
from minigd.nn.layers import BatchNorm, Dense, Layer
from minigd.nn.losses import Loss, get_loss
from minigd.nn.target_scaling import TargetScaling

TEXT_LIMIT = 16 << 20  # the architecture's JSON and the class list, at the most
EVAL_CHUNK = 4096  # rows per forward pass in predict/evaluate: bounds memory on large inputs


def _view(flat: np.ndarray, part: slice, shape: tuple[int, ...], transposed: bool) -> np.ndarray:
    """The parameter of this ``shape`` at ``part`` of the flat vector; a transposed one is stored
    as its transpose, row-major, and seen as an F-ordered view of ``shape``."""
    if transposed:
        return flat[part].reshape(shape[::-1]).T
    return flat[part].reshape(shape)


class Sequential:
    """A stack of layers trained as one model.

    Args:
        layers: the layers, applied in order.
        loss: the training loss ("mse", "bce", "softmax_cross_entropy" or a Loss).
        seed: seeds the initial weights (``default_rng(seed)``).
        dtype: float32 (default) or float64, for parameters, activations and gradients.
        initialize: False leaves the parameters at zero, for a model whose weights are loaded
            next (``copy``): drawing them is most of a copy's cost (784-128-10 copied in
            2.4 ms with the draw, 0.23 ms without).
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        loss: str | Loss = "mse",
        *,
        seed: int = 0,
        dtype: Any = np.float32,
        initialize: bool = True,
    ) -> None:
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a Sequential model needs at least one layer.")
        self.loss = get_loss(loss)
        self.seed = check_int("seed", seed, minimum=0)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(message("dtype", "float32 or float64", str(self.dtype)))
        self.training = True
        # the original label of each output (sorted), when the model was trained on labels such
        # as 10..100 or "cat"/"dog": predict returns them, evaluate and fit accept them
        self.classes: np.ndarray | None = None
        # a regressor's outputs in standard units, and the mean and scale that map them back to
        # the user's (nn.target_scaling); None: the targets are learned as given
        self.target_scaling: TargetScaling | None = None
        self._allocate()
        for i, layer in enumerate(self.layers):
            before = self.layers[i - 1] if i else None
            layer.inplace = (
                layer.supports_inplace and before is not None and not before.needs_output
            )
        if initialize:
            self.reset_parameters(self.seed)

    def _allocate(self) -> None:
        specs = [
            (i, name, shape)
            for i, layer in enumerate(self.layers)
            for name, shape in layer.param_shapes()
        ]
        sizes = [int(np.prod(shape)) for _, _, shape in specs]
        self.params = np.zeros(sum(sizes), dtype=self.dtype)
        self.grads = np.zeros(sum(sizes), dtype=self.dtype)
        self._names: list[tuple[str, slice, tuple[int, ...], bool]] = []
        offset = 0
        per_layer: dict[int, tuple[dict, dict]] = {}
        for (i, name, shape), size in zip(specs, sizes, strict=True):
            part = slice(offset, offset + size)
            offset += size
            transposed = name in self.layers[i].transposed_storage
            self._names.append((f"{i}.{name}", part, shape, transposed))
            views = per_layer.setdefault(i, ({}, {}))
            views[0][name] = _view(self.params, part, shape, transposed)
            views[1][name] = _view(self.grads, part, shape, transposed)
        for i, layer in enumerate(self.layers):
            params, grads = per_layer.get(i, ({}, {}))
            layer.bind(params, grads)
        # where layer i's parameters start: after its backward, grads[starts[i]:] are final
        per_layer_size = [0] * len(self.layers)
        for (i, _, _), size in zip(specs, sizes, strict=True):
            per_layer_size[i] += size
        self.layer_starts = [sum(per_layer_size[:i]) for i in range(len(self.layers))]

    def reset_parameters(self, seed: int | None = None) -> None:
        """Draws fresh initial weights: He before ReLU-like activations, Glorot otherwise (each
        activation says which, in its ``init_scheme``)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        for i, layer in enumerate(self.layers):
            layer.init_params(rng, self._init_scheme(i))

    def _init_scheme(self, i: int) -> str:
        """The scheme of the first layer after layer i, up to the next Dense, that names one."""
        for layer in self.layers[i + 1 :]:
            if isinstance(layer, Dense):
                break
            if layer.init_scheme is not None:
                return layer.init_scheme
        return "glorot"

    # -- shapes and names -----------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return next(la.in_features for la in self.layers if isinstance(la, Dense))

    @property
    def n_outputs(self) -> int:
        return next(la.out_features for la in reversed(self.layers) if isinstance(la, Dense))

    @property
    def n_params(self) -> int:
        return self.params.size

    @property
    def task(self) -> str:
        return self.loss.task

    @property
    def has_batchnorm(self) -> bool:
        return any(isinstance(la, BatchNorm) for la in self.layers)

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, view) pairs in torch's nn.Sequential order and naming."""
        for name, part, shape, transposed in self._names:
            yield name, _view(self.params, part, shape, transposed)

    def named_gradients(self) -> Iterator[tuple[str, np.ndarray]]:
        for name, part, shape, transposed in self._names:
            yield name, _view(self.grads, part, shape, transposed)

    def layer_views(self, flat: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        """Views of ``flat``, laid out as ``params``, in each layer's parameter shapes ({layer
        index: {name: view}}): a per-coordinate quantity (an optimizer's divisor) as each layer
        holds its parameters."""
        views: dict[int, dict[str, np.ndarray]] = {}
        for key, part, shape, transposed in self._names:
            index, name = key.split(".", 1)
            views.setdefault(int(index), {})[name] = _view(flat, part, shape, transposed)
        return views

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        """Non-trainable state (BatchNorm running statistics, dropout draw counters)."""
        for i, layer in enumerate(self.layers):
            for name, value in layer.buffers().items():
                yield f"{i}.{name}", value

    def state(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer by name: what save and checkpoints store."""
        state = {name: value.copy() for name, value in self.named_parameters()}
        state.update({name: np.array(value) for name, value in self.named_buffers()})
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restores what ``state()`` returned; names and shapes must match."""
        expected = dict(self.named_parameters()) | dict(self.named_buffers())
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(
                f"the saved state does not match this model: missing {missing}, "
                f"unexpected {extra}. Was it saved from another architecture?"
            )
        for name, target in expected.items():
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(
                    f"{name} has shape {value.shape} in the saved state and "
                    f"{target.shape} in this model; the architectures differ."
                )
            np.copyto(target, value, casting="same_kind")

    # -- modes and passes -----------------------------------------------------------------
    def train(self, mode: bool = True) -> Sequential:
        self.training = bool(mode)
        return self

    def eval(self) -> Sequential:
        return self.train(False)

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        """Outputs (logits for classification) of a batch; the result is a reused buffer."""
        training = self.training if training is None else training
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dz: np.ndarray, ready: Callable[[int], None] | None = None) -> None:
        """Writes the gradient of the loss into ``grads``, given dL/d(outputs). ``ready(k)``,
        after each layer, says that ``grads[k:]`` are final (what a data-parallel step may
        start summing while the earlier layers' backward runs)."""
        for i in range(len(self.layers) - 1, -1, -1):
            dz = self.layers[i].backward(dz, need_dx=i > 0)
            if ready is not None:
                ready(self.layer_starts[i])

    def loss_and_grad(self, xb: np.ndarray, yb: np.ndarray) -> float:
        """One forward and backward pass in training mode; returns the batch's mean loss."""
        z = self.forward(xb, True)
        loss, dz = self.loss(z, yb)
        self.backward(dz)
        return loss

    def prepare(
        self, X: Any, y: Any = None, *, sample_axis: int = 0, names: tuple[str, str] = ("X", "y")
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Checks and converts data once, at the boundary: rows of this model's dtype and width.
        ``names`` are what error messages call X and y ("validation X", say)."""
        x_name, y_name = names
        rows = as_rows(X, sample_axis=sample_axis, dtype=self.dtype, name=x_name)
        if rows.ndim != 2 or rows.shape[1] != self.n_inputs:
            raise ValueError(
                message(
                    x_name,
                    f"of {self.n_inputs} features per sample",
                    rows,
                    "Build the model with n equal to X's feature count, or pass "
                    "sample_axis=1 if samples are columns.",
                )
            )
        if y is None:
            return rows, None
        if self.classes is not None:
            y = self.encode_labels(y)
        targets = targets_as_rows(
            y,
            rows.shape[0],
            sample_axis=sample_axis,
            name=y_name,
            x_name=x_name,
            features=rows.shape[1],
        )
        targets = self.loss.prepare_targets(targets, self.n_outputs, self.dtype)
        return rows, self.encode_targets(targets)

    def encode_targets(self, targets: np.ndarray) -> np.ndarray:
        """Prepared targets in the units the model learns (standard units when it scales)."""
        if self.target_scaling is None:
            return targets
        return self.target_scaling.encode(targets)

    def encode_labels(self, y: Any) -> np.ndarray:
        """Original labels -> output indices through ``classes``; an unknown label is an error
        that names it."""
        labels = np.asarray(y).reshape(-1)
        try:
            index = np.searchsorted(self.classes, labels)
            known = (index < len(self.classes)) & (
                self.classes[np.minimum(index, len(self.classes) - 1)] == labels
            )
        except (TypeError, ValueError):  # text labels for a numeric class list, or the reverse
            known = np.zeros(len(labels), bool)
            index = np.zeros(len(labels), np.intp)
        if not known.all():
            bad = labels[int(np.argmin(known))]
            shown = ", ".join(map(repr, self.classes[:10].tolist()))
            raise ValueError(
                f"label {bad!r} is not one of the model's {len(self.classes)} classes "
                f"({shown}{', ...' if len(self.classes) > 10 else ''}); evaluate on data with the "
                "classes the model was trained on."
            )
        return index.astype(np.intp)

    def _forward_chunks(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, outputs) over ``rows`` in chunks of EVAL_CHUNK, in evaluation mode."""
        for lo in range(0, rows.shape[0], EVAL_CHUNK):
            yield lo, self.forward(rows[lo : lo + EVAL_CHUNK], training=False)

    def _outputs(self, X: Any, sample_axis: int = 0) -> np.ndarray:
        rows, _ = self.prepare(X, sample_axis=sample_axis)
        out = np.empty((rows.shape[0], self.n_outputs), dtype=self.dtype)
        for lo, z in self._forward_chunks(rows):
            out[lo : lo + len(z)] = z
        return out

    def decision_function(self, X: Any, *, sample_axis: int = 0) -> np.ndarray:
        """Raw outputs in evaluation mode, shape (m, k): logits, or regression values (in
        standard units when the model has a ``target_scaling``; ``predict`` answers in y's)."""
        return self._outputs(X, sample_axis)

    def predict_proba(self, X: Any, *, sample_axis: int = 0) -> np.ndarray:
        """Class probabilities, shape (m, K) (K = 2 for a binary model, as scikit-learn)."""
        return self.loss.predict_proba(self._outputs(X, sample_axis))

    def predict(self, X: Any, *, sample_axis: int = 0) -> np.ndarray:
        """Class indices for classifiers (their original labels when ``classes`` is set), values
        for regressors ((m,) when there is one output)."""
        predicted = self.loss.predict(self._outputs(X, sample_axis))
        if self.classes is not None and self.task == "classification":
            return self.classes[predicted]
        if self.target_scaling is not None:
            shape = predicted.shape
            return self.target_scaling.decode(predicted.reshape(shape[0], -1)).reshape(shape)
        return predicted

    def evaluate(self, X: Any, y: Any, *, sample_axis: int = 0) -> dict[str, float]:
        """Mean loss and accuracy (classifiers) or R^2 (regressors), in evaluation mode; a
        regressor with a target scaling adds its RMSE in the targets' own units."""
        return self.evaluate_prepared(*self.prepare(X, y, sample_axis=sample_axis))

    def evaluate_prepared(self, rows: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """``evaluate`` on data ``prepare`` already checked and converted: nothing is scanned
        again, which matters for a validation set evaluated many times during training."""
        chunks = range(0, rows.shape[0], EVAL_CHUNK)
        return self.evaluate_batches(
            (rows[lo : lo + EVAL_CHUNK], targets[lo : lo + EVAL_CHUNK]) for lo in chunks
        )

    def evaluate_batches(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
        """Mean loss and metrics over prepared (X, targets) batches, in evaluation mode: how a
        validation set streamed from disk is evaluated (only the outputs are kept, k per row)."""
        total, count, outputs, targets = 0.0, 0, [], []
        for xb, yb in batches:
            z = self.forward(xb, training=False)
            total += self.loss.value(z, yb) * len(z)
            count += len(z)
            outputs.append(z.copy())
            targets.append(yb.copy())
        if not count:
            raise ValueError("there are no samples to evaluate.")
        outputs, targets = np.concatenate(outputs), np.concatenate(targets)
        metrics = self.loss.metrics(outputs, targets)
        if self.target_scaling is not None:  # the loss is in standard units; this in the user's
            metrics["rmse"] = self.target_scaling.rmse(outputs, targets)
        return {"loss": total / count, **metrics}

    def score(self, X: Any, y: Any, *, sample_axis: int = 0) -> float:
        """Accuracy for classifiers, R^2 for regressors (scikit-learn's convention)."""
        metrics = self.evaluate(X, y, sample_axis=sample_axis)
        return metrics.get("accuracy", metrics.get("r2"))

    # -- persistence ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The architecture as JSON-friendly data; ``from_config`` rebuilds the model. A target
        scaling is part of it: the outputs mean nothing without it."""
        config = {
            "format": FORMAT,
            "layers": [{"type": type(la).__name__, **la.config()} for la in self.layers],
            "loss": self.loss.name,
            "seed": self.seed,
            "dtype": self.dtype.name,
        }
        if self.target_scaling is not None:
            config["target_scaling"] = self.target_scaling.config()
        return config

    @classmethod
    def from_config(
        cls, config: Any, source: Any = "the model description", *, initialize: bool = True
    ) -> Sequential:
        """Rebuilds a model from ``config()``'s data; a malformed one gets a sentence naming
        ``source`` and the field. ``initialize``: as for the constructor."""
        layers, loss, seed, dtype = parse_architecture(config, source)
        model = cls(layers, loss, seed=seed, dtype=dtype, initialize=initialize)
        model.target_scaling = _target_scaling(config, model, source)
        return model

    def copy(self) -> Sequential:
        """An independent model with the same architecture, parameters and buffers."""
        twin = Sequential.from_config(self.config(), initialize=False)
        twin.load_state(self.state())
        twin.classes = self.classes
        return twin.train(self.training)

    def __reduce__(self):
        """Pickles as architecture plus state, rebuilt through ``from_config``: the layers'
        parameters stay views of one flat vector, and no scratch buffer is carried."""
        return (_unpickle, (self.config(), self.state(), self.classes, self.training))

    def save(self, path: str | os.PathLike) -> Path:
        """Writes parameters, buffers and the architecture (as JSON text) to one ``.npz`` file."""
        path = Path(path)
        arrays = self.state()
        arrays["architecture"] = np.array(json.dumps(self.config()))
        if self.classes is not None:
            arrays["classes"] = np.asarray(self.classes)
        return atomic_savez(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Sequential:
        """Rebuilds a model saved with ``save``; never unpickles anything. The architecture is
        checked against the stored parameters before any memory is committed to it, and only
        the arrays the architecture names are read, none larger than it says."""
        arrays = read_npz(path, {"architecture": TEXT_LIMIT, "classes": TEXT_LIMIT})
        if "architecture" not in arrays:
            raise ValueError(
                f"{path} holds no model architecture; was it written by Sequential.save?"
            )
        try:
            config = json.loads(str(arrays.pop("architecture")))
        except ValueError as exc:
            raise ValueError(f"{path}: the architecture is not valid JSON ({exc}).") from None
        layers, loss, seed, dtype = parse_architecture(config, path)
        classes = arrays.pop("classes", None)
        arrays = read_npz(path, state_sizes(layers))
        for i, layer in enumerate(layers):
            for name, shape in layer.param_shapes():
                stored = arrays.get(f"{i}.{name}")
                if stored is None or stored.shape != tuple(shape):
                    found = "nothing" if stored is None else f"shape {stored.shape}"
                    raise ValueError(
                        f"{path}: its architecture needs {i}.{name} of shape {tuple(shape)}, "
                        f"but the file stores {found}; the file is corrupt or was edited."
                    )
        model = cls(layers, loss, seed=seed, dtype=dtype)
        model.target_scaling = _target_scaling(config, model, path)
        model.load_state(arrays)
        if not np.isfinite(model.params).all():
            raise ValueError(
                f"{path}: the model's parameters hold NaN or inf, so every prediction would be "
                "NaN. minigd saves the last finite model of a diverged run; this file was "
                "written elsewhere or edited."
            )
        if classes is not None:
            # one label per output; a binary (bce) model has one output and two labels
            width = 2 if loss == "bce" else model.n_outputs
            if classes.dtype.hasobject or classes.ndim != 1 or len(classes) != width:
                raise ValueError(f"{path}: its class list does not match the model's outputs.")
            model.classes = classes
        return model

    def __repr__(self) -> str:
        body = ",\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return (
            f"Sequential(\n{body}\n) loss={self.loss.name}, params={self.n_params}, "
            f"dtype={self.dtype.name}"
        )


def _unpickle(config, state, classes, training) -> Sequential:
    model = Sequential.from_config(config)
    model.load_state(state)
    model.classes = classes
    return model.train(training)


def _target_scaling(config: dict, model: Sequential, source: Any) -> TargetScaling | None:
    """The architecture's target scaling, checked against the model's outputs and task."""
    if config.get("target_scaling") is None:
        return None
    if model.task != "regression":
        raise ValueError(
            f"{source}: the architecture scales regression targets, but its loss "
            f"{model.loss.name!r} classifies; the file is corrupt or was edited."
        )
    return TargetScaling.from_config(config["target_scaling"], model.n_outputs, source)
