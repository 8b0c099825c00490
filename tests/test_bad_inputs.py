"""Bad input gets one clear sentence: the API raises the documented error type with a sentence
that says what is wrong, and the command line exits with code 2 (bad input) and prints that
sentence, never a traceback. Each row is (name, call, expected error type, a fragment of the
sentence). Hostile files are made once per session in ``files``."""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest

from minigd import MiniBatches, fit
from minigd.batchsize import advise, find_batch_size, noise_scale, parse_bytes, scale_lr
from minigd.cli import main
from minigd.data import datasets, load, load_arrays, read_idx
from minigd.experiments import Budget, compare
from minigd.nn import (
    BatchNorm,
    Dense,
    Dropout,
    Sequential,
    linear_regression,
    load_model,
    mlp,
    parse_model_spec,
)
from minigd.optim import SGD, Adam, get_optimizer
from minigd.runs import RunConfig, RunFolder, read_config, train_run
from minigd.training import Checkpoint, EarlyStopping, LearningRateSchedule, load_checkpoint

RNG = np.random.default_rng(0)
X = RNG.random((40, 4), dtype=np.float32)
Y = RNG.integers(0, 3, 40)


def model():
    return mlp(4, [5], 3)


def npy_header(shape, data=b"\0" * 40) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + data


def saved_model(tmp, arch=None, drop=(), **replace) -> str:
    """A model.npz written by save(), with its architecture or arrays then tampered with."""
    path = tmp / f"model-{len(list(tmp.glob('model-*')))}.npz"
    mlp(4, [5], 3).save(path)
    arrays = dict(np.load(path, allow_pickle=False))
    if arch is not None:
        arrays["architecture"] = np.array(arch if isinstance(arch, str) else json.dumps(arch))
    for name in drop:
        arrays.pop(name)
    arrays.update(replace)
    np.savez(path, **arrays)
    return str(path)


def architecture(**changes):
    config = mlp(4, [5], 3).config()
    return config | changes


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    np.savez(tmp / "ok.npz", X=X, y=Y)
    np.savez(tmp / "noX.npz", data=X)
    np.save(tmp / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp / "random.npz").write_bytes(RNG.bytes(300))
    (tmp / "random.npy").write_bytes(b"\x93NUMPY" + RNG.bytes(300))
    (tmp / "hostile.npy").write_bytes(npy_header((10**13,)))
    with zipfile.ZipFile(tmp / "hostile.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("X.npy", npy_header((10**13,)))
    (tmp / "truncated.npz").write_bytes((tmp / "ok.npz").read_bytes()[:200])
    np.savez(tmp / "long-y.npz", X=X, y=np.concatenate([Y, Y[:3]]))  # more labels than rows
    np.savez(tmp / "short-y.npz", X=X, y=Y[:-3])
    (tmp / "dir.npz").mkdir()
    (tmp / "x.txt").write_text("1,2\n")
    (tmp / "ragged.csv").write_text("a,b,c\n1,2,0\n3,1\n")
    (tmp / "empty.csv").write_text("")
    (tmp / "header.csv").write_text("a,b\n")
    (tmp / "text.csv").write_text("a,b,c\n1,x,0\n")
    (tmp / "latin1.csv").write_bytes("a,b\n1,\xe9\n".encode("latin-1"))
    (tmp / "garbage.parquet").write_bytes(b"PAR1" + RNG.bytes(100))
    np.save(tmp / "nan.npy", np.where(np.arange(40)[:, None] == 3, np.nan, X))
    np.save(tmp / "labels.npy", Y)
    np.save(tmp / "X.npy", X)
    (tmp / "a-file").write_text("not a folder")
    (tmp / "bad.idx").write_bytes(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x09" + b"\x01\x02")
    for name, text in {
        "badjson": "{not json",
        "list": "[1, 2]",
        "unknown": json.dumps({"data": "digits", "colour": "red"}),
        "epochs": json.dumps({"data": "digits", "epochs": 0}),
    }.items():
        (tmp / f"config-{name}").mkdir()
        (tmp / f"config-{name}" / "config.json").write_text(text)
    run = tmp / "run"
    fit_args = [
        "--data",
        str(tmp / "ok.npz"),
        "--model",
        "softmax",
        "--epochs",
        "2",
        "--batch-size",
        "8",
    ]
    assert main(["train", *fit_args, "--out", str(run), "--quiet"]) == 0
    checkpoint = sorted((run / "checkpoints").glob("checkpoint-*.npz"))[-1]
    arrays = dict(np.load(checkpoint, allow_pickle=False))
    meta = json.loads(str(arrays["meta"]))
    for name, change in {
        "nometa": lambda a, m: a.pop("meta"),
        "badmeta": lambda a, m: a.update(meta=np.array("{oops")),
        "format2": lambda a, m: a.update(
            meta=np.array(json.dumps(m | {"format": "minigd-checkpoint-2"}))
        ),
        "nofields": lambda a, m: a.update(meta=np.array(json.dumps({"format": m["format"]}))),
        "entry": lambda a, m: a.update({"weird/x": np.zeros(1)}),
    }.items():
        broken = dict(arrays)
        change(broken, meta)
        np.savez(tmp / f"ckpt-{name}.npz", **broken)
    tampered = tmp / "run-tampered"  # a copy whose newest checkpoint holds an edited state
    shutil.copytree(run, tampered)
    states = meta["callbacks"] | {"1:DivergenceGuard": {"start": "oops"}}
    arrays["meta"] = np.array(json.dumps(meta | {"callbacks": states}))
    np.savez(tampered / "checkpoints" / checkpoint.name, **arrays)
    return tmp


def f(name):
    """The path of a hostile file, as a string."""
    return lambda files: str(files / name)


# (name, call taking the files folder, error type, fragment of the sentence)
API = [
    # models and arguments of fit
    (
        "fit None model",
        lambda d: fit(None, X, Y, batch_size=4, epochs=1),
        TypeError,
        "model must be a minigd.nn.Sequential",
    ),
    (
        "fit no targets",
        lambda d: fit(model(), X, None, batch_size=4, epochs=1),
        ValueError,
        "fit needs targets y",
    ),
    (
        "fit epochs 0",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=0, verbose=0),
        ValueError,
        "epochs must be an integer >= 1",
    ),
    (
        "fit lr negative",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, lr=-1.0),
        ValueError,
        "lr must be a finite number > 0",
    ),
    (
        "fit lr nan",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, lr=float("nan")),
        ValueError,
        "lr must be a finite number",
    ),
    (
        "fit unknown optimizer",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, optimizer="adamx"),
        ValueError,
        "optimizer must be one of",
    ),
    (
        "fit lr beside an Optimizer",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, optimizer=SGD(0.1), lr=0.1),
        ValueError,
        "pass lr to the optimizer's constructor",
    ),
    (
        "fit batch 0",
        lambda d: fit(model(), X, Y, batch_size=0, epochs=1),
        ValueError,
        "batch_size must be an integer >= 1",
    ),
    (
        "fit batch > m",
        lambda d: fit(model(), X, Y, batch_size=41, epochs=1),
        ValueError,
        "at most the number of samples (40)",
    ),
    (
        "fit batch word",
        lambda d: fit(model(), X, Y, batch_size="half", epochs=1),
        ValueError,
        'an integer >= 1 or "full"',
    ),
    (
        "fit batch float",
        lambda d: fit(model(), X, Y, batch_size=2.5, epochs=1),
        TypeError,
        "Pass a whole number of samples",
    ),
    (
        "fit last_batch",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, last_batch="pad"),
        ValueError,
        "last_batch must be one of",
    ),
    (
        "fit sample_axis 2",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, sample_axis=2),
        ValueError,
        "sample_axis must be one of",
    ),
    (
        "fit seed negative",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, seed=-1),
        ValueError,
        "seed must be an integer >= 0",
    ),
    (
        "fit split 1.5",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, validation_split=1.5),
        ValueError,
        "validation_split must be a finite number",
    ),
    (
        "fit split leaves none",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, validation_split=0.001),
        ValueError,
        "leaving samples on both sides",
    ),
    (
        "fit split and validation",
        lambda d: fit(
            model(), X, Y, batch_size=4, epochs=1, validation=(X, Y), validation_split=0.2
        ),
        ValueError,
        "not both",
    ),
    (
        "validation a 1-tuple",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, validation=(X,)),
        ValueError,
        "received a tuple of 1 items",
    ),
    (
        "validation wrong width",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, validation=(X[:, :3], Y)),
        ValueError,
        "validation X must be of 4 features",
    ),
    (
        "validation y length",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, validation=(X, Y[:5])),
        ValueError,
        "validation X and validation y must have the same number",
    ),
    (
        "BatchNorm batch of 1",
        lambda d: fit(mlp(4, [5], 3, batchnorm=True), X[:33], Y[:33], batch_size=8, epochs=1),
        ValueError,
        "last_batch='merge'",
    ),
    (
        "unknown loss",
        lambda d: fit(model(), X, Y, batch_size=4, epochs=1, loss="hinge"),
        ValueError,
        "loss must be one of",
    ),
    # the data itself
    (
        "X None",
        lambda d: MiniBatches(None, batch_size=2),
        TypeError,
        "X must be a numeric array; received None",
    ),
    (
        "X ragged",
        lambda d: MiniBatches([[1.0, 2.0], [3.0]], batch_size=1),
        ValueError,
        "X must be a rectangular array",
    ),
    (
        "X text",
        lambda d: MiniBatches(np.array([["a", "b"]]), batch_size=1),
        TypeError,
        "Convert text or object columns",
    ),
    (
        "X complex",
        lambda d: MiniBatches(np.ones((3, 2), complex), batch_size=1),
        TypeError,
        "real-valued",
    ),
    (
        "X scalar",
        lambda d: MiniBatches(np.float32(1), batch_size=1),
        ValueError,
        "an array with a sample axis",
    ),
    (
        "X empty",
        lambda d: MiniBatches(np.zeros((0, 3)), batch_size=1),
        ValueError,
        "X must be non-empty",
    ),
    (
        "X NaN",
        lambda d: fit(
            model(), np.where(np.arange(40)[:, None] == 3, np.nan, X), Y, batch_size=4, epochs=1
        ),
        ValueError,
        "sample 3",
    ),
    (
        "X inf",
        lambda d: MiniBatches(np.array([[1.0], [np.inf]]), batch_size=1),
        ValueError,
        "NaN or inf",
    ),
    (
        "X wrong width",
        lambda d: fit(model(), X[:, :3], Y, batch_size=4, epochs=1),
        ValueError,
        "X must be of 4 features per sample",
    ),
    (
        "y length",
        lambda d: fit(model(), X, Y[:30], batch_size=4, epochs=1),
        ValueError,
        "X has 40 and y has 30",
    ),
    (
        "y transposed",
        lambda d: MiniBatches(X, np.zeros((3, 40)), batch_size=4),
        ValueError,
        "looks transposed",
    ),
    (
        "y 3-D",
        lambda d: MiniBatches(X, np.zeros((40, 1, 1)), batch_size=4),
        ValueError,
        "y must be of shape (m,) or (m, k)",
    ),
    (
        "y text",
        lambda d: MiniBatches(X, np.array(["a"] * 40), batch_size=4),
        TypeError,
        "Map class names to integers",
    ),
    (
        "labels out of range",
        lambda d: fit(model(), X, Y + 5, batch_size=4, epochs=1),
        ValueError,
        "class labels must lie in 0..2",
    ),
    (
        "labels negative",
        lambda d: fit(model(), X, Y - 1, batch_size=4, epochs=1),
        ValueError,
        "has label -1",
    ),
    (
        "labels fractional",
        lambda d: fit(model(), X, Y + 0.5, batch_size=4, epochs=1),
        ValueError,
        "whole numbers",
    ),
    (
        "labels one-hot",
        lambda d: fit(model(), X, np.eye(3)[Y], batch_size=4, epochs=1),
        ValueError,
        "not one-hot rows",
    ),
    (
        "binary label 2",
        lambda d: fit(mlp(4, [5], 1, loss="bce"), X, Y, batch_size=4, epochs=1),
        ValueError,
        "binary targets must be 0 or 1",
    ),
    (
        "regression width",
        lambda d: fit(linear_regression(4, outputs=2), X, X[:, :3], batch_size=4, epochs=1),
        ValueError,
        "of shape (m, 2)",
    ),
    (
        "batches start past the end",
        lambda d: next(MiniBatches(X, batch_size=4).epoch(0, 11)),
        ValueError,
        "start must be at most the number of batches (10)",
    ),
    # layers, models, optimizers, schedules
    ("Sequential no layers", lambda d: Sequential([]), ValueError, "at least one layer"),
    (
        "Sequential float16",
        lambda d: Sequential([Dense(2, 2)], dtype=np.float16),
        ValueError,
        "dtype must be float32 or float64",
    ),
    ("Dense 0 inputs", lambda d: Dense(0, 3), ValueError, "in_features must be an integer >= 1"),
    ("Dropout p=1", lambda d: Dropout(1.0), ValueError, "p=1 would drop every unit"),
    ("BatchNorm momentum 2", lambda d: BatchNorm(3, momentum=2.0), ValueError, "momentum must be"),
    (
        "mlp activation",
        lambda d: mlp(4, [5], 3, activation="swish"),
        ValueError,
        "activation must be one of",
    ),
    (
        "predict_proba regression",
        lambda d: linear_regression(4).predict_proba(X),
        TypeError,
        "applies to classifiers",
    ),
    (
        "load_state other model",
        lambda d: mlp(4, [6], 3).load_state(model().state()),
        ValueError,
        "the architectures differ",
    ),
    (
        "spec unknown",
        lambda d: parse_model_spec("cnn", 4, 3),
        ValueError,
        "unknown model spec 'cnn'",
    ),
    (
        "spec widths",
        lambda d: parse_model_spec("mlp:abc", 4, 3),
        ValueError,
        "mlp widths must be integers",
    ),
    (
        "spec no widths",
        lambda d: parse_model_spec("mlp:", 4, 3),
        ValueError,
        "mlp needs hidden widths",
    ),
    (
        "spec softmax:5",
        lambda d: parse_model_spec("softmax:5", 4, 3),
        ValueError,
        "takes no options",
    ),
    (
        "spec bn twice",
        lambda d: parse_model_spec("mlp:8+bn+bn", 4, 3),
        ValueError,
        "+bn is given twice",
    ),
    (
        "spec dropoutx",
        lambda d: parse_model_spec("mlp:8+dropoutx", 4, 3),
        ValueError,
        "+dropout takes a probability",
    ),
    (
        "spec option",
        lambda d: parse_model_spec("mlp:8+relu", 4, 3),
        ValueError,
        "unknown mlp option 'relu'",
    ),
    (
        "spec softmax regression",
        lambda d: parse_model_spec("softmax", 4, None),
        ValueError,
        "needs class labels",
    ),
    (
        "nesterov without momentum",
        lambda d: SGD(0.1, nesterov=True),
        ValueError,
        "momentum > 0 and dampening = 0",
    ),
    ("Adam one beta", lambda d: Adam(betas=(0.9,)), ValueError, "betas must be a pair"),
    ("Adam beta 1", lambda d: Adam(betas=(1.0, 0.9)), ValueError, "in [0, 1)"),
    ("optimizer name", lambda d: get_optimizer("adagrad"), ValueError, "'nesterov', 'rmsprop'"),
    (
        "schedule per week",
        lambda d: LearningRateSchedule(lambda t: 0.1, per="week"),
        ValueError,
        "per must be one of",
    ),
    (
        "Checkpoint never",
        lambda d: Checkpoint(d, every_epoch=False),
        ValueError,
        "needs every_steps, every_seconds",
    ),
    (
        "Checkpoint every 0 s",
        lambda d: Checkpoint(d, every_seconds=0),
        ValueError,
        "every_seconds must be",
    ),
    (
        "monitor missing",
        lambda d: fit(
            model(), X, Y, batch_size=8, epochs=2, verbose=0, callbacks=[EarlyStopping()]
        ),
        KeyError,
        "Pass validation data to monitor val_",
    ),
    # batch-size tools
    (
        "noise rule without noise",
        lambda d: scale_lr(0.1, 32, 64, rule="noise"),
        ValueError,
        "needs a positive noise_scale",
    ),
    ("scale lr0 0", lambda d: scale_lr(0.0, 32, 64), ValueError, "lr0 must be"),
    (
        "scale rule",
        lambda d: scale_lr(0.1, 32, 64, rule="cubic"),
        ValueError,
        "rule must be one of",
    ),
    (
        "noise b_small >= b_big",
        lambda d: noise_scale(model(), X, Y, b_small=16, b_big=8),
        ValueError,
        "b_small < b_big <= m = 40",
    ),
    (
        "noise b_big > m",
        lambda d: noise_scale(model(), X, Y, b_small=4, b_big=80),
        ValueError,
        "b_small < b_big <= m",
    ),
    ("memory size", lambda d: parse_bytes("lots"), ValueError, "memory must be a size such as 2GB"),
    (
        "finder candidates",
        lambda d: find_batch_size(model(), X, Y, candidates=[64], progress=False),
        ValueError,
        "no candidate batch size fits the 40 samples",
    ),
    (
        "advise optimizer",
        lambda d: advise(model(), X, Y, optimizer="nope", measure=False),
        ValueError,
        "optimizer must be one of",
    ),
    (
        "budget two axes",
        lambda d: Budget(epochs=1, seconds=1.0),
        ValueError,
        "exactly one of epochs, samples, seconds",
    ),
    (
        "compare lr rule",
        lambda d: compare("softmax", "digits", lr_rule="magic"),
        ValueError,
        "lr_rule must be one of",
    ),
    (
        "compare a file",
        lambda d: compare("softmax", f("ok.npz")(d)),
        ValueError,
        "compare needs a held-out split",
    ),
    # files
    ("missing file", lambda d: load_arrays(d / "nope.npz"), FileNotFoundError, "no such data file"),
    (
        "a folder",
        lambda d: load_arrays(d / "dir.npz"),
        FileNotFoundError,
        "is a folder without minigd-shards.json; pass a data file, or a shard folder",
    ),
    (
        "unknown suffix",
        lambda d: load_arrays(d / "x.txt"),
        ValueError,
        "minigd reads a .npy/.npz/.csv/.parquet/.h5/.hdf5 file or a shard folder",
    ),
    (
        "npz without X",
        lambda d: load_arrays(d / "noX.npz"),
        KeyError,
        "must hold an array named 'X'",
    ),
    ("pickle", lambda d: load_arrays(d / "pickle.npy"), ValueError, "never loads pickles"),
    (
        "random bytes npz",
        lambda d: load_arrays(d / "random.npz"),
        ValueError,
        "neither a .npy array nor an .npz archive",
    ),
    (
        "random bytes npy",
        lambda d: load_arrays(d / "random.npy"),
        ValueError,
        "unreadable array header",
    ),
    (
        "npy declares 10**13",
        lambda d: load_arrays(d / "hostile.npy"),
        ValueError,
        "declares an array of shape (10000000000000,)",
    ),
    (
        "npz declares 10**13",
        lambda d: load_arrays(d / "hostile.npz"),
        ValueError,
        "member X.npy declares an array",
    ),
    (
        "npz truncated",
        lambda d: load_arrays(d / "truncated.npz"),
        ValueError,
        "truncated or corrupt",
    ),
    (
        "csv ragged",
        lambda d: load_arrays(d / "ragged.csv"),
        ValueError,
        "line 3 has 2 fields; expected 3",
    ),
    ("csv empty", lambda d: load_arrays(d / "empty.csv"), ValueError, "is empty"),
    (
        "csv header only",
        lambda d: load_arrays(d / "header.csv"),
        ValueError,
        "has a header but no samples",
    ),
    (
        "csv text feature",
        lambda d: load_arrays(d / "text.csv"),
        ValueError,
        "column 'b' holds text",
    ),
    ("csv latin-1", lambda d: load_arrays(d / "latin1.csv"), ValueError, "not UTF-8"),
    (
        "csv target name",
        lambda d: load_arrays(d / "text.csv", target="z"),
        KeyError,
        "target must be a column name",
    ),
    (
        "csv target index",
        lambda d: load_arrays(d / "text.csv", target=7),
        IndexError,
        "target must be a column index",
    ),
    (
        "parquet garbage",
        lambda d: load_arrays(d / "garbage.parquet"),
        ValueError,
        "not a readable Parquet file",
    ),
    ("idx corrupt", lambda d: read_idx(d / "bad.idx"), ValueError, ""),
    ("dataset name", lambda d: datasets.load("cifar"), KeyError, "unknown dataset 'cifar'"),
    ("neither name nor file", lambda d: load("cifar"), FileNotFoundError, "neither a dataset"),
    # saved models
    (
        "model random bytes",
        lambda d: load_model(d / "random.npz"),
        ValueError,
        "neither a .npy array",
    ),
    (
        "model without architecture",
        lambda d: load_model(saved_model(d, drop=["architecture"])),
        ValueError,
        "holds no model architecture",
    ),
    (
        "model architecture not JSON",
        lambda d: load_model(saved_model(d, "{layers")),
        ValueError,
        "the architecture is not valid JSON",
    ),
    (
        "model architecture a list",
        lambda d: load_model(saved_model(d, [1, 2])),
        ValueError,
        "top level must be a JSON object",
    ),
    (
        "model no layers",
        lambda d: load_model(saved_model(d, architecture(layers=[]))),
        ValueError,
        "'layers' must be a non-empty list",
    ),
    (
        "model layer type",
        lambda d: load_model(saved_model(d, architecture(layers=[{"type": "Conv2d"}]))),
        ValueError,
        "layers[0]: 'Conv2d' is not a registered layer",
    ),
    (
        "model layer field",
        lambda d: load_model(saved_model(d, architecture(layers=[{"type": "ReLU", "inplace": 1}]))),
        ValueError,
        "unknown fields ['inplace']",
    ),
    (
        "model layer value",
        lambda d: load_model(
            saved_model(
                d, architecture(layers=[{"type": "Dense", "in_features": -4, "out_features": 3}])
            )
        ),
        ValueError,
        "layers[0] (Dense): in_features must be",
    ),
    (
        "model dtype",
        lambda d: load_model(saved_model(d, architecture(dtype="int8"))),
        ValueError,
        "'dtype' must be 'float32' or 'float64'",
    ),
    (
        "model loss",
        lambda d: load_model(saved_model(d, architecture(loss="hinge"))),
        ValueError,
        "'loss' must be one of",
    ),
    (
        "model seed",
        lambda d: load_model(saved_model(d, architecture(seed="x"))),
        ValueError,
        "'seed' must be an integer",
    ),
    (
        "model big Dense",
        lambda d: load_model(
            saved_model(
                d,
                architecture(
                    layers=[{"type": "Dense", "in_features": 100000, "out_features": 100000}]
                ),
            )
        ),
        ValueError,
        "needs 0.weight of shape (100000, 100000)",
    ),
    (
        "model weight shape",
        lambda d: load_model(saved_model(d, **{"0.weight": np.zeros((2, 2), np.float32)})),
        ValueError,
        "but the file stores shape (2, 2)",
    ),
    # checkpoints and run folders
    (
        "checkpoint missing",
        lambda d: load_checkpoint(d / "nope"),
        FileNotFoundError,
        "no checkpoint at",
    ),
    (
        "checkpoint empty folder",
        lambda d: load_checkpoint(d / "config-list"),
        FileNotFoundError,
        "no checkpoint-*.npz in",
    ),
    (
        "checkpoint random",
        lambda d: load_checkpoint(d / "random.npz"),
        ValueError,
        "neither a .npy array",
    ),
    (
        "checkpoint no meta",
        lambda d: load_checkpoint(d / "ckpt-nometa.npz"),
        ValueError,
        "not a minigd checkpoint",
    ),
    (
        "checkpoint meta not JSON",
        lambda d: load_checkpoint(d / "ckpt-badmeta.npz"),
        ValueError,
        "unreadable metadata",
    ),
    (
        "checkpoint old format",
        lambda d: load_checkpoint(d / "ckpt-format2.npz"),
        ValueError,
        "written by another version of minigd",
    ),
    (
        "checkpoint no fields",
        lambda d: load_checkpoint(d / "ckpt-nofields.npz"),
        ValueError,
        "lacks the checkpoint fields",
    ),
    (
        "checkpoint odd entry",
        lambda d: load_checkpoint(d / "ckpt-entry.npz"),
        ValueError,
        "unexpected entry 'weird/x'",
    ),
    (
        "config not JSON",
        lambda d: read_config(d / "config-badjson"),
        ValueError,
        "is not valid JSON",
    ),
    (
        "config a list",
        lambda d: read_config(d / "config-list"),
        ValueError,
        "must hold a JSON object",
    ),
    (
        "config unknown key",
        lambda d: read_config(d / "config-unknown"),
        ValueError,
        "unknown settings ['colour']",
    ),
    (
        "config epochs 0",
        lambda d: read_config(d / "config-epochs"),
        ValueError,
        "epochs must be an integer >= 1",
    ),
    (
        "config missing",
        lambda d: read_config(d / "nope"),
        FileNotFoundError,
        "config.json not found",
    ),
    (
        "run split on a dataset",
        lambda d: RunConfig(data="digits", validation_split=0.2).check(),
        ValueError,
        "brings its own test split",
    ),
    (
        "run --y with npz",
        lambda d: RunConfig(data=f("ok.npz")(d), y_path="y.npy").check(),
        ValueError,
        "--y gives the targets of a .npy X",
    ),
    ("run folder ''", lambda d: RunFolder(""), ValueError, "a non-empty path"),
    (
        "run exists",
        lambda d: train_run(RunConfig(data=f("ok.npz")(d), model="softmax"), d / "run", verbose=0),
        ValueError,
        "already holds a run",
    ),
    (
        "run resume and overwrite",
        lambda d: train_run(RunConfig(), d / "run", resume=True, overwrite=True),
        ValueError,
        "pick one",
    ),
    ("IDX file missing", lambda d: read_idx(d / "nope.idx"), FileNotFoundError, "no such IDX"),
    (
        "a value beyond float32",
        lambda d: fit(mlp(4, [5], 3), overflowing(), Y, batch_size=8, epochs=1, verbose=0),
        ValueError,
        "sample 5 holds 1e+39, beyond float32's range",
    ),
    # scikit-learn estimators: what their parameter constraints let through
    ("sklearn batch_size=True", lambda d: classifier(batch_size=True), ValueError, "Got True"),
    (
        "sklearn fractional width",
        lambda d: classifier(hidden_layer_sizes=(8.5,)),
        ValueError,
        "must hold whole numbers >= 1. Got (8.5,)",
    ),
    (
        "sklearn warm start, new widths",
        lambda d: classifier(warm_start=True).set_params(hidden_layer_sizes=(8,)).fit(X, Y),
        ValueError,
        "warm_start continues the model fitted before",
    ),
    (
        "sklearn partial_fit, other classes",
        lambda d: classifier(partial=True).partial_fit(X, Y, classes=[0, 1, 2, 3]),
        ValueError,
        "classes=[0, 1, 2, 3] differs from the classes [0, 1, 2]",
    ),
    (
        "model file with NaN parameters",
        lambda d: load_model(saved_model(d, **{"0.weight": np.full((5, 4), np.nan, "f4")})),
        ValueError,
        "parameters hold NaN or inf",
    ),
]


def overflowing():
    """X with one value, in sample 5, that float64 holds and float32 cannot."""
    wide = X.astype(np.float64)
    wide[5, 2] = 1e39
    return wide


def classifier(partial=False, **params):
    """A fitted MiniBatchClassifier (by fit, or by a first partial_fit)."""
    from minigd.sklearn import MiniBatchClassifier

    estimator = MiniBatchClassifier(**({"hidden_layer_sizes": (4,), "epochs": 1} | params))
    if partial:
        return estimator.partial_fit(X, Y, classes=[0, 1, 2])
    return estimator.fit(X, Y)


@pytest.mark.parametrize(("name", "call", "error", "fragment"), API, ids=[c[0] for c in API])
def test_api_refuses_with_a_sentence(files, name, call, error, fragment):
    with pytest.raises(error) as info:
        call(files)
    text = str(info.value.args[0]) if info.value.args else str(info.value)
    assert fragment in text, text
    assert len(text) < 600, "a sentence, not a dump"


# (name, argv taking the files folder, exit code, fragment of what stderr says)
CLI = [
    ("no command", lambda d: [], 2, "usage: minigd"),
    ("info unknown", lambda d: ["info", "cifar"], 2, "neither a dataset"),
    ("info folder", lambda d: ["info", str(d / "dir.npz")], 2, "is a folder"),
    ("info hostile npz", lambda d: ["info", str(d / "hostile.npz")], 2, "declares an array"),
    ("info random bytes", lambda d: ["info", str(d / "random.npz")], 2, "neither a .npy array"),
    ("info ragged csv", lambda d: ["info", str(d / "ragged.csv")], 2, "line 3 has 2 fields"),
    ("info latin-1 csv", lambda d: ["info", str(d / "latin1.csv")], 2, "latin1.csv is not UTF-8"),
    ("info parquet", lambda d: ["info", str(d / "garbage.parquet")], 2, "not a readable Parquet"),
    (
        "noise scale after a diverged training",
        lambda d: [
            "noise-scale",
            "--data",
            str(d / "ok.npz"),
            "--model",
            "softmax",
            "--epochs",
            "1",
            "--train-batch-size",
            "8",
            "--lr",
            "1e10",
            "--b-small",
            "4",
            "--b-big",
            "16",
            "--quiet",
        ],
        2,
        "the training before the measurement diverged",
    ),
    (
        "convert ragged csv",
        lambda d: ["convert", str(d / "ragged.csv"), str(d / "out-c"), "--quiet"],
        2,
        "ragged.csv is not a readable CSV file",
    ),
    (
        "convert shard size",
        lambda d: ["convert", str(d / "ok.npz"), str(d / "out-z"), "--shard-size", "abc"],
        2,
        "--shard-size takes a size such as 128MB",
    ),
    (
        "train out is a file",
        lambda d: ["train", "--data", str(d / "ok.npz"), "--out", str(d / "a-file")],
        2,
        "a-file is a file; --out names the folder",
    ),
    (
        "train npy without y",
        lambda d: ["train", "--data", str(d / "X.npy"), "--out", str(d / "out-x")],
        2,
        "X.npy holds the features only; give the targets with --y",
    ),
    (
        "evaluate without targets",
        lambda d: [
            "evaluate",
            "--model-file",
            str(d / "run" / "model.npz"),
            "--data",
            str(d / "X.npy"),
        ],
        2,
        "X.npy holds no targets",
    ),
    (
        "convert truncated npz",
        lambda d: ["convert", str(d / "truncated.npz"), str(d / "out-t"), "--quiet"],
        2,
        "truncated.npz is not a readable .npz archive",
    ),
    (
        "convert random npz",
        lambda d: ["convert", str(d / "random.npz"), str(d / "out-r"), "--quiet"],
        2,
        "random.npz is not a readable .npz archive",
    ),
    (
        "convert more labels than rows",
        lambda d: ["convert", str(d / "long-y.npz"), str(d / "out-l"), "--quiet"],
        2,
        "X holds 40 rows but y holds 43",
    ),
    (
        "convert fewer labels than rows",
        lambda d: ["convert", str(d / "short-y.npz"), str(d / "out-s"), "--quiet"],
        2,
        "X holds 40 rows but y holds 37",
    ),
    ("train epochs 0", lambda d: ["train", "--epochs", "0"], 2, "expected a whole number >= 1"),
    (
        "train batch abc",
        lambda d: ["train", "--batch-size", "abc"],
        2,
        "a batch size must be a whole number",
    ),
    (
        "train checkpoint-every 0",
        lambda d: ["train", "--checkpoint-every", "0"],
        2,
        "expected a number of steps",
    ),
    ("train dtype", lambda d: ["train", "--dtype", "float16"], 2, "invalid choice"),
    ("train sample axis 2", lambda d: ["train", "--sample-axis", "2"], 2, "invalid choice"),
    (
        "train dropoutx",
        lambda d: ["train", "--model", "mlp:128+dropoutx", "--out", str(d / "o1")],
        2,
        "+dropout takes a probability",
    ),
    (
        "train softmax:5",
        lambda d: ["train", "--model", "softmax:5", "--out", str(d / "o2")],
        2,
        "takes no options",
    ),
    (
        "train bn twice",
        lambda d: ["train", "--model", "mlp:8+bn+bn", "--out", str(d / "o3")],
        2,
        "given twice",
    ),
    (
        "train split on a dataset",
        lambda d: [
            "train",
            "--data",
            "digits",
            "--validation-split",
            "0.2",
            "--out",
            str(d / "o4"),
        ],
        2,
        "brings its own test split",
    ),
    (
        "train --y with npz",
        lambda d: [
            "train",
            "--data",
            str(d / "ok.npz"),
            "--y",
            str(d / "labels.npy"),
            "--out",
            str(d / "o5"),
        ],
        2,
        "--y gives the targets",
    ),
    ("train --out ''", lambda d: ["train", "--out", ""], 2, "--out must name a folder"),
    (
        "train optimizer",
        lambda d: ["train", "--optimizer", "adamx", "--out", str(d / "o6")],
        2,
        "invalid choice: 'adamx' (choose from 'sgd'",
    ),
    (
        "train lr negative",
        lambda d: ["train", "--lr", "-1", "--out", str(d / "o7")],
        2,
        "lr must be a finite number > 0",
    ),
    (
        "train batch 0",
        lambda d: [
            "train",
            "--data",
            str(d / "ok.npz"),
            "--model",
            "softmax",
            "--batch-size",
            "0",
            "--out",
            str(d / "o8"),
        ],
        2,
        "batch_size must be an integer >= 1",
    ),
    (
        "train NaN data",
        lambda d: [
            "train",
            "--data",
            str(d / "nan.npy"),
            "--y",
            str(d / "labels.npy"),
            "--model",
            "softmax",
            "--out",
            str(d / "o9"),
        ],
        2,
        "sample 3",
    ),
    (
        "train out under a file",
        lambda d: [
            "train",
            "--data",
            str(d / "ok.npz"),
            "--model",
            "softmax",
            "--batch-size",
            "8",
            "--out",
            str(d / "a-file" / "run"),
        ],
        2,
        "is a file, not a folder",
    ),
    (
        "train existing run",
        lambda d: [
            "train",
            "--data",
            str(d / "ok.npz"),
            "--model",
            "softmax",
            "--out",
            str(d / "run"),
        ],
        2,
        "already holds a run",
    ),
    (
        "train resume missing",
        lambda d: ["train", "--resume", str(d / "nope")],
        2,
        "config.json not found",
    ),
    (
        "train resume and overwrite",
        lambda d: ["train", "--resume", str(d / "run"), "--overwrite"],
        2,
        "pick one",
    ),
    (
        "train resume fewer epochs",
        lambda d: ["train", "--resume", str(d / "run"), "--epochs", "1"],
        2,
        "has trained 2 epochs already; --epochs 1",
    ),
    (
        "train resume edited callback state",
        lambda d: ["train", "--resume", str(d / "run-tampered"), "--epochs", "3"],
        2,
        "holds a state for 1:DivergenceGuard that it cannot take (ValueError: DivergenceGuard's "
        "saved state needs 'start' as number or none; found 'oops'.)",
    ),
    (
        "train resume bad config",
        lambda d: ["train", "--resume", str(d / "config-unknown")],
        2,
        "unknown settings",
    ),
    (
        "evaluate random model",
        lambda d: ["evaluate", "--model-file", str(d / "random.npz"), "--data", str(d / "ok.npz")],
        2,
        "neither a .npy array",
    ),
    (
        "evaluate missing model",
        lambda d: ["evaluate", "--model-file", str(d / "nope.npz"), "--data", str(d / "ok.npz")],
        2,
        "no such file",
    ),
    (
        "evaluate wrong width",
        lambda d: [
            "evaluate",
            "--model-file",
            str(d / "run" / "model.npz"),
            "--data",
            str(d / "text.csv"),
            "--target",
            "c",
        ],
        2,
        "holds text",
    ),
    (
        "compare batch sizes",
        lambda d: ["compare", "--batch-sizes", "abc"],
        2,
        "expected comma-separated batch sizes",
    ),
    ("compare reference", lambda d: ["compare", "--reference", "64:abc"], 2, "expected B0:LR0"),
    (
        "compare out under a file",
        lambda d: ["compare", "--data", "digits", "--out", str(d / "a-file" / "r")],
        2,
        "is a file, not a folder",
    ),
    (
        "sweep batch sizes",
        lambda d: ["sweep", "--batch-sizes", "16,abc"],
        2,
        "'abc' is not a batch size",
    ),
    ("sweep lrs", lambda d: ["sweep", "--lrs", "0.1,-1"], 2, "'-1' is not a learning rate > 0"),
    ("sweep seeds", lambda d: ["sweep", "--seeds", "x"], 2, "'x' is not a seed"),
    (
        "sweep targets",
        lambda d: ["sweep", "--target", "val_accuracy:0.8,high"],
        2,
        "target values are numbers",
    ),
    (
        "sweep extensions",
        lambda d: ["sweep", "--max-extensions", "-1"],
        2,
        "'-1' is not a count of learning rates >= 0",
    ),
    (
        "advise from a folder without a run",
        lambda d: ["advise", "--data", "digits", "--from", str(d / "config-list")],
        2,
        "holds neither history.json (a run folder) nor sweep.json",
    ),
    (
        "sweep split on a dataset",
        lambda d: [
            "sweep",
            "--data",
            "digits",
            "--validation-split",
            "0.2",
            "--out",
            str(d / "sw"),
        ],
        2,
        "brings its own test split",
    ),
    ("advise reference", lambda d: ["advise", "--reference", "64"], 2, "expected B0:LR0"),
    (
        "advise memory",
        lambda d: ["advise", "--data", str(d / "ok.npz"), "--model", "softmax", "--memory", "lots"],
        2,
        "memory must be a size",
    ),
    (
        "find-batch-size candidates",
        lambda d: ["find-batch-size", "--candidates", "0"],
        2,
        "'0' is not a batch size",
    ),
    (
        "noise-scale sizes",
        lambda d: [
            "noise-scale",
            "--data",
            str(d / "ok.npz"),
            "--model",
            "softmax",
            "--b-small",
            "16",
            "--b-big",
            "8",
        ],
        2,
        "b_small < b_big",
    ),
]


@pytest.mark.parametrize(("name", "argv", "code", "fragment"), CLI, ids=[c[0] for c in CLI])
def test_cli_refuses_with_a_sentence_and_no_traceback(files, capsys, name, argv, code, fragment):
    try:
        result = main(argv(files))
    except SystemExit as exc:  # argparse's own refusals
        result = exc.code
    err = capsys.readouterr().err
    assert result == code, err
    assert fragment in err, err
    assert "Traceback" not in err


def test_the_table_is_large():
    assert len(API) + len(CLI) >= 100
