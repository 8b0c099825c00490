"""
Batch GD, mini-batch GD and SGD: the note's three regimes
=========================================================

The same softmax regression on scikit-learn's 8x8 digits (1437 training samples), from the same
initial weights, trained three ways for 20 epochs: one step per epoch on all the samples
(batch gradient descent), one per 32 samples (mini-batch) and one per sample (SGD).

Per step, the smaller the batch, the noisier the loss; per epoch, the smaller the batch, the more
steps, and the further the model gets.
"""

import matplotlib.pyplot as plt
import numpy as np

import minigd
from minigd.experiments import curve_noise
from minigd.nn import softmax_regression

train, test = minigd.datasets.load("digits")
runs = {"batch GD (B=1437)": "full", "mini-batch (B=32)": 32, "SGD (B=1)": 1}
rates = {"full": 0.5, 32: 0.1, 1: 0.01}
histories = {}
for name, batch_size in runs.items():
    model = softmax_regression(64, 10, seed=0)  # the same initial weights each time
    histories[name] = minigd.fit(
        model,
        train.X,
        train.y,
        batch_size=batch_size,
        epochs=20,
        lr=rates[batch_size],
        validation=(test.X, test.y),
        threads=1,
        verbose=0,
    )
    h = histories[name]
    print(
        f"{name:18s} steps {h.n_steps:6d}  curve noise {curve_noise(h.steps['loss']):.3f}  "
        f"val accuracy after 1 epoch {h.epochs[0]['val_accuracy']:.3f}, "
        f"after 20 {h.epochs[-1]['val_accuracy']:.3f}"
    )

# %%
# The loss per step (left) and the validation accuracy per epoch (right).
fig, (per_step, per_epoch) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for name, h in histories.items():
    steps = np.arange(1, h.n_steps + 1)
    per_step.plot(steps, h.steps["loss"], lw=0.5, alpha=0.8, label=name)
    epochs = [e["epoch"] + 1 for e in h.epochs]
    per_epoch.plot(epochs, [e["val_accuracy"] for e in h.epochs], marker="o", ms=3, label=name)
per_step.set(xscale="log", yscale="log", xlabel="step", ylabel="training loss per step")
per_epoch.set(xlabel="epoch", ylabel="validation accuracy")
per_epoch.legend()
plt.show()
