"""Training sets larger than RAM: sources on disk, block shuffle, prefetch, per-batch checks,
convert, and bounded memory, with real files, real processes and real signals."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigd import data as mdata
from minigd.batching import BlockLayout, BlockShuffle, MiniBatches, distinct_blocks
from minigd.batching.reader import buffer_row_bytes
from minigd.cli import main
from minigd.data.convert import convert
from minigd.data.npz import CorruptFileError
from minigd.data.sources import ArraySource, NpySource
from minigd.nn.models import model_for_data
from minigd.training import Callback, Checkpoint, fit
from test_history_on_disk import StopAt

ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def prefetch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("minigd-prefetch")]


@pytest.fixture()
def table(tmp_path):
    """A small classification set on disk as .npy X and y (labels 10, 20, 30), and in memory."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1003, 6)).astype(np.float32)
    y = np.array([10, 20, 30])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)]
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, X, y


def epoch_batches(batches, e, start=0):
    with contextlib.closing(batches.epoch(e, start)) as it:
        return [tuple(np.array(part) for part in b) for b in it]


# -- order: every sample once, resume anywhere, disk == memory ------------------------------
@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 300),
    b=st.integers(1, 64),
    block=st.integers(1, 40),
    buffer_blocks=st.integers(1, 9),
    last=st.sampled_from(["keep", "drop", "merge"]),
    policy=st.sampled_from(["rows", "blocks", "none"]),
    seed=st.integers(0, 3),
    epoch=st.integers(0, 3),
)
def test_every_sample_once_per_epoch_and_resume_is_the_tail(
    m, b, block, buffer_blocks, last, policy, seed, epoch
):
    b = min(b, m)
    X = np.arange(m, dtype=np.float64).reshape(m, 1)
    batches = MiniBatches(X, batch_size=b, shuffle=policy, seed=seed, last_batch=last)
    if policy == "blocks":
        batches.blocks = BlockLayout(m, block, buffer_blocks)
    seen = np.concatenate([xb[:, 0].copy() for xb in batches.epoch(epoch)]).astype(int)
    kept = batches.samples_per_epoch
    assert len(seen) == kept and len(np.unique(seen)) == kept  # nothing twice
    if last != "drop":
        assert np.array_equal(np.sort(seen), np.arange(m))  # everything once
    assert np.array_equal(seen, batches.order(epoch)[:kept])
    full = [xb.copy() for xb in batches.epoch(epoch)]
    for start in {0, len(full) // 2, len(full)}:
        tail = [xb.copy() for xb in batches.epoch(epoch, start)]
        assert len(tail) == len(full) - start
        assert all(np.array_equal(x, y) for x, y in zip(full[start:], tail, strict=True))


def test_block_shuffle_is_a_pure_function_of_seed_and_epoch_and_differs_by_epoch():
    layout = BlockLayout(1000, 10, 5)
    bounds = np.arange(0, 1001, 50)
    a = BlockShuffle(layout, 7, 2).order(bounds)
    assert np.array_equal(a, BlockShuffle(layout, 7, 2).order(bounds))
    assert not np.array_equal(a, BlockShuffle(layout, 7, 3).order(bounds))
    # a batch only mixes rows of the 5 blocks of its buffer
    for lo in range(0, 1000, 50):
        assert len(np.unique(a[lo : lo + 50] // 10)) <= 2 * 5


@pytest.mark.parametrize("policy", ["rows", "blocks", "none"])
@pytest.mark.parametrize("last", ["keep", "merge"])
def test_a_file_on_disk_gives_exactly_the_batches_of_the_array_in_memory(table, policy, last):
    folder, X, y = table
    options = {"batch_size": 64, "shuffle": policy, "seed": 3, "last_batch": last}
    memory = MiniBatches(X, y, block_rows=50, **options)
    disk = MiniBatches(
        NpySource(folder / "X.npy"), NpySource(folder / "y.npy"), block_rows=50, **options
    )
    assert disk.streaming and not memory.streaming
    for e in (0, 1):
        a, b = epoch_batches(memory, e), epoch_batches(disk, e)
        assert len(a) == len(b)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
        tail = epoch_batches(disk, e, 5)
        assert len(tail) == len(a) - 5
        assert all(np.array_equal(p[0], q[0]) for p, q in zip(a[5:], tail, strict=True))
    disk.close()  # a completed epoch reads the next one's first buffer ahead
    assert prefetch_threads() == []


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # it is only read
@given(
    b=st.integers(1, 64),
    new=st.integers(1, 200),
    at=st.integers(0, 20),
    policy=st.sampled_from(["rows", "blocks", "none"]),
    last=st.sampled_from(["keep", "merge"]),
)
def test_a_batch_regrouped_mid_epoch_on_disk_or_in_memory_sees_every_sample_once(
    table, b, new, at, policy, last
):
    """An adaptive batch moves mid-epoch: the batches before the move keep their samples, the
    rest of the epoch is cut in the new size, every sample is seen once, and a file on disk
    (the reader restarted at the move) gives exactly the batches of the array in memory."""
    folder, X, y = table
    options = {"batch_size": b, "shuffle": policy, "seed": 1, "last_batch": last}
    memory = MiniBatches(X, y, block_rows=50, buffer_bytes=6 * 50 * 24, **options)
    disk = MiniBatches(NpySource(folder / "X.npy"), NpySource(folder / "y.npy"), block_rows=50,
                       buffer_bytes=6 * 50 * 24, **options)  # fmt: skip
    seen = {}
    for name, batches in (("memory", memory), ("disk", disk)):
        at_batch = min(at, len(batches))
        before = epoch_batches(batches, 0)[:at_batch]
        batches.regroup(new, at_batch)
        after = epoch_batches(batches, 0, at_batch)
        assert all(len(part[0]) == new for part in after[:-1])  # the rest in the new size
        seen[name] = [part[0] for part in before + after]
        rows = np.concatenate(seen[name])
        assert len(rows) == len(X)  # every row once (rows are distinct)
        assert np.array_equal(np.unique(rows, axis=0), np.unique(X, axis=0))
    pairs = zip(seen["memory"], seen["disk"], strict=True)
    assert all(np.array_equal(a, c) for a, c in pairs)
    disk.close()
    assert prefetch_threads() == []


def test_a_regroup_to_batches_spanning_more_buffers_gets_the_slots_they_need(table):
    """Regrouped from 1 row to batches of 250 over buffers of 100 rows, a batch spans 3
    buffers and needs 5 slots. The next epoch's read-ahead, begun with the 3 slots batches of
    one row need, was taken up as it was (and a new reader reused those 3), so the loop waited
    for a buffer the reader could not load: it waited for a slot the loop held. What an
    adaptive batch growing at an epoch's start of a streamed run does."""
    folder, _, _ = table
    batches = MiniBatches(NpySource(folder / "X.npy"), NpySource(folder / "y.npy"), batch_size=1,
                          shuffle="blocks", block_rows=50, buffer_bytes=100 * 56)  # fmt: skip
    assert batches.blocks.buffer_rows == 100  # 56 bytes a row: 6 float32, an int64 label, indexes
    epoch_batches(batches, 0)  # slots for batches of one row
    batches.regroup(250, 0)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(epoch_batches(batches, 1)), daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "the epoch never ended: too few slots"
    assert sum(len(b[0]) for b in got) == 1003
    batches.close()  # the next epoch's first buffer was being read ahead
    assert prefetch_threads() == []


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 400), block=st.integers(1, 40), k=st.integers(1, 9),
       size=st.integers(1, 5), seed=st.integers(0, 3))  # fmt: skip
def test_the_ranks_blocks_of_a_buffer_partition_it(m, block, k, size, seed):
    """Each row of a buffer is read by exactly one rank, and a rank finds it where it put it."""
    shuffle = BlockShuffle(BlockLayout(m, block, k), seed, 0)
    for j in range(len(shuffle.buffers)):
        rows = shuffle.rows(j)
        owner = np.full(len(rows), -1)
        for rank in range(size):
            mine, local = shuffle.owned(j, rank, size)
            held = local >= 0
            assert np.all(owner[held] == -1)  # nobody else holds these
            owner[held] = rank
            assert np.array_equal(mine[local[held]], rows[held])  # found where it was put
        assert np.all(owner >= 0)  # and every row is somebody's


def test_shuffle_quality_is_reported_and_worked_out_by_hand():
    # 2 blocks of 2 rows, 2 rows drawn from 4: P(a given block missed) = C(2,2)/C(4,2) = 1/6
    assert distinct_blocks(4, 2, 2) == pytest.approx(2 * (1 - 1 / 6))
    assert distinct_blocks(10_000, 100, 1) == pytest.approx(1.0)
    X = np.zeros((100_000, 8), np.float32)
    rows = MiniBatches(X, batch_size=64, shuffle="rows").shuffle_quality()
    row = 8 * 4 + 16  # features and the buffer's two indexes (reader.buffer_row_bytes)
    blocks = MiniBatches(
        X, batch_size=64, shuffle="blocks", block_rows=1000, buffer_bytes=32_000 * row
    )
    quality = blocks.shuffle_quality()
    assert blocks.blocks.buffer_blocks == 32
    assert rows["distinct_blocks"] == rows["rows_shuffle"]
    # in blocks of 1000 rows: a global shuffle draws 64 rows from 100 blocks, a block shuffle
    # from the 32 of its buffer
    assert quality["distinct_blocks"] < quality["rows_shuffle"] <= 64
    assert quality["rows_shuffle"] == pytest.approx(100 * (1 - (99 / 100) ** 64), rel=0.02)
    assert quality["distinct_blocks"] == pytest.approx(32 * (1 - (31 / 32) ** 64), rel=0.02)


# -- sources --------------------------------------------------------------------------------
def test_parquet_and_hdf5_sources_read_what_the_arrays_hold(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 3))
    labels = np.array(["cat", "dog"])[rng.integers(0, 2, 500)]
    table = pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": labels})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=64)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("X", data=X, chunks=(32, 3))
        f.create_dataset("y", data=(labels == "dog").astype(np.int64), chunks=(32,))
    index = np.sort(rng.choice(500, 77, replace=False))
    for path, classes in (("t.parquet", ["cat", "dog"]), ("t.h5", [0, 1])):
        data = mdata.open_source(tmp_path / path)
        assert data.classes.tolist() == classes
        assert data.X.block_rows == (64 if path.endswith("parquet") else 32)
        out = np.empty((77, 3))
        data.X.read_rows(index, out)
        np.testing.assert_array_equal(out, X[index])
        np.testing.assert_array_equal(data.X.read(100, 300), X[100:300])
    model = model_for_data("softmax", X, 2)
    table = mdata.open_source(tmp_path / "t.parquet")
    history = fit(model, table, batch_size=32, epochs=1, verbose=0)
    assert history.meta["steps"] == 16 and set(model.predict(X[:20])) <= {"cat", "dog"}


def test_sharded_convert_round_trips_every_format(tmp_path):
    pytest.importorskip("pyarrow")
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2500, 5)).astype(np.float32)
    y = rng.integers(0, 4, 2500)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.savez_compressed(tmp_path / "d.npz", X=X, y=y)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("X", data=X)
        f.create_dataset("y", data=y)
    header = ",".join([f"f{i}" for i in range(5)] + ["label"])
    rows = [",".join([*map(repr, map(float, x)), str(int(t))]) for x, t in zip(X, y, strict=True)]
    (tmp_path / "d.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    for name, extra in (
        ("X.npy", {"y": tmp_path / "y.npy"}),
        ("d.npz", {}),
        ("d.h5", {}),
        ("d.csv", {}),
    ):
        out = tmp_path / f"shards-{name}"
        convert(tmp_path / name, out, shard_bytes=10_000, progress=False, **extra)
        manifest = json.loads((out / "minigd-shards.json").read_text())
        assert len(manifest["shards"]) >= 5  # 50 kB of features in 10 kB shards
        opened = mdata.open_source(out)
        assert opened.classes.tolist() == [0, 1, 2, 3], name
        np.testing.assert_array_equal(opened.X.read(), X)
        np.testing.assert_array_equal(opened.y.read(), y)


def test_convert_refuses_to_replace_and_a_failure_leaves_nothing(tmp_path):
    X = np.ones((100, 3), np.float32)
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "out"
    convert(tmp_path / "X.npy", out, progress=False)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert(tmp_path / "X.npy", out, progress=False)
    bad = tmp_path / "bad.npy"
    with open(bad, "wb") as f:  # a header that promises 100 rows, and 10 of them
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (100, 3)}
        )
        f.write(X[:10].tobytes())
    with pytest.raises(CorruptFileError, match="truncated"):
        convert(bad, out, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before  # the old folder is untouched
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_a_killed_convert_leaves_no_output_folder(tmp_path):
    # 80 MB in shards of 64 KB, each written and fsynced on its own: seconds to catch it mid-way
    X = np.random.default_rng(0).standard_normal((400_000, 50)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "out"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minigd",
            "convert",
            str(tmp_path / "X.npy"),
            str(out),
            "--shard-size",
            "64KB",
            "--quiet",
        ],
        env=ENV,
    )
    end = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*/x-00005.npy")):
        assert time.monotonic() < end and child.poll() is None, "convert never got going"
        time.sleep(0.01)
    child.kill()
    child.wait()
    assert not out.exists()  # a half-written set is never mistaken for a whole one
    done = subprocess.run(
        [sys.executable, "-m", "minigd", "convert", str(tmp_path / "X.npy"), str(out), "--quiet"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob(".out.partial-*"))  # the dead process's partial is gone
    np.testing.assert_array_equal(mdata.open_source(out).X.read(0, 1000), X[:1000])


# -- corrupt files, bad values: a sentence that names the file and the row --------------------
def test_a_truncated_or_missing_shard_is_named(tmp_path):
    X = np.arange(600, dtype=np.float32).reshape(200, 3)
    out = tmp_path / "s"
    convert_npy(tmp_path, X, np.zeros(200, int), out)
    shard = out / "x-00002.npy"
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 20)
    with pytest.raises(CorruptFileError, match=r"x-00002\.npy is truncated"):
        mdata.open_source(out)
    shard.unlink()
    with pytest.raises(CorruptFileError, match=r"x-00002\.npy is missing"):
        mdata.open_source(out)
    (out / "minigd-shards.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        mdata.open_source(out)


def test_a_shard_edited_while_training_stops_the_run_naming_it(tmp_path):
    """The manifest's digests are checked when the folder is opened; a shard written to after
    that is caught at its next read (size, modification time and identity from one fstat)."""
    X = np.arange(600, dtype=np.float32).reshape(200, 3)
    out = convert_npy(tmp_path, X, np.arange(200) % 2, tmp_path / "s")
    data = mdata.open_source(out)
    shard = out / "x-00002.npy"

    class EditsAShard(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 0:
                time.sleep(0.02)  # past the file system's timestamp granularity
                with open(shard, "r+b") as f:  # same size, other values
                    f.seek(-4, os.SEEK_END)
                    f.write(np.float32(1e6).tobytes())

    model = model_for_data("softmax", X, 2)
    with pytest.raises(CorruptFileError, match=r"x-00002\.npy changed while it was being read"):
        fit(model, data, batch_size=32, epochs=3, verbose=0, callbacks=[EditsAShard()])
    assert prefetch_threads() == []
    with pytest.raises(CorruptFileError, match=r"x-00002\.npy is not the shard"):
        mdata.open_source(out)  # and a new run is refused at the start


def convert_npy(tmp_path, X, y, out, shard_bytes=600):
    np.save(tmp_path / "cx.npy", X)
    np.save(tmp_path / "cy.npy", y)
    return convert(
        tmp_path / "cx.npy", out, y=tmp_path / "cy.npy", shard_bytes=shard_bytes, progress=False
    )


def test_a_file_cut_short_while_training_fails_in_the_loop_naming_file_and_row(table):
    folder, X, _ = table
    data = mdata.open_source(folder / "X.npy", y=folder / "y.npy")
    model = model_for_data("softmax", X, 3)
    with open(folder / "X.npy", "r+b") as f:  # after the header was checked
        f.truncate(data.X.offset + 500 * data.X.row_bytes)
    with pytest.raises(CorruptFileError, match=r"X\.npy ended early: row 5\d\d of 1003"):
        fit(model, data, batch_size=100, epochs=1, shuffle="none", verbose=0)
    assert prefetch_threads() == []


def test_nan_and_unknown_labels_are_refused_batch_by_batch_with_the_global_row(tmp_path):
    X = np.ones((300, 3), np.float32)
    X[257, 1] = np.nan
    y = np.zeros(300, int)
    out = convert_npy(tmp_path, X, y, tmp_path / "s")  # 50 rows a shard: row 257 is shard 5's 7
    model = model_for_data("softmax", X, 1 + 1)
    model.classes = np.array([0, 1])
    with pytest.raises(ValueError, match=r"row 257 \(.*x-00005\.npy, row 7\): X holds NaN or inf"):
        fit(model, mdata.open_source(out), batch_size=32, epochs=1, shuffle="none", verbose=0)
    y_bad = np.zeros(300, int)
    y_bad[123] = 7
    clean = np.ones((300, 3), np.float32)
    out = convert_npy(tmp_path, clean, y_bad, tmp_path / "s2")
    model = model_for_data("softmax", clean, 2)
    model.classes = np.array([0, 1])  # trained before on labels 0 and 1
    with pytest.raises(
        ValueError, match=r"row 123 \(.*y-00002\.npy, row 23\): label 7 is not one of the 2 classes"
    ):
        fit(model, mdata.open_source(out), batch_size=32, epochs=1, verbose=0)
    assert prefetch_threads() == []


# -- prefetch: the reader thread never outlives its epoch ---------------------------------------
def test_the_reader_stops_on_a_normal_end_a_break_and_an_exception(table):
    folder, X, _ = table
    for policy in ("rows", "blocks"):
        batches = MiniBatches(
            NpySource(folder / "X.npy"), NpySource(folder / "y.npy"), batch_size=10, shuffle=policy
        )
        assert len(list(batches.epoch(0))) == 101
        # the block shuffle reads the next epoch's first buffer ahead, until closed (its thread
        # may already have read this small file's one buffer and ended: look at the reader)
        assert (batches.rows._ahead is not None) == (policy == "blocks")
        assert prefetch_threads() in ([], ["minigd-prefetch"])
        batches.close()
        assert prefetch_threads() == []
        with contextlib.closing(batches.epoch(1)) as it:
            next(it)  # a break after the first batch
            if policy == "rows":  # 100 batches to go, 17 slots: the reader waits for one
                assert prefetch_threads() == ["minigd-prefetch"]
        assert prefetch_threads() == []
    model = model_for_data("softmax", X, 3)

    class BoomError(Exception):
        pass

    from minigd.training.callbacks import Callback

    class Explode(Callback):
        def on_step_end(self, trainer, loss):
            if trainer.step == 7:
                raise BoomError

    with pytest.raises(BoomError):
        fit(
            model,
            mdata.open_source(folder / "X.npy", y=folder / "y.npy"),
            batch_size=10,
            epochs=1,
            callbacks=[Explode()],
            verbose=0,
        )
    assert prefetch_threads() == []


def blocks_of(folder: Path, X=None, y=None, **options) -> MiniBatches:
    """The table streamed in buffers of 100 rows (two blocks of 50): 11 buffers an epoch."""
    x_source = NpySource(folder / "X.npy") if X is None else X
    y_source = NpySource(folder / "y.npy") if y is None else y
    return MiniBatches(x_source, y_source, batch_size=10, shuffle="blocks", block_rows=50,
                       buffer_bytes=100 * 56, **options)  # fmt: skip


def test_the_next_epochs_first_buffer_is_read_while_the_last_batch_trains(table):
    """The reader goes on into the next epoch as soon as the loop frees a slot, so the step
    that trains an epoch's last batch hides the next epoch's first read (it used to begin only
    once the loop had asked for a batch past the end); the next epoch is the one it would be."""
    folder, _, _ = table
    batches, reference = blocks_of(folder, seed=4), blocks_of(folder, seed=4)
    stats, epoch_bytes = batches.rows.stats, 1003 * 24
    it = batches.epoch(0)
    for _ in range(len(batches)):
        next(it)  # up to and holding the last batch
    deadline = time.monotonic() + 30
    while stats.bytes_read <= epoch_bytes and time.monotonic() < deadline:
        time.sleep(0.005)
    assert stats.bytes_read > epoch_bytes  # epoch 1's first buffer, while the last trains
    assert list(it) == []
    following = epoch_batches(batches, 1)
    expected = epoch_batches(reference, 1)
    assert len(following) == len(expected)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(following, expected, strict=True))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(following, expected, strict=True))
    batches.close()
    reference.close()
    assert prefetch_threads() == []


def test_reading_is_true_while_the_reader_loads_a_buffer(table, monkeypatch):
    """What the loop asks before each step (to train on one BLAS thread meanwhile)."""
    from minigd.batching.reader import BatchReader

    folder, _, _ = table
    gate, load = threading.Event(), BatchReader.load_buffer

    def held(self, *args, **kwargs):
        assert gate.wait(30)
        return load(self, *args, **kwargs)

    monkeypatch.setattr(BatchReader, "load_buffer", held)
    batches = blocks_of(folder)
    assert not batches.reading  # nothing started
    it = batches.epoch(0)
    first = threading.Thread(target=lambda: next(it), daemon=True)
    first.start()
    deadline = time.monotonic() + 30
    while not batches.reading and time.monotonic() < deadline:
        time.sleep(0.005)
    assert batches.reading  # held in the first buffer's load
    gate.set()
    first.join(30)
    rest = list(it)
    assert len(rest) == len(batches) - 1
    batches.close()
    assert not batches.reading and prefetch_threads() == []
    memory = MiniBatches(np.zeros((10, 2)), np.zeros(10), batch_size=5)
    assert not memory.reading


def test_a_block_is_checked_once_and_a_bad_block_in_every_epoch(table, tmp_path, monkeypatch):
    """Epochs after the first skip the NaN/inf check of the blocks already checked, where the
    source refuses a file changed under it; a block that failed fails again in the next epoch,
    and a source that cannot tell a change (an array handed in as a Source) is checked each time."""
    from minigd.batching.reader import BatchReader

    checked: list[int] = []
    check = BatchReader._check_block

    def counted(self, slot, x, rows, at):
        checked.append(len(x))
        return check(self, slot, x, rows, at)

    monkeypatch.setattr(BatchReader, "_check_block", counted)
    folder, X, y = table
    batches = blocks_of(folder)
    epoch_batches(batches, 0)
    assert sum(checked) == 1003
    epoch_batches(batches, 1)
    epoch_batches(batches, 2)
    batches.close()
    assert sum(checked) == 1003  # epochs 1 and 2 (and what was read ahead) checked nothing
    checked.clear()
    batches = blocks_of(folder, ArraySource(X), ArraySource(y))
    for epoch in (0, 1, 2):
        epoch_batches(batches, epoch)
    batches.close()
    assert sum(checked) >= 3 * 1003  # each epoch (read-ahead may add the next one's first)
    bad = X.copy()
    bad[777, 2] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    batches = blocks_of(folder, NpySource(tmp_path / "bad.npy"))
    for epoch in (0, 1, 2):
        with pytest.raises(ValueError, match=r"row 777 .*X holds NaN or inf"):
            epoch_batches(batches, epoch)
    batches.close()
    assert prefetch_threads() == []


def test_ctrl_c_while_streaming_checkpoints_and_leaves_no_reader_behind(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.standard_normal((60_000, 100)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 10, 60_000))
    script = textwrap.dedent(f"""
        import threading, sys
        from minigd import data
        from minigd.nn.models import model_for_data
        from minigd.training import make_trainer
        import numpy as np
        d = data.open_source({str(tmp_path / "X.npy")!r}, y={str(tmp_path / "y.npy")!r})
        model = model_for_data("mlp:64", np.zeros((1, 100)), 10)
        trainer = make_trainer(model, d, batch_size=16, epochs=50, verbose=0)
        print("training", flush=True)
        try:
            trainer.run()
        except KeyboardInterrupt:
            pass
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print(trainer.outcome, trainer.step, names, flush=True)
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert child.stdout.readline().strip() == "training"
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=60)
    outcome, step, names = out.split(" ", 2)
    assert child.returncode == 0 and outcome == "interrupted" and int(step) > 0
    assert names.strip() == "[]"


# -- exact resume of a streamed run, killed for real -----------------------------------------
@pytest.mark.slow
def test_a_streamed_run_killed_with_sigkill_resumes_bitwise_equal(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, 64)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) > 0).astype(int) + 2 * (X[:, 3] > 0)
    shards = convert_npy(tmp_path, X, y, tmp_path / "shards", shard_bytes=1 << 20)
    common = [
        "--data",
        str(shards),
        "--model",
        "mlp:32",
        "--batch-size",
        "16",
        "--optimizer",
        "adam",
        "--epochs",
        "2",
        "--quiet",
    ]
    cli = [sys.executable, "-m", "minigd", "train"]
    ref = subprocess.run(
        [*cli, *common, "--out", str(tmp_path / "ref")], env=ENV, capture_output=True, text=True
    )
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    child = subprocess.Popen(
        [*cli, *common, "--out", str(run), "--checkpoint-every", "50"], env=ENV
    )
    end = time.monotonic() + 60
    while not any(
        int(p.stem.split("-")[1]) > 1300 for p in (run / "checkpoints").glob("checkpoint-*.npz")
    ):
        assert time.monotonic() < end and child.poll() is None
        time.sleep(0.01)
    child.kill()  # SIGKILL inside epoch 2 (1250 steps an epoch)
    child.wait()
    config = json.loads((run / "config.json").read_text())
    assert (config["stream"], config["shuffle"]) == ("always", "blocks")
    resumed = subprocess.run(
        [*cli, "--resume", str(run), "--quiet"], env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    with np.load(tmp_path / "ref" / "model.npz") as a, np.load(run / "model.npz") as b:
        for name in a.files:
            if name != "architecture":
                np.testing.assert_array_equal(a[name], b[name])


# -- memory that does not grow with the data --------------------------------------------------
RSS_SCRIPT = """
import re, sys
from minigd import data
from minigd.nn.models import model_for_data
import numpy as np
from minigd.training import Callback, make_trainer
def kib(field):
    status = open("/proc/self/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field)))
def mapped_kib():  # the data file's pages mapped into this process (data.leased_map)
    maps = open("/proc/self/smaps").read()
    at = maps.find(sys.argv[1])
    return int(re.search(r"\\nRss:\\s+(\\d+)", maps[at:]).group(1)) if at >= 0 else 0
class Peaks(Callback):  # sampled every step: what the run allocates, what it maps
    anon = mapped = 0
    def on_step_end(self, trainer, loss):
        self.anon, self.mapped = max(self.anon, kib("RssAnon")), max(self.mapped, mapped_kib())
d = data.open_source(sys.argv[1], y=sys.argv[2])
model = model_for_data("softmax", np.zeros((1, 784)), 10)
peaks = Peaks()
trainer = make_trainer(model, d, batch_size=1024, epochs=1, verbose=0, threads=1,
                       callbacks=[peaks])
from minigd._kernels import warm_up
warm_up(np.float32)  # Numba's compiler takes its tens of MB once, whatever the data
before = kib("VmHWM")  # the interpreter, NumPy, the targets' scan: before any batch is read
before_anon = kib("RssAnon")
trainer.run()
print(before, kib("VmHWM"), trainer.batches.pipeline_bytes // 1024, before_anon, peaks.anon,
      peaks.mapped)
"""


def write_rows(path: Path, rows: int) -> None:
    """An MNIST-shaped float32 .npy of ``rows`` rows, written 20000 rows at a time."""
    chunk = np.random.default_rng(0).random((20_000, 784), dtype=np.float32)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (rows, 784)}
        )
        for lo in range(0, rows, 20_000):
            f.write(chunk[: min(20_000, rows - lo)].tobytes())


@pytest.mark.slow
def test_peak_memory_while_streaming_does_not_grow_with_the_file(tmp_path):
    """Read, the peak RSS is the buffers; mapped (``data.leased_map``), the run allocates less
    (no buffer for the features) and maps the blocks in flight: shared page-cache pages, up to
    the huge pages around each block (~2.5 times the buffers here), however large the file."""
    peaks, mapped = {}, {}
    for rows in (80_000, 320_000):  # 250 MB and 1 GB
        x, y = tmp_path / f"x{rows}.npy", tmp_path / f"y{rows}.npy"
        write_rows(x, rows)
        np.save(y, np.arange(rows) % 10)
        done = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, str(x), str(y)],
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        before, peak, pipeline, anon_before, anon, mapped[rows] = (
            int(v) / 1024 for v in done.stdout.split()
        )  # MiB
        peaks[rows] = anon
        print(f"{rows} rows: peak RSS grew {peak - before:.0f} MiB, allocated "
              f"{anon - anon_before:.0f} MiB, mapped {mapped[rows]:.0f} MiB; pipeline "
              f"{pipeline:.0f} MiB")  # fmt: skip
        # training allocated the shuffle buffers and batches (and the model), not the file
        assert anon - anon_before < pipeline + 32, (anon_before, anon, pipeline)
        assert peak - before < pipeline + mapped[rows] + 32, (before, peak, pipeline)
        x.unlink()
    assert peaks[320_000] - peaks[80_000] < 8, peaks  # 750 MB more data, a few MB more memory
    assert mapped[320_000] < 3 * pipeline, mapped  # the blocks in flight, not the file


TINY_ROWS = """
import sys
import numpy as np
from minigd import data
from minigd.nn import mlp
from minigd.training import Callback, make_trainer
def kib(field):
    status = open("/proc/self/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field)))
class Begin(Callback):  # what the run allocates (the mapped file's pages are the page cache's)
    def on_train_begin(self, trainer):
        self.rss = self.peak = kib("RssAnon")
    def on_step_end(self, trainer, loss):
        if trainer.step % 64 == 0:
            self.peak = max(self.peak, kib("RssAnon"))
from minigd._kernels import warm_up
warm_up(np.float32)  # Numba's compiler takes its tens of MB once, whatever the data
d = data.open_source(sys.argv[1], y=sys.argv[2])
trainer = make_trainer(mlp(4, [4], 2, seed=0), d.X, d.y, batch_size=64, epochs=1, verbose=0,
                       threads=1, shuffle_buffer=16 << 20)
begin = Begin()
trainer.callbacks.append(begin)
trainer.run()
print(begin.rss, begin.peak, trainer.batches.blocks.buffer_rows)
"""


def sparse_npy(path: Path, shape: tuple, dtype) -> int:
    """A .npy declaring ``shape`` whose data are a hole in the file (zeros, no disk)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
        )
        start = f.tell()
        f.truncate(start + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return start


def test_a_shuffle_buffer_of_tiny_rows_costs_what_its_budget_says(tmp_path):
    """4 float32 features and a uint8 label are 17 bytes a row, but a buffer also holds each
    row's number, its place in the permutation and its encoded label: 41 bytes. A 16 MiB
    buffer counted by the features alone held 2.5x its budget."""
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    rows = 4_000_000
    sparse_npy(x, (rows, 4), np.float32)
    start = sparse_npy(y, (rows,), np.uint8)
    with open(y, "r+b") as f:  # two classes
        f.seek(start + rows // 2)
        f.write(b"\x01")
    done = subprocess.run([sys.executable, "-c", TINY_ROWS, str(x), str(y)], env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    begin, peak, buffer_rows = (int(v) for v in done.stdout.split())
    assert buffer_rows * 41 <= 16 << 20 < (buffer_rows + 2 * 65536) * 41
    grew = (peak - begin) / 1024  # MiB
    print(f"grew {grew:.0f} MiB for 16 MiB buffers")
    # three buffers in flight (buffer_slots), one being encoded (its temporaries: ~15 MiB) and
    # the allocator's slack; counted by the features alone the buffers took ~150 MiB
    assert grew < 3 * 16 + 32


def test_the_buffers_row_cost_counts_indexes_and_encoded_targets():
    assert buffer_row_bytes(16) == 16 + 16
    assert buffer_row_bytes(16, 1, 1) == 16 + 16 + 1 + 8
    X = np.zeros((1000, 4), np.float32)
    memory = MiniBatches(X, np.zeros(1000, np.uint8), batch_size=8, shuffle="blocks")
    assert memory.rows.buffer_row_bytes == 41


def test_a_resume_keeps_the_block_cut_its_run_started_with(table):
    """The buffer's size follows what a row costs, which a newer version may count otherwise:
    a checkpoint's cut is kept, so the resume draws the batches its run would have drawn."""
    folder, X, _ = table

    def run(buffer_bytes, resume=None, stop=None):
        callbacks = [Checkpoint(folder / "ck", every_steps=5)]
        if stop is not None:
            callbacks.append(StopAt(stop))
        model = model_for_data("mlp:8", X, 3)
        fit(model, NpySource(folder / "X.npy"), NpySource(folder / "y.npy"), batch_size=16,
            epochs=2, shuffle="blocks", shuffle_buffer=buffer_bytes, verbose=0, threads=1,
            callbacks=callbacks, resume=resume)  # fmt: skip
        return model

    reference = model_for_data("mlp:8", X, 3)
    fit(reference, NpySource(folder / "X.npy"), NpySource(folder / "y.npy"), batch_size=16,
        epochs=2, shuffle="blocks", shuffle_buffer=6 * 1024, verbose=0, threads=1)  # fmt: skip
    run(6 * 1024, stop=50)
    resumed = run(20 * 1024, resume=folder / "ck")  # another budget: the run's own cut is kept
    np.testing.assert_array_equal(resumed.params, reference.params)


# -- the command line ------------------------------------------------------------------------
def test_info_reads_headers_only_even_for_a_file_far_larger_than_memory(tmp_path, capsys):
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:  # 10 million rows of 784 floats, 31 GB: a sparse file
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (10_000_000, 784)}
        )
        f.truncate(f.tell() + 10_000_000 * 784 * 4)
    assert main(["info", str(huge)]) == 0
    out = capsys.readouterr().out
    assert "X (10000000, 784) float32, 29.2 GiB on disk" in out
    assert "m = 10000000 > ~2000" in out and "block shuffle at B=64" in out


def test_convert_then_train_streams_with_a_first_line_that_says_so(tmp_path, table, capsys):
    folder, X, _ = table
    shards = tmp_path / "shards"
    assert (
        main(
            ["convert", str(folder / "X.npy"), str(shards), "--y", str(folder / "y.npy"), "--quiet"]
        )
        == 0
    )
    assert f"Train with: minigd train --data {shards}" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--data",
                str(shards),
                "--model",
                "softmax",
                "--epochs",
                "2",
                "--validation-split",
                "0.2",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "streamed from disk (blocks shuffle)" in out and "val_accuracy" in out
    from minigd.nn import load_model

    # the saved model speaks the data's labels
    assert set(load_model(tmp_path / "run" / "model.npz").predict(X[:50])) <= {10, 20, 30}
    assert main(["find-batch-size", "--data", str(shards), "--candidates", "16,64", "--quiet"]) == 0
    assert "knee" in capsys.readouterr().out


def test_advice_for_a_streamed_set_counts_the_pipeline_not_the_data(table):
    from minigd.batching import pipeline_bytes
    from minigd.batchsize import advise
    from minigd.data.opening import sample

    folder, X, _ = table
    data = mdata.open_source(folder / "X.npy", y=folder / "y.npy")
    part = sample(data, 500)
    assert len(part.X) == 500 and part.classes.tolist() == [10, 20, 30]
    model = model_for_data("softmax", X, 3)
    advice = advise(
        model,
        part.X,
        part.y,
        measure=False,
        n_samples=10_000_000,
        pipeline=lambda b: pipeline_bytes(6 * 4 + 8, b, 1000),
    )
    assert advice.n_samples == 10_000_000
    by_size = {c.batch_size: c.estimated_bytes for c in advice.candidates}
    plain = advise(model, part.X, part.y, measure=False, n_samples=10_000_000)
    for c in plain.candidates:
        if c.batch_size < 10_000_000:  # a full batch of a streamed set is read, not viewed
            assert by_size[c.batch_size] - c.estimated_bytes == pipeline_bytes(
                32, c.batch_size, 1000
            )
    assert ArraySource(X).in_memory


def test_direct_reads_return_what_plain_reads_return(tmp_path):
    """O_DIRECT (used for files larger than half the memory) through its aligned scratch: rows
    at odd offsets, runs longer than the scratch, the file's last row."""
    rng = np.random.default_rng(3)
    X = rng.random((40_000, 37)).astype(np.float32)  # 5.9 MB: runs span the 4 MiB scratch
    np.save(tmp_path / "x.npy", X)
    direct, plain = NpySource(tmp_path / "x.npy", direct=True), NpySource(tmp_path / "x.npy")
    assert not plain.direct
    index = np.sort(rng.choice(40_000, 3000, replace=False))
    for source in (direct, plain):
        out = np.empty((3000, 37), np.float32)
        source.read_rows(index, out)
        np.testing.assert_array_equal(out, X[index])
        np.testing.assert_array_equal(source.read(), X)
        np.testing.assert_array_equal(source.read(39_999), X[39_999:])
    with open(tmp_path / "x.npy", "r+b") as f:  # cut short: the direct path says so too
        f.truncate(direct.offset + 100 * direct.row_bytes + 5)
    with pytest.raises(CorruptFileError, match="ended early: row 100 of 40000"):
        direct.read(50, 200)


def test_text_labels_survive_convert_as_a_label_table(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(4)
    names = np.array(["cat", "dog", "hippopotamus"])
    labels = names[rng.integers(0, 3, 3000)]
    labels[:700] = "cat"  # the first chunk holds only short labels
    X = rng.random((3000, 4))
    pq.write_table(
        pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "d": X[:, 3], "kind": labels}),
        tmp_path / "t.parquet",
        row_group_size=500,
    )
    out = convert(tmp_path / "t.parquet", tmp_path / "s", shard_bytes=8_000, progress=False)
    data = mdata.open_source(out)
    assert data.classes.tolist() == ["cat", "dog", "hippopotamus"]
    assert data.y.read().tolist() == labels.tolist()
    model = model_for_data("softmax", X, 3)
    fit(model, data, batch_size=100, epochs=1, verbose=0)
    assert set(model.predict(X[:30])) <= set(names)


@pytest.mark.parametrize("policy", ["rows", "blocks", "none", "small buffers"])
def test_each_rank_reads_only_its_share_and_the_shares_make_the_batch(table, policy):
    """With small buffers most batches span two, and a rank may own rows of the second only
    (its batch then came from the first buffer's slot: other rows, silently)."""
    from minigd.batching import rank_share

    folder, X, _ = table
    options = {"batch_size": 50, "shuffle": policy, "seed": 1, "last_batch": "merge"}
    if policy == "small buffers":
        options |= {"shuffle": "blocks", "buffer_bytes": 120 * 56}
        policy = "blocks"
    for source in (X, NpySource(folder / "X.npy")):
        whole = [xb.copy() for xb in MiniBatches(source, block_rows=40, **options).epoch(2)]
        shares = []
        for rank in range(3):
            batches = MiniBatches(source, block_rows=40, **options).shard(rank, 3)
            shares.append([xb.copy() for xb in batches.epoch(2)])
            batches.close()
        by_blocks = policy == "blocks" and isinstance(source, NpySource)
        for i, batch in enumerate(whole):
            together = np.concatenate([s[i] for s in shares])
            if by_blocks:  # each rank's rows of the batch are those of the blocks it read
                assert sorted(map(tuple, together)) == sorted(map(tuple, batch))
                continue
            sizes = [b - a for a, b in (rank_share(len(batch), r, 3) for r in range(3))]
            assert [len(s[i]) for s in shares] == sizes
            np.testing.assert_array_equal(together, batch)
