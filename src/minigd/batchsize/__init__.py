"""Which batch size, and why: memory model, advisor, throughput finder, noise scale, lr scaling."""

from minigd.batchsize.advisor import Advice, Reason, advise
from minigd.batchsize.evidence import Evidence, read_evidence
from minigd.batchsize.finder import FinderResult, find_batch_size, knee_of
from minigd.batchsize.lr_scaling import ScaledLR, scale_lr
from minigd.batchsize.memory import (
    MemoryEstimate,
    available_memory,
    estimate_memory,
    memory_budget,
    parse_bytes,
    register_device_memory,
)
from minigd.noise import NoiseScale, noise_scale

__all__ = [
    "Advice",
    "Evidence",
    "FinderResult",
    "MemoryEstimate",
    "NoiseScale",
    "Reason",
    "ScaledLR",
    "advise",
    "available_memory",
    "estimate_memory",
    "find_batch_size",
    "knee_of",
    "memory_budget",
    "noise_scale",
    "parse_bytes",
    "read_evidence",
    "register_device_memory",
    "scale_lr",
]
