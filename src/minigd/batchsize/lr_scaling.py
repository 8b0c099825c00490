"""Learning-rate scaling rules: what lr to use when the batch size changes from B0 to B.

1. Linear (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): lr = lr0 * B / B0 for SGD and SGD
   with momentum. A step on B samples then moves as far as B/B0 steps on B0 samples would, while
   the gradient noise stays below the signal. Going up by a large factor needs a gradual warmup
   (they ramp linearly over the first 5 epochs), because early training cannot take the full rate.
2. Square root (Krizhevsky 2014; Hoffer et al. 2017; and the usual practice for adaptive methods):
   lr = lr0 * sqrt(B / B0) for Adam, AdamW and RMSprop, whose per-parameter normalization already
   absorbs part of the change in gradient scale; the gradient's standard deviation falls as
   1/sqrt(B).
3. Noise (McCandlish et al. 2018, eq. 2.6): lr(B) = lr_max / (1 + B_noise / B), calibrated so that
   lr(B0) = lr0. Linear while B << B_noise, it saturates at lr_max for B >> B_noise: the one rule
   that spans SGD (B = 1) to full batch (B = m) without sending the large batches to a learning
   rate that diverges. Needs a measured noise scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from minigd._validation import check_choice, check_float, check_int
from minigd.optim import Optimizer, get_optimizer

RULES = ("noise", "sqrt", "linear", "auto")


@dataclass(frozen=True)
class ScaledLR:
    """A learning rate scaled to a batch size, the rule that gave it, the sentence that says how,
    and the epochs of linear warmup the rule asks for (0 for none)."""

    lr: float
    rule: str
    explanation: str
    warmup_epochs: int = 0


def rule_for(optimizer: str | Optimizer) -> str:
    """ "sqrt" for adaptive optimizers (``Optimizer.adaptive``: Adam, AdamW, RMSprop), "linear"
    for SGD and momentum. ``optimizer`` is an Optimizer or a name ``get_optimizer`` knows."""
    if isinstance(optimizer, str):
        optimizer = get_optimizer(optimizer)
    return "sqrt" if optimizer.adaptive else "linear"


def scale_lr(
    lr0: float,
    b0: int,
    b: int,
    *,
    rule: str = "auto",
    optimizer=None,
    noise_scale: float | None = None,
) -> ScaledLR:
    """Scales a learning rate tuned at batch size ``b0`` to batch size ``b``.

    ``rule="noise"`` needs ``noise_scale`` (B_simple from ``minigd.batchsize.noise_scale``).
    """
    lr0 = check_float("lr0", lr0, minimum=0.0, inclusive=False)
    b0 = check_int("b0", b0, minimum=1)
    b = check_int("b", b, minimum=1)
    check_choice("rule", rule, RULES)
    if rule == "auto":
        rule = rule_for(optimizer if optimizer is not None else "sgd")
    ratio = b / b0
    if rule == "noise":
        if noise_scale is None or not noise_scale > 0:
            raise ValueError(
                "the noise rule needs a positive noise_scale (B_simple); measure it "
                "with minigd.batchsize.noise_scale."
            )
        lr_max = lr0 * (1.0 + noise_scale / b0)
        lr = lr_max / (1.0 + noise_scale / b)
        return ScaledLR(
            lr,
            rule,
            f"noise-scale rule (McCandlish et al. 2018): lr = {lr_max:.4g}"
            f" / (1 + {noise_scale:.0f}/{b}) = {lr:.4g}",
        )
    if rule == "linear":
        lr = lr0 * ratio
        warmup = 5 if ratio >= 4 else 0
        text = f"linear scaling (Goyal et al. 2017): lr = {lr0:g} x {b}/{b0} = {lr:.4g}"
        if warmup:
            text += f"; warm up linearly over the first {warmup} epochs, as they do"
    else:
        lr = lr0 * math.sqrt(ratio)
        warmup = 0
        text = (
            f"square-root scaling for adaptive optimizers: lr = {lr0:g} x sqrt({b}/{b0}) = {lr:.4g}"
        )
    return ScaledLR(lr, rule, text, warmup)
