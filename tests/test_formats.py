"""One table of formats (``minigd.data.formats``): every format opens as a source, loads whole and
converts, and every command takes HDF5 files and shard folders, in memory or streamed."""

from pathlib import Path

import numpy as np
import pytest

from minigd.cli import main
from minigd.data import FORMATS, load_arrays, open_source
from minigd.data.convert import convert
from minigd.data.formats import format_of, read_chunks, suffixes

LABELS = np.array(["cat", "dog", "owl"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same 360 samples (8 features, 3 text classes) as .npz, .h5 and a shard folder."""
    h5py = pytest.importorskip("h5py")
    folder = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 360)
    X = (rng.normal(size=(360, 8)) + 2.0 * y[:, None]).astype(np.float32)
    np.savez(folder / "d.npz", X=X, y=LABELS[y])
    with h5py.File(folder / "d.h5", "w") as f:
        f["X"] = X
        f["y"] = y  # HDF5 holds numbers; text labels come through the other two
    convert(folder / "d.npz", folder / "shards", shard_bytes=4096, progress=False)
    return {"X": X, "y": y, "npz": folder / "d.npz", "h5": folder / "d.h5",
            "shards": folder / "shards"}  # fmt: skip


@pytest.mark.parametrize("kind", ["h5", "shards"])
def test_loading_whole_is_reading_the_source_whole(files, kind):
    data = load_arrays(files[kind])
    np.testing.assert_array_equal(data.X, files["X"])
    # classes are the stored labels, the codes index them: the same rows in every format
    expected = LABELS if kind == "shards" else np.arange(3)
    np.testing.assert_array_equal(data.classes, expected)
    np.testing.assert_array_equal(data.y, files["y"])
    source = open_source(files[kind])
    assert source.X.n_rows == 360 and not source.in_memory


def test_every_format_in_the_table_reads_its_chunks_as_it_loads(files, tmp_path):
    assert {f.name for f in FORMATS} == {"npy", "npz", "csv", "parquet", "hdf5"}
    for kind in ("npz", "h5", "shards"):
        chunks, _, _ = read_chunks(files[kind])
        X = np.concatenate([x for x, _ in chunks])
        np.testing.assert_array_equal(X, files["X"])
    assert format_of(files["shards"]).name == "shards"
    assert format_of(tmp_path / "x.HDF5").name == "hdf5"
    with pytest.raises(ValueError, match=r"y= gives the targets of a \.npy X"):
        load_arrays(files["h5"], y_path=files["npz"])


def test_help_texts_list_the_formats_of_the_table(capsys):
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    assert suffixes() == ".npy/.npz/.csv/.parquet/.h5/.hdf5"
    assert suffixes() in " ".join(capsys.readouterr().out.split())


COMMANDS = {
    "info": ["info", "{data}"],
    "train in memory": ["train", "--data", "{data}", "--model", "softmax", "--epochs", "2",
                        "--stream", "never", "--out", "{out}/mem", "--quiet"],
    "train streamed": ["train", "--data", "{data}", "--model", "softmax", "--epochs", "2",
                       "--stream", "always", "--out", "{out}/disk", "--quiet"],
    "advise": ["advise", "--data", "{data}", "--model", "softmax", "--no-measure", "--quiet"],
    "find-batch-size": ["find-batch-size", "--data", "{data}", "--model", "softmax",
                        "--candidates", "16,64", "--quiet"],
    "noise-scale": ["noise-scale", "--data", "{data}", "--model", "softmax", "--b-small", "8",
                    "--b-big", "64", "--n-batches", "4", "--quiet"],
    "compare": ["compare", "--data", "{data}", "--model", "softmax", "--batch-sizes", "full,32",
                "--epochs", "1", "--target", "val_accuracy:0.5", "--out", "{out}/cmp", "--quiet"],
    "sweep": ["sweep", "--data", "{data}", "--model", "softmax", "--batch-sizes", "32,64",
              "--lrs", "0.1,0.3", "--seeds", "0", "--target", "val_accuracy:0.5",
              "--max-epochs", "2", "--out", "{out}/sweep", "--quiet"],
    "convert": ["convert", "{data}", "{out}/recut", "--quiet"],
}  # fmt: skip


@pytest.mark.parametrize("kind", ["h5", "shards"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_takes_hdf5_and_shard_folders(files, kind, command, tmp_path, capsys):
    argv = [a.format(data=files[kind], out=tmp_path) for a in COMMANDS[command]]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    if command.startswith("train"):
        model = str(tmp_path / ("mem" if "memory" in command else "disk") / "model.npz")
        assert main(["evaluate", "--model-file", model, "--data", str(files[kind])]) == 0
        assert "accuracy" in capsys.readouterr().out
    if command == "convert":
        np.testing.assert_array_equal(load_arrays(tmp_path / "recut").X, files["X"])


def test_one_hot_targets_read_alike_in_memory_streamed_and_converted(tmp_path):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 300)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    one_hot = np.eye(3, dtype=np.float32)[labels]
    np.savez(tmp_path / "d.npz", X=X, y=one_hot)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", one_hot)
    convert(tmp_path / "d.npz", tmp_path / "shards", shard_bytes=2048, progress=False)
    readings = {
        "in memory": load_arrays(tmp_path / "d.npz"),
        "streamed": open_source(tmp_path / "X.npy", y=tmp_path / "y.npy"),
        "converted": open_source(tmp_path / "shards"),
        "converted, loaded": load_arrays(tmp_path / "shards"),
    }
    for how, data in readings.items():
        np.testing.assert_array_equal(data.classes, [0, 1, 2], err_msg=how)
    assert np.array_equal(readings["streamed"].y.read(0, 300), labels)
    assert np.array_equal(readings["converted, loaded"].y, labels)
    # and a model trained on the converted folder has an output per class
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "shards"), "--model", "softmax", "--epochs",
                 "1", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    from minigd.nn import load_model

    assert load_model(out / "model.npz").n_outputs == 3


def test_a_row_that_breaks_the_one_hot_pattern_is_named(tmp_path):
    y = np.eye(3)[np.arange(70_000) % 3]
    y[69_000] = [1, 1, 0]  # past the first chunk, which decided the targets are one-hot
    np.savez(tmp_path / "d.npz", X=np.zeros((70_000, 2), np.float32), y=y)
    with pytest.raises(ValueError, match="one-hot rows, but a row from 65536 on is not"):
        convert(tmp_path / "d.npz", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_several_values_per_sample_are_regression_in_memory_and_converted(tmp_path):
    y = np.eye(3)[np.arange(90) % 3]
    y[5] = [1, 1, 0]  # not one-hot: three 0/1 values per sample
    np.savez(tmp_path / "d.npz", X=np.zeros((90, 2), np.float32), y=y)
    convert(tmp_path / "d.npz", tmp_path / "out", progress=False)
    for data in (load_arrays(tmp_path / "d.npz"), open_source(tmp_path / "out")):
        assert data.classes is None and data.task_reason.endswith("several columns: regression")


def test_a_shard_edited_after_convert_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(300, 4)).astype(np.float32),
             y=rng.integers(0, 2, 300))  # fmt: skip
    convert(tmp_path / "d.npz", tmp_path / "shards", shard_bytes=1024, progress=False)
    assert len(load_arrays(tmp_path / "shards").X) == 300  # as written: opens
    shard = tmp_path / "shards" / "x-00001.npy"
    edited = np.load(shard)
    edited[3, 2] += 1.0  # same size, one value altered
    np.save(shard, edited)
    with pytest.raises(ValueError, match=r"x-00001\.npy is not the shard minigd convert wrote"):
        open_source(tmp_path / "shards")
    code = main(["train", "--data", str(tmp_path / "shards"), "--model", "softmax", "--epochs",
                 "1", "--out", str(tmp_path / "run"), "--quiet"])  # fmt: skip
    assert code == 2 and not (tmp_path / "run").exists()


def test_one_feature_data_streams_as_it_loads(tmp_path):
    """A 1-D .npy of features is rows of one feature in memory; streamed and converted too."""
    rng = np.random.default_rng(6)
    np.save(tmp_path / "x.npy", rng.normal(size=500).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(500) % 2)
    streamed = open_source(tmp_path / "x.npy", y=tmp_path / "y.npy")
    assert streamed.X.row_shape == (1,)
    np.testing.assert_array_equal(streamed.X.read(0, 500)[:, 0], np.load(tmp_path / "x.npy"))
    convert(tmp_path / "x.npy", tmp_path / "shards", y=tmp_path / "y.npy", progress=False)
    for data in (str(tmp_path / "x.npy"), str(tmp_path / "shards")):
        extra = ["--y", str(tmp_path / "y.npy")] if data.endswith(".npy") else []
        out = tmp_path / f"run-{Path(data).stem}"
        assert main(["train", "--data", data, *extra, "--model", "logistic", "--epochs", "1",
                     "--stream", "always", "--out", str(out), "--quiet"]) == 0  # fmt: skip
