"""
A batch size chosen while training: goodput
===========================================

``batch_size="adaptive"`` picks, every 20 steps, the batch size with the most *goodput*
(Pollux, OSDI 2021): throughput, from a line fitted to the run's own step times, times
statistical efficiency, (B_noise + 32) / (B_noise + B) from the running noise scale. Early on
the noise scale is small and the batch stays small; as the loss falls the noise scale grows and
the batch follows, with the learning rate scaled by AdaScale's gain. Every move is recorded with
its reason.
"""

import matplotlib.pyplot as plt
import numpy as np

import minigd
from minigd.nn import mlp

train, test = minigd.datasets.load("mnist-5k")
model = mlp(784, [128], 10, seed=0)
history = minigd.fit(
    model,
    train.X,
    train.y,
    batch_size="adaptive",
    epochs=6,
    lr=0.1,
    validation=(test.X, test.y),
    threads=1,
    verbose=0,
)
for change in history.meta["batch_schedule"]:
    print(
        f"step {change['step']:5d}: {change['from']:4d} -> {change['batch_size']:4d}  "
        f"lr {change['lr']:.3f}  ({change['reason']})"
    )
print(f"validation accuracy {history.epochs[-1]['val_accuracy']:.3f}")

# %%
# The batch size and the learning rate over the samples seen, with the loss per step. The rate
# moves with the batch, by AdaScale's gain at the new size over that at the old, and is held
# between moves. The dips at each epoch's end are its short last batch (the rows left over),
# which trains at its own gain: a rate for the full batch on a few rows would kick the model.
seen = np.array(history.steps["samples_seen"])
fig, (batch, lr, loss) = plt.subplots(3, 1, figsize=(8, 7), sharex=True, layout="constrained")
batch.step(seen, history.steps["batch_size"], where="post")
batch.set(ylabel="batch size", yscale="log")
lr.step(seen, history.steps["lr"], where="post", color="C1")
lr.set(ylabel="learning rate")
loss.plot(seen, history.steps["loss"], lw=0.5, alpha=0.5)
loss.plot(seen, history.smoothed(), lw=1.5)
loss.set(xlabel="samples seen", ylabel="training loss", yscale="log")
plt.show()

# %%
# The learning rate given is the one for a batch of 32. AdaScale moves it with the batch; it
# does not tune it, and a rate that is too small at 32 stays too small at every size (on
# mnist-5k, 0.1 where 0.3 suits 32 took 2.5-5.0x the time to 93% of the best fixed batch and
# rate; given 0.3, 0.8-1.4x: ``benchmarks/bench_goodput.py``). So find the rate for 32 first: one
# epoch at a few rates, keeping the lowest validation loss (from the command line, ``minigd
# sweep --batch-sizes 32 --lrs 0.03,0.1,0.3,1`` races each rate to a target instead), then
# train adaptive from it.
val_loss = {}
for rate in (0.03, 0.1, 0.3, 1.0):
    trial = minigd.fit(
        mlp(784, [128], 10, seed=0),
        train.X,
        train.y,
        batch_size=32,
        epochs=1,
        lr=rate,
        validation=(test.X, test.y),
        threads=1,
        verbose=0,
    )
    val_loss[rate] = trial.epochs[-1]["val_loss"]
    print(f"lr {rate:4g} at 32, one epoch: validation loss {val_loss[rate]:.3f}")
rate = min(val_loss, key=val_loss.get)
tuned = minigd.fit(
    mlp(784, [128], 10, seed=0),
    train.X,
    train.y,
    batch_size="adaptive",
    epochs=6,
    lr=rate,
    validation=(test.X, test.y),
    threads=1,
    verbose=0,
)
for name, run in ((f"lr {rate:g}", tuned), ("lr 0.1", history)):
    accuracy = ", ".join(f"{epoch['val_accuracy']:.3f}" for epoch in run.epochs)
    print(f"{name} for 32: validation accuracy by epoch {accuracy}")
