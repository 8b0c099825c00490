r"""
The gradient noise scale as it trains
=====================================

The simple noise scale :math:`B_\text{simple} = \operatorname{tr}\Sigma / |G|^2`
(McCandlish et al. 2018) compares the variance of one sample's gradient with the squared length
of the true gradient: batches much smaller than it are mostly noise, batches much larger repeat
what a smaller one already knew.
``fit(..., noise_every=k)`` measures it every k-th step from the step's own batch (its two halves
are the small batches), so it costs a fraction of a step and follows the run. It grows as the
loss falls: the best batch size grows with it.
"""

import matplotlib.pyplot as plt
import numpy as np

import minigd
from minigd.nn import mlp
from minigd.noise import noise_scale

train, test = minigd.datasets.load("digits")
model = mlp(64, [64], 10, seed=0)
before = noise_scale(model, train.X, train.y, seed=0)
history = minigd.fit(
    model,
    train.X,
    train.y,
    batch_size=64,
    epochs=30,
    lr=0.1,
    noise_every=4,
    validation=(test.X, test.y),
    threads=1,
    verbose=0,
)
after = noise_scale(model, train.X, train.y, seed=0)
print(
    f"B_simple at the initial weights {before.b_simple:.0f}, after 30 epochs {after.b_simple:.0f}"
)
print(f"validation accuracy {history.epochs[-1]['val_accuracy']:.3f}")

# %%
# The running B_simple from the training steps, with the probe's value before and after.
running = np.array(history.steps["b_simple"], dtype=float)
steps = np.arange(1, len(running) + 1)
fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
ax.plot(steps, running, label="running B_simple (every 4th step)")
ax.scatter(
    [1, len(running)],
    [before.b_simple, after.b_simple],
    color="C3",
    zorder=3,
    label="probe at the weights",
)
ax.axhline(64, ls="--", color="grey", label="the batch size (64)")
ax.set(xlabel="step", ylabel="B_simple", yscale="log")
ax.legend()
plt.show()
