"""
Throughput and memory per batch size: the finder
================================================

Bigger batches use the hardware better, up to a point. ``find_batch_size`` times real training
steps of a copy of the model at each candidate batch size (powers of two) and reports samples
per second, milliseconds per step and peak memory, and the *knee*: the smallest batch size that
gets most of the best throughput. Past it, a bigger batch buys little speed per sample and costs
progress per sample (see the noise-scale example).
"""

import matplotlib.pyplot as plt

import minigd
from minigd.batchsize import find_batch_size
from minigd.nn import mlp

train, _ = minigd.datasets.load("digits")
model = mlp(64, [128], 10, seed=0)
found = find_batch_size(model, train.X, train.y, progress=False)
print(found.table())

# %%
# Samples per second (left) and time per step (right); the dashed line marks the knee.
sizes = [r.batch_size for r in found.rows]
fig, (rate, step) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
rate.plot(sizes, [r.samples_per_second for r in found.rows], marker="o")
step.plot(sizes, [r.ms_per_step for r in found.rows], marker="o", color="C1")
for ax in (rate, step):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    if found.knee is not None:
        ax.axvline(found.knee, ls="--", color="grey")
rate.set_ylabel("samples per second")
step.set_ylabel("ms per step")
plt.show()
