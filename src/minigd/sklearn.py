"""scikit-learn estimators over minigd's training loop: ``MiniBatchClassifier`` and
``MiniBatchRegressor``.

They follow scikit-learn's rules, not minigd's (docs/architecture.md, decision 9): ``__init__``
only stores its arguments; ``fit`` checks them (``_parameter_constraints``) and the data
(``validate_data``); the fitted state lives in attributes ending in ``_``; randomness comes from
``random_state`` only (None draws fresh OS entropy, never the global RNG). Inside, a fit is
``minigd.fit`` on an MLP over one flat parameter vector, with the batch-size tools at hand:
``batch_size="auto"`` asks the advisor (``advice_`` keeps its reasons), ``learning_rate="auto"``
scales the optimizer's default rate from batch 32 (``rules.REFERENCE_BATCH``) to the batch size
by the optimizer's rule (linear for SGD, square root for adaptive ones).

Data is float64 unless X is float32 (as scikit-learn's MLP); sparse X is refused. Each fit runs
on ``threads`` BLAS threads; by default the cores this process may use, or what the
environment allows a worker (joblib's workers in ``GridSearchCV(n_jobs=2)`` are given one each).
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real
from typing import ClassVar

import numpy as np

try:  # validate_data and the parameter constraints: scikit-learn 1.6 and later
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
    from sklearn.utils._param_validation import Interval, StrOptions
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:
    raise ImportError(
        "minigd.sklearn needs scikit-learn 1.6 or later: pip install 'minigd[sklearn]'"
    ) from exc

from minigd._threads import usable_cores
from minigd.batchsize import advise
from minigd.batchsize.lr_scaling import scale_lr
from minigd.nn import mlp
from minigd.nn.target_scaling import TargetScaling
from minigd.optim import OPTIMIZERS, get_optimizer
from minigd.rules import REFERENCE_BATCH
from minigd.training import make_trainer
from minigd.training.callbacks import EarlyStopping, ProgressBar

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_threads() -> int:
    """BLAS threads for one fit: the usable cores, or fewer where the environment limits a
    worker (joblib's loky workers set these variables to cores // n_jobs)."""
    cores = usable_cores()
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return min(cores, int(value))
    return cores


class _MiniBatchMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the fit loop, partial_fit."""

    _parameter_constraints: ClassVar[dict] = {
        "hidden_layer_sizes": ["array-like"],
        "batchnorm": ["boolean"],
        "dropout": [Interval(Real, 0.0, 1.0, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "learning_rate": [Interval(Real, 0.0, None, closed="neither"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto", "full"})],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0.0, 1.0, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "threads": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        *,
        batchnorm=False,
        dropout=0.0,
        optimizer="adam",
        learning_rate="auto",
        batch_size="auto",
        epochs=200,
        shuffle=True,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        warm_start=False,
        random_state=None,
        verbose=0,
        threads=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.batchnorm = batchnorm
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.threads = threads

    # -- what subclasses define -----------------------------------------------------------
    def _targets(self, y, first: bool, classes=None):
        """(targets for minigd, number of outputs) from y; sets the target attributes on a
        first fit."""
        raise NotImplementedError

    def _scale_targets(self, targets) -> None:
        """A regressor's target scaling, fitted when the model is made; classifiers have none."""

    # -- fitting ----------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Trains for up to ``epochs`` epochs of mini-batches (fewer when the loss, or the
        validation score with ``early_stopping``, stops improving by ``tol`` for
        ``n_iter_no_change`` epochs). Returns self."""
        warm = self.warm_start and hasattr(self, "model_")
        self._check_values(warm)
        X, y = validate_data(self, X, y, reset=not warm, **self._check_options)
        targets, outputs = self._targets(y, first=not warm)
        rng = self._rng = _rng(self.random_state)  # partial_fit goes on drawing from it
        if not warm:
            self._start(X, targets, outputs, rng)
            self.n_iter_, self.loss_curve_ = 0, []
        validation = None
        if self.early_stopping:
            X, targets, validation = self._held_out(X, targets, rng)
        self._train(X, targets, self.epochs, validation, fresh_optimizer=True, rng=rng)
        return self

    def _check_values(self, warm: bool) -> None:
        """What the parameter constraints let through: a bool is an Integral to them, a width
        of 8.5 is array-like; and a warm start continues the model it has, so a changed
        architecture would be silently ignored."""
        if isinstance(self.batch_size, bool):
            raise ValueError(
                f"The 'batch_size' parameter of {type(self).__name__} must be an int >= 1, "
                f"'auto' or 'full'. Got {self.batch_size!r} instead."
            )
        widths = np.atleast_1d(self.hidden_layer_sizes)
        if not all(_whole_width(w) for w in widths.tolist()):
            raise ValueError(
                f"The 'hidden_layer_sizes' parameter of {type(self).__name__} must hold whole "
                f"numbers >= 1. Got {self.hidden_layer_sizes!r} instead."
            )
        fitted = getattr(self, "_architecture", None)
        if warm and fitted is not None and fitted != self._architecture_wanted():
            raise ValueError(
                f"warm_start continues the model fitted before ({fitted}); the parameters now "
                f"ask for {self._architecture_wanted()}. Set warm_start=False to fit a new model."
            )

    def _architecture_wanted(self) -> dict:
        widths = [int(w) for w in np.atleast_1d(self.hidden_layer_sizes)]
        return {"hidden_layer_sizes": widths, "batchnorm": bool(self.batchnorm)}

    def _start(self, X, targets, outputs: int, rng) -> None:
        """A new model for this data, and the batch size and learning rate it trains with."""
        seed = int(rng.integers(2**31 - 1))
        widths = [int(w) for w in np.atleast_1d(self.hidden_layer_sizes)]
        loss = "softmax_cross_entropy" if self._is_classifier else "mse"
        self.model_ = mlp(
            X.shape[1],
            widths,
            outputs,
            batchnorm=self.batchnorm,
            dropout=self.dropout,
            loss=loss,
            seed=seed,
            dtype=X.dtype,
        )
        self._architecture = self._architecture_wanted()
        self._scale_targets(targets)  # before the advisor, which measures the model's loss
        self.advice_ = None
        opt = get_optimizer(self.optimizer)
        if self.batch_size == "auto":
            self.advice_ = advise(self.model_, X, targets, optimizer=opt, measure=False)
            self.batch_size_ = _as_int(self.advice_.batch_size, len(X))
        else:
            self.batch_size_ = _as_int(self.batch_size, len(X))
        if self.learning_rate != "auto":
            self.learning_rate_ = float(self.learning_rate)
        elif self.advice_ is not None:
            self.learning_rate_ = float(self.advice_.lr)
        else:
            scaled = scale_lr(opt.lr, REFERENCE_BATCH, self.batch_size_, optimizer=opt)
            self.learning_rate_ = scaled.lr

    def _held_out(self, X, targets, rng):
        from sklearn.model_selection import train_test_split

        stratify = targets if self._is_classifier else None
        X, X_val, targets, t_val = train_test_split(
            X,
            targets,
            test_size=self.validation_fraction,
            random_state=int(rng.integers(2**31 - 1)),
            stratify=stratify,
        )
        return X, targets, (X_val, t_val)

    def _train(self, X, targets, epochs: int, validation, *, fresh_optimizer: bool, rng):
        """Runs minigd's loop on the model; records n_iter_, loss_curve_ and history_."""
        if fresh_optimizer or not hasattr(self, "_optimizer"):
            self._optimizer = get_optimizer(self.optimizer, self.learning_rate_)
        full = self.batch_size == "full" or (
            self.advice_ is not None and self.advice_.batch_size == "full"
        )
        b = len(X) if full else min(self.batch_size_, len(X))
        if b < self.batch_size_ and not full:
            warnings.warn(
                f"batch_size {self.batch_size_} is larger than the {len(X)} samples; "
                f"training on batches of {len(X)}.",
                stacklevel=3,
            )
        monitor = "loss"
        if validation is not None:
            monitor = "val_accuracy" if self._is_classifier else "val_r2"
        callbacks = [
            EarlyStopping(monitor, self.n_iter_no_change, self.tol, restore_best=monitor != "loss")
        ]
        if self.verbose:
            callbacks.append(ProgressBar())
        trainer = make_trainer(
            self.model_,
            X,
            targets,
            batch_size=b,
            epochs=epochs,
            optimizer=self._optimizer,
            validation=validation,
            shuffle=self.shuffle,
            seed=int(rng.integers(2**31 - 1)),
            last_batch=self.advice_.last_batch if self.advice_ is not None else "keep",
            callbacks=callbacks,
            verbose=0,
            threads=self.threads or default_threads(),
        )
        history = trainer.run()
        if trainer.outcome == "diverged":
            raise RuntimeError(
                f"training diverged ({trainer.stop_reason}); lower learning_rate "
                f"(it was {self.learning_rate_:g}) or scale the features."
            )
        self.threads_ = trainer.threads
        self.history_ = history
        self.loss_curve_ = [
            *getattr(self, "loss_curve_", []),
            *history.epoch_column("loss").tolist(),
        ]
        self.n_iter_ = getattr(self, "n_iter_", 0) + len(history.epochs)
        self.model_.eval()

    def _partial_fit(self, X, y, classes=None):
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, reset=first, **self._check_options)
        targets, outputs = self._targets(y, first=first, classes=classes)
        if first:
            self._rng = _rng(self.random_state)
            self._start(X, targets, outputs, self._rng)
            self.n_iter_, self.loss_curve_ = 0, []
        self._train(X, targets, 1, None, fresh_optimizer=first, rng=self._rng)
        return self

    # -- predicting ---------------------------------------------------------------------------
    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return self.model_.decision_function(X.astype(self.model_.dtype, copy=False))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


def _rng(random_state) -> np.random.Generator:
    """A Generator from scikit-learn's random_state (None: fresh OS entropy, not the global
    RNG; an int: reproducible; a RandomState: its next draw)."""
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31 - 1))
    return np.random.default_rng(int(random_state))


def _whole_width(width) -> bool:
    try:
        return not isinstance(width, bool) and float(width) == int(width) and int(width) >= 1
    except (TypeError, ValueError):
        return False


def _as_int(batch_size, m: int) -> int:
    return m if batch_size == "full" else int(batch_size)


class MiniBatchClassifier(ClassifierMixin, _MiniBatchMLP):
    """A multilayer perceptron classifier trained by mini-batch gradient descent (softmax
    cross-entropy), with scikit-learn's interface.

    Parameters: ``hidden_layer_sizes`` (widths, () for softmax regression), ``batchnorm``,
    ``dropout``, ``optimizer`` (a name in ``minigd.optim.OPTIMIZERS``, e.g. "adam"),
    ``learning_rate`` (a float or "auto"), ``batch_size`` (an int, "full" or "auto": the
    advisor's choice), ``epochs``, ``shuffle``, ``early_stopping`` with ``validation_fraction``,
    ``n_iter_no_change`` and ``tol``, ``warm_start``, ``random_state``, ``verbose``, ``threads``.

    Attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_``, ``n_iter_`` (epochs
    trained), ``loss_curve_`` (per epoch), ``history_`` (minigd's History of the last fit),
    ``batch_size_`` and ``learning_rate_`` (resolved), ``advice_`` (the advisor's Advice with
    its reasons, when ``batch_size="auto"``), ``model_`` (the minigd Sequential).
    """

    _is_classifier = True
    _check_options: ClassVar[dict] = {"dtype": (np.float64, np.float32)}

    def _targets(self, y, first: bool, classes=None):
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(y if classes is None else classes)
            if len(self.classes_) < 2:
                raise ValueError(
                    "a classifier needs at least 2 classes; the data has 1 class "
                    f"({self.classes_.tolist()})."
                )
        index = np.searchsorted(self.classes_, y)
        known = (index < len(self.classes_)) & (
            self.classes_[np.minimum(index, len(self.classes_) - 1)] == y
        )
        if not known.all():
            bad = y[int(np.argmin(known)) :][:1].tolist()[0]
            raise ValueError(
                f"label {bad!r} is not one of the classes {self.classes_.tolist()} this "
                "classifier was first fitted with (pass every class to partial_fit's classes)."
            )
        return index.astype(np.intp), len(self.classes_)

    def partial_fit(self, X, y, classes=None):
        """One epoch of mini-batches over (X, y), continuing from the current model and
        optimizer state. ``classes`` (every label there will be) is required on the first
        call."""
        if not hasattr(self, "model_"):
            self._validate_params()
            self._check_values(warm=False)
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={np.unique(classes).tolist()} differs from the classes "
                f"{self.classes_.tolist()} of the first call to partial_fit; a classifier keeps "
                "the classes it started with (fit anew for others)."
            )
        return self._partial_fit(X, y, classes)

    def decision_function(self, X):
        """Logits (n, K); for two classes, the logit of the second minus the first, (n,)."""
        z = self._outputs(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        """Class probabilities (n, K), columns in the order of ``classes_``."""
        z = self._outputs(X)
        return self.model_.loss.predict_proba(z).astype(np.float64)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        z = self._outputs(X)
        return self.classes_[np.argmax(z, axis=1)]


class MiniBatchRegressor(RegressorMixin, _MiniBatchMLP):
    """A multilayer perceptron regressor trained by mini-batch gradient descent (mean squared
    error), with scikit-learn's interface; y may have several columns. Parameters and attributes
    as ``MiniBatchClassifier`` (without ``classes_``), plus ``standardize_targets`` (default
    True): learn (y - mean) / std and predict in y's units, as ``TransformedTargetRegressor``
    with a ``StandardScaler`` would; the mean and std are those of the first fit's y (of the
    first ``partial_fit`` batch), kept in ``model_.target_scaling``.
    """

    _is_classifier = False
    _check_options: ClassVar[dict] = {
        "dtype": (np.float64, np.float32),
        "multi_output": True,
        "y_numeric": True,
    }
    _parameter_constraints: ClassVar[dict] = {
        **_MiniBatchMLP._parameter_constraints,
        "standardize_targets": ["boolean"],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        *,
        standardize_targets=True,
        batchnorm=False,
        dropout=0.0,
        optimizer="adam",
        learning_rate="auto",
        batch_size="auto",
        epochs=200,
        shuffle=True,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        warm_start=False,
        random_state=None,
        verbose=0,
        threads=None,
    ):
        super().__init__(
            hidden_layer_sizes,
            batchnorm=batchnorm,
            dropout=dropout,
            optimizer=optimizer,
            learning_rate=learning_rate,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=shuffle,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            warm_start=warm_start,
            random_state=random_state,
            verbose=verbose,
            threads=threads,
        )
        self.standardize_targets = standardize_targets

    def _scale_targets(self, targets) -> None:
        if self.standardize_targets:
            self.model_.target_scaling = TargetScaling.fit(targets)

    def _targets(self, y, first: bool, classes=None):
        y = np.asarray(y, dtype=np.float64)
        if first:
            self._y_ndim = y.ndim
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if not first and y.shape[1] != self.model_.n_outputs:
            raise ValueError(
                f"y has {y.shape[1]} columns; this regressor was fitted with "
                f"{self.model_.n_outputs}."
            )
        return y, y.shape[1]

    def partial_fit(self, X, y):
        """One epoch of mini-batches over (X, y), continuing from the current model and
        optimizer state."""
        if not hasattr(self, "model_"):
            self._validate_params()
            self._check_values(warm=False)
        return self._partial_fit(X, y)

    def predict(self, X):
        z = self._outputs(X).astype(np.float64)
        if self.model_.target_scaling is not None:
            z = self.model_.target_scaling.decode(z)
        return z[:, 0] if self._y_ndim == 1 else z

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


__all__ = ["MiniBatchClassifier", "MiniBatchRegressor"]
