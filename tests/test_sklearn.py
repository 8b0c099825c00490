"""minigd's scikit-learn estimators: scikit-learn's own estimator checks, every one, and the places
users put estimators (pipelines, grid searches on two processes, cross-validation, clone, pickle),
with partial_fit against fit on the same batches."""

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from minigd import datasets  # noqa: E402
from minigd.sklearn import MiniBatchClassifier, MiniBatchRegressor  # noqa: E402

EXPECTED_FAILED: dict = {}  # none: every check of scikit-learn 1.9 passes


@parametrize_with_checks(
    [MiniBatchClassifier(random_state=0), MiniBatchRegressor(random_state=0)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    train, test = datasets.load("digits")
    return train.X, train.y, test.X, test.y


def test_in_a_pipeline_with_a_scaler(digits):
    X, y, X_test, y_test = digits
    model = make_pipeline(
        StandardScaler(), MiniBatchClassifier((64,), batch_size=32, epochs=20, random_state=0)
    )
    assert model.fit(X, y).score(X_test, y_test) > 0.93
    fitted = model[-1]
    assert fitted.n_iter_ <= 20 and len(fitted.loss_curve_) == fitted.n_iter_
    assert fitted.loss_curve_[-1] < fitted.loss_curve_[0] / 5
    assert fitted.history_.meta["batch_size"] == 32 and fitted.batch_size_ == 32


def test_grid_search_on_two_processes_with_one_blas_thread_each(digits):
    X, y, _, _ = digits
    grid = GridSearchCV(
        MiniBatchClassifier((32,), epochs=8, random_state=0),
        {"batch_size": [16, 128], "learning_rate": [1e-3, 1e-2]},
        cv=3,
        n_jobs=2,
    )
    grid.fit(X[:600], y[:600])
    assert set(grid.best_params_) == {"batch_size", "learning_rate"}
    assert grid.cv_results_["mean_test_score"].max() > 0.85
    done = cross_validate(
        MiniBatchClassifier((32,), epochs=3, random_state=0),
        X[:300],
        y[:300],
        cv=2,
        n_jobs=2,
        return_estimator=True,
    )
    # joblib's workers are limited to cores // n_jobs threads, and each fit honours that
    assert [e.threads_ for e in done["estimator"]] == [1, 1]


def test_cross_val_score_and_clone(digits):
    X, y, _, _ = digits
    base = MiniBatchClassifier((32,), batch_size=64, epochs=10, random_state=1)
    scores = cross_val_score(base, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    fitted = clone(base).fit(X, y)
    twin = clone(fitted)
    assert twin.get_params() == base.get_params() and not hasattr(twin, "model_")
    regressor = clone(MiniBatchRegressor(epochs=3)).set_params(epochs=7)
    assert regressor.epochs == 7


def test_pickled_estimators_predict_identically(digits):
    X, y, X_test, _ = digits
    for estimator, target in (
        (MiniBatchClassifier((32,), epochs=5, random_state=0), y),
        (MiniBatchRegressor((16,), epochs=5, random_state=0), X[:, :2] @ [1.0, -2.0]),
    ):
        fitted = estimator.fit(X, target)
        copy = pickle.loads(pickle.dumps(fitted))
        np.testing.assert_array_equal(copy.predict(X_test), fitted.predict(X_test))
        # the copy trains on: its parameters are still one flat vector under its layers
        copy.partial_fit(X[:64], target[:64])
        assert not np.array_equal(copy.model_.params, fitted.model_.params)
        assert np.shares_memory(copy.model_.layers[0].weight, copy.model_.params)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_partial_fit_over_chunks_equals_fit_with_the_same_batches(digits, optimizer):
    X, y, _, _ = digits
    X, y = X[:320], y[:320]
    options = {"batch_size": 32, "learning_rate": 0.05, "optimizer": optimizer}
    options |= {"shuffle": False, "random_state": 3, "epochs": 1}
    whole = MiniBatchClassifier((16,), **options).fit(X, y)
    chunked = MiniBatchClassifier((16,), **options)
    for lo in range(0, 320, 64):  # chunks on batch boundaries
        chunked.partial_fit(X[lo : lo + 64], y[lo : lo + 64], classes=np.arange(10))
    np.testing.assert_array_equal(chunked.model_.params, whole.model_.params)
    assert chunked.n_iter_ == 5 and whole.n_iter_ == 1


def test_partial_fit_needs_the_classes_first_and_refuses_new_labels(digits):
    X, y, _, _ = digits
    model = MiniBatchClassifier((8,), batch_size=16)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        model.partial_fit(X[:50], y[:50])
    model.partial_fit(X[:50], y[:50] % 3, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"label 7 is not one of the classes \[0, 1, 2\]"):
        model.partial_fit(X[:50], np.full(50, 7))


def test_auto_batch_size_keeps_the_advisors_reasons(digits):
    X, y, _, _ = digits
    model = MiniBatchClassifier((16,), epochs=3, random_state=0).fit(X, y)
    # the note's rule 1: m = 1437 <= ~2000 samples is full-batch gradient descent
    assert model.batch_size_ == len(X) and model.advice_.batch_size == "full"
    assert "rule 1" in str(model.advice_.reasons[0])
    assert model.learning_rate_ == pytest.approx(model.advice_.lr)
    big = MiniBatchClassifier((16,), batch_size=256, epochs=1, random_state=0).fit(X, y)
    assert big.advice_ is None and big.learning_rate_ == pytest.approx(1e-3 * (256 / 32) ** 0.5)


def test_early_stopping_holds_out_a_stratified_fraction(digits):
    X, y, _, _ = digits
    model = MiniBatchClassifier(
        (32,), batch_size=32, epochs=200, early_stopping=True, n_iter_no_change=3, random_state=0
    ).fit(X, y)
    assert model.n_iter_ < 200
    assert "val_accuracy" in model.history_.epochs[-1]
    assert model.history_.meta["n_samples"] == len(X) - int(np.ceil(0.1 * len(X)))


def test_sparse_input_and_bad_parameters_get_sentences(digits):
    import scipy.sparse

    X, y, _, _ = digits
    with pytest.raises(TypeError, match="Sparse data was passed"):
        MiniBatchClassifier().fit(scipy.sparse.csr_matrix(X), y)
    with pytest.raises(ValueError, match="'batch_size' parameter of MiniBatchClassifier must be"):
        MiniBatchClassifier(batch_size=0).fit(X, y)
    with pytest.raises(ValueError, match="'optimizer' parameter"):
        MiniBatchRegressor(optimizer="lbfgs").fit(X, y)
    with pytest.raises(RuntimeError, match=r"training diverged .* lower learning_rate"):
        MiniBatchRegressor(optimizer="sgd", learning_rate=1e3, batch_size=8, epochs=3).fit(
            X * 100, y * 1e3
        )
