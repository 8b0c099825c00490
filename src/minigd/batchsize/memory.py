"""How much memory a train step takes at batch size B, and how much the machine has.

The estimate mirrors what minigd's engine actually allocates (every layer keeps its buffers per
batch size, so a train step's memory is a sum of known array sizes, and each layer and loss reports
its own through ``batch_bytes``):

- input batch: the gathered rows of X and y;
- activations: what each layer keeps for its backward pass (outputs, masks, normalized inputs);
- activation gradients: the dL/dx buffers of every layer but the first;
- loss: probabilities or residuals, and a few per-sample vectors;
- input pipeline, for data streamed from disk: the shuffle buffer and the prefetched batches
  (the data set itself is never held whole, so it does not count);
- parameters, their gradients, and the optimizer's state arrays plus one scratch array.

The first four grow with B; the last do not. ``tests/test_batchsize.py`` checks the total against
the peak that tracemalloc measures during a real step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minigd._validation import check_float, check_int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one train step at ``batch_size``, by part."""

    batch_size: int
    input_batch: int
    activations: int
    activation_grads: int
    loss: int
    parameters: int
    gradients: int
    optimizer_state: int
    input_pipeline: int = 0  # data streamed from disk: shuffle buffer and prefetched batches

    @property
    def per_batch(self) -> int:
        """The part that grows with the batch size (and the streaming pipeline's buffers)."""
        return (
            self.input_batch
            + self.activations
            + self.activation_grads
            + self.loss
            + self.input_pipeline
        )

    @property
    def fixed(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state

    @property
    def total(self) -> int:
        return self.per_batch + self.fixed

    def breakdown(self) -> dict[str, int]:
        return {
            "input batch": self.input_batch,
            "activations": self.activations,
            "activation gradients": self.activation_grads,
            "loss": self.loss,
            "input pipeline": self.input_pipeline,
            "parameters": self.parameters,
            "gradients": self.gradients,
            "optimizer state": self.optimizer_state,
            "total": self.total,
        }


def optimizer_arrays(optimizer) -> int:
    """Arrays of the parameters' size an optimizer keeps: its state plus one scratch array."""
    if optimizer is None:
        return 1
    return len(optimizer.state_names) + 1


def estimate_memory(
    model,
    batch_size: int,
    *,
    optimizer=None,
    dtype=None,
    n_samples: int | None = None,
    pipeline_bytes: int = 0,
) -> MemoryEstimate:
    """Estimates the bytes a train step of ``model`` takes at ``batch_size``.

    Args:
        model: a Sequential.
        batch_size: B.
        optimizer: the Optimizer (its state arrays count); None counts a plain SGD step.
        dtype: float32 or float64; default the model's.
        n_samples: m, if known: a batch of all m samples is a view of the data, not a copy.
        pipeline_bytes: for data streamed from disk, the shuffle buffer and prefetched batches
            at this batch size (``MiniBatches.pipeline_bytes``); the data set itself is never
            held, so it does not count.
    """
    n = check_int("batch_size", batch_size, minimum=1)
    size = np.dtype(dtype or model.dtype).itemsize
    acts = grads = 0
    width = model.n_inputs
    for i, layer in enumerate(model.layers):  # each layer knows the buffers it allocates
        kept, dx = layer.batch_bytes(n, width, size, first=i == 0)
        acts, grads = acts + kept, grads + dx
        width = layer.output_width(width)
    loss, target = model.loss.batch_bytes(n, model.n_outputs, size)
    params = model.n_params * size
    return MemoryEstimate(
        batch_size=n,
        input_batch=0 if n == n_samples else n * model.n_inputs * size + target,
        activations=acts,
        activation_grads=grads,
        loss=loss,
        parameters=params,
        gradients=params,
        optimizer_state=optimizer_arrays(optimizer) * params,
        input_pipeline=int(pipeline_bytes),
    )


# -- what the machine has -------------------------------------------------------------------
_DEVICE_MEMORY: dict[str, Callable[[], int]] = {}


def register_device_memory(device: str, free_bytes: Callable[[], int]) -> None:
    """Lets a backend (a GPU one, say) report its free memory under a device name."""
    _DEVICE_MEMORY[device] = free_bytes


def available_memory(device: str = "cpu") -> int:
    """Free memory in bytes: RAM for "cpu" (psutil if present, else /proc/meminfo), or what a
    registered backend reports for another device."""
    if device != "cpu":
        if device not in _DEVICE_MEMORY:
            raise ValueError(
                f"no memory provider is registered for device {device!r}; known: "
                f"cpu{''.join(', ' + d for d in _DEVICE_MEMORY)}."
            )
        return int(_DEVICE_MEMORY[device]())
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
    return int(pages * os.sysconf("SC_PAGE_SIZE")) if pages else 1 << 30


def memory_budget(fraction: float = 0.5, device: str = "cpu") -> int:
    """A share of the free memory, leaving room for the data, the OS and everything else."""
    fraction = check_float("fraction", fraction, minimum=0.0, maximum=1.0, inclusive=False)
    return int(fraction * available_memory(device))


def parse_bytes(text: str | int) -> int:
    """ "2GB", "512MiB", "1.5G", or a plain number of bytes."""
    if isinstance(text, (int, np.integer)):
        return int(text)
    units = {
        "": 1,
        "b": 1,
        "k": 1 << 10,
        "kb": 10**3,
        "kib": 1 << 10,
        "m": 1 << 20,
        "mb": 10**6,
        "mib": 1 << 20,
        "g": 1 << 30,
        "gb": 10**9,
        "gib": 1 << 30,
        "t": 1 << 40,
        "tb": 10**12,
        "tib": 1 << 40,
    }
    raw = str(text).strip().lower().replace(" ", "")
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :]
    if unit not in units or not number:
        raise ValueError(f"memory must be a size such as 2GB, 512MiB or 1.5G; received {text!r}.")
    return int(float(number) * units[unit])


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
