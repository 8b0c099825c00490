"""
Data larger than memory: training from a file on disk
=====================================================

``minigd.data.open_source`` reads a ``.npy`` file (or a shard folder, Parquet, HDF5) a batch at a
time with positioned reads, so memory holds the model, a shuffle buffer and a few batches,
whatever the size of the file. The order is a pure function of (seed, epoch): with the same
shuffle, a run from the file takes exactly the steps a run from memory takes. The block shuffle
(the default when streaming a large file) reads ~1 MiB blocks of consecutive rows in a shuffled
order and shuffles the rows of a 64 MiB buffer of them: far fewer reads, a slightly less mixed
order. A file that fits one buffer, as this one does, is shuffled exactly as its rows would be.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minigd
from minigd.nn import softmax_regression

train, test = minigd.datasets.load("mnist-5k")  # 4000 x 784 float32: 12 MB, 12 blocks
folder = Path(tempfile.mkdtemp())
np.save(folder / "X.npy", train.X)
np.save(folder / "y.npy", train.y)

on_disk = minigd.data.open_source(folder / "X.npy", y=folder / "y.npy")
runs = {
    "in memory, rows shuffled": (train.X, train.y, "rows"),
    "from disk, rows shuffled": (on_disk, None, "rows"),
    "from disk, blocks shuffled": (on_disk, None, "blocks"),  # one buffer: the same order
}
histories = {}
for name, (X, y, shuffle) in runs.items():
    model = softmax_regression(784, 10, seed=0)
    args = (X,) if y is None else (X, y)
    histories[name] = minigd.fit(
        model,
        *args,
        batch_size=64,
        epochs=3,
        lr=0.1,
        shuffle=shuffle,
        threads=1,
        verbose=0,
    )
    print(f"{name:28s} final loss {histories[name].epochs[-1]['loss']:.4f}")
same = (
    histories["in memory, rows shuffled"].steps["loss"]
    == histories["from disk, rows shuffled"].steps["loss"]
)
print("memory and disk took the same steps:", same)

# %%
# The loss per step of the three runs, which coincide.
fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
for (name, h), style in zip(histories.items(), ("-", ":", "-"), strict=True):
    ax.plot(h.steps["loss"], style, lw=0.8, label=name)
ax.set(xlabel="step", ylabel="training loss", yscale="log")
ax.legend()
plt.show()
