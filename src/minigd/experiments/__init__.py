"""Batch GD vs mini-batch GD vs SGD side by side, batch-size sweeps, plots and reports."""

from minigd.experiments.compare import Budget, Results, RunSpec, compare, format_number
from minigd.experiments.metrics import Target, TargetTracker, curve_noise
from minigd.experiments.report import write_report
from minigd.experiments.sweep import SweepResult, sweep

__all__ = [
    "Budget",
    "Results",
    "RunSpec",
    "SweepResult",
    "Target",
    "TargetTracker",
    "compare",
    "curve_noise",
    "format_number",
    "sweep",
    "write_report",
]
