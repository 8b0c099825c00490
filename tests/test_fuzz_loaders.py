"""Every loader of files a user hands minigd, fuzzed: truncated, overwritten and spliced versions
of real files never raise anything but the documented error types, and never allocate more than
a bound while failing (a hostile header must not turn into a huge allocation)."""

import gzip
import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigd import fit
from minigd.data import load_arrays, read_idx, write_idx
from minigd.nn import load_model, mlp
from minigd.runs import read_config
from minigd.training import Checkpoint, load_checkpoint

DOCUMENTED = (ValueError, KeyError, TypeError)  # what a loader may raise for a bad file
MEMORY_BOUND = 32 << 20  # bytes traced while loading a file of at most ~100 KB

RNG = np.random.default_rng(0)
X = RNG.random((60, 5), dtype=np.float32)
Y = RNG.integers(0, 3, 60)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One valid file of every kind a user may hand minigd, as bytes."""
    d = tmp_path_factory.mktemp("originals")
    np.save(d / "X.npy", X)
    np.savez(d / "d.npz", X=X, y=Y)
    np.savez_compressed(d / "c.npz", X=X, y=Y)
    rows = "\n".join(",".join(f"{v:.4f}" for v in x) + f",{c}" for x, c in zip(X, Y, strict=True))
    (d / "d.csv").write_text("a,b,c,d,e,label\n" + rows + "\n")
    write_idx(d / "d.idx", (X * 255).astype(np.uint8))
    (d / "d.idx.gz").write_bytes(gzip.compress((d / "d.idx").read_bytes()))
    model = mlp(5, [4], 3, batchnorm=True)
    model.save(d / "model.npz")
    fit(model, X, Y, batch_size=20, epochs=1, verbose=0, callbacks=[Checkpoint(d / "ck")])
    (d / "checkpoint.npz").write_bytes(sorted((d / "ck").glob("*.npz"))[-1].read_bytes())
    config = {"data": "digits", "model": "mlp:16", "optimizer": "adam", "lr": 0.01, "epochs": 3}
    (d / "config.json").write_text(json.dumps(config))
    files = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "label": Y}), d / "d.parquet")
    files["d.parquet"] = (d / "d.parquet").read_bytes()
    return files


def load_config(path):
    folder = path.parent / "run"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_bytes(path.read_bytes())
    return read_config(folder)


LOADERS = {
    "X.npy": load_arrays,
    "d.npz": load_arrays,
    "c.npz": load_arrays,
    "d.csv": load_arrays,
    "d.parquet": load_arrays,
    "d.idx": read_idx,
    "d.idx.gz": read_idx,
    "model.npz": load_model,
    "checkpoint.npz": load_checkpoint,
    "config.json": load_config,
}


@st.composite
def mutations(draw, size: int):
    """A truncation, overwritten bytes, or random bytes spliced in, anywhere in the file."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "splice"]))
    at = draw(st.integers(0, max(0, size - 1)))
    if kind == "truncate":
        return kind, at, b""
    return kind, at, draw(st.binary(min_size=1, max_size=16))


def mutate(data: bytes, mutation) -> bytes:
    kind, at, chunk = mutation
    if kind == "truncate":
        return data[:at]
    if kind == "overwrite":
        return data[:at] + chunk + data[at + len(chunk) :]
    return data[:at] + chunk + data[at:]


@pytest.mark.parametrize("name", list(LOADERS))
def test_mutated_files_raise_only_documented_errors_within_a_memory_bound(
    originals, tmp_path_factory, name
):
    original = originals[name]
    folder = tmp_path_factory.mktemp("fuzz")
    LOADERS[name](_write(folder, name, original))  # the unmutated file loads

    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(mutations(len(original)))
    def check(mutation):
        path = _write(folder, name, mutate(original, mutation))
        tracemalloc.start()
        try:
            LOADERS[name](path)
        except DOCUMENTED:
            pass
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < MEMORY_BOUND, (mutation, peak)

    check()


def _write(folder, name, data: bytes):
    path = folder / name
    path.write_bytes(data)
    return path
