"""The note's rules for choosing a batch size: one home for each number and each sentence.

The note this project grew from (``shared/seed``) gives rules of thumb; the advisor applies them in
order, the report checks them against what a run measured, and ``minigd info`` states the one that
applies to a data set. Each rule has its number, a short title, and the note's sentence it comes
from, so every reason the advisor gives can name its source. The constants below are the only
place the numbers live.

1. A small training set (m <= ~2000) takes batch gradient descent.
2. Otherwise a mini-batch: a power of two from 32 to 1024 that fits in memory.
3. Larger batches use parallel hardware better, until throughput levels off.
4. Past the gradient noise scale, larger batches waste samples (McCandlish et al. 2018).
5. With BatchNorm, very small batches estimate the batch statistics badly.
6. The learning rate follows the batch size: smaller batches, smaller rates.
"""

from __future__ import annotations

from dataclasses import dataclass

SMALL_SET = 2000  # rule 1: "where m <= ~2000"
POWERS = (32, 64, 128, 256, 512, 1024)  # rule 2: "32 -> 1024, on the powers of 2"
KNEE_WITHIN = 0.10  # rule 3: the smallest batch within 10% of the best samples/s
NOISE_SLACK = 2.0  # rule 4: "far above" the noise scale means more than this factor
BN_MIN_BATCH = 16  # rule 5: below this, batch mean and variance are poor estimates
NOISE_PROBE_BATCHES = (POWERS[0], POWERS[-1])  # rule 4's measurement: the smallest and largest
REFERENCE_BATCH = POWERS[0]  # rule 6: an optimizer's default lr is taken as tuned at this size
LR_RULE = 6  # the rule that scales the learning rate to the batch


@dataclass(frozen=True)
class Rule:
    """One of the note's rules: its number, a short title, and the sentence it comes from."""

    number: int
    title: str
    note: str


RULES: dict[int, Rule] = {
    r.number: r
    for r in (
        Rule(
            1,
            "small training set",
            "If you have a small training set, make use of batch gradient descent, "
            "where m <= ~2000.",
        ),
        Rule(
            2,
            "powers of two that fit",
            "Typical mini-batch sizes are 32 -> 1024, on the powers of 2; make sure your "
            "mini-batch fits in your CPU / GPU memory.",
        ),
        Rule(
            3,
            "hardware throughput",
            "GPUs and TPUs are optimized for parallel computation; larger batch sizes can "
            "better use these capabilities.",
        ),
        Rule(
            4,
            "gradient noise scale",
            "Smaller batch sizes make way for noisier gradient computations; past the noise "
            "scale a larger batch cuts the steps less than it adds samples.",
        ),
        Rule(
            5,
            "BatchNorm statistics",
            "If you're using BatchNorm, very small batches can lead to poor estimates of "
            "batch statistics.",
        ),
        Rule(
            6,
            "learning rate",
            "Smaller batches can be more effective with a smaller learning rate.",
        ),
    )
}


def is_small_set(m: int) -> bool:
    """Rule 1: is a training set of m samples small enough for batch gradient descent?"""
    return m <= SMALL_SET


def rule_for_m(m: int) -> str:
    """What the note says for a training set of m samples, in one line."""
    if is_small_set(m):
        return f"m = {m} <= ~{SMALL_SET}: batch gradient descent (batch size full), rule 1"
    return (
        f"m = {m} > ~{SMALL_SET}: mini-batches, a power of two from {POWERS[0]} to "
        f"{POWERS[-1]}, rule 2"
    )


def powers_up_to(m: int) -> list[int]:
    """Rule 2's candidate batch sizes for m samples."""
    return [b for b in POWERS if b <= m]


def bn_batch_too_small(b: int) -> bool:
    """Rule 5: would a batch of b samples give BatchNorm poor statistics?"""
    return b < BN_MIN_BATCH


@dataclass(frozen=True)
class NoiseProbe:
    """The two batch sizes and the number of batch pairs a noise-scale measurement uses."""

    b_small: int
    b_big: int
    n_batches: int


def noise_probe(m: int) -> NoiseProbe:
    """Rule 4's measurement on m samples: batches of 32 and 1024 where m allows, at least 2
    samples in the small one (BatchNorm needs 2) and at most half the data in the big one."""
    small, big = NOISE_PROBE_BATCHES
    return NoiseProbe(b_small=max(2, min(small, m // 8)), b_big=min(big, m // 2), n_batches=30)
