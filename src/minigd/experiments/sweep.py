"""Batch-size sweeps: for each batch size, the best learning rate and the steps it needs to reach a
target.

Shallue et al. 2019 ("Measuring the Effects of Data Parallelism on Neural Network Training") found
the same three regimes on every workload: steps to target first halve as the batch doubles (perfect
scaling), then fall ever more slowly, then stop falling, with the bend near the gradient noise scale
of McCandlish et al. 2018. A fair comparison tunes the learning rate per batch size, as they did;
the sweep does this over the grid it is given and reports the best per batch size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minigd._json import to_plain
from minigd.batchsize.noise import NoiseScale, noise_scale
from minigd.experiments.compare import resolve_data
from minigd.experiments.metrics import Target, TargetTracker
from minigd.nn.models import parse_model_spec
from minigd.training.trainer import fit


@dataclass
class SweepRow:
    batch_size: int
    best_lr: float | None
    steps_to_target: float | None
    epochs_to_target: float | None
    samples_to_target: float | None
    seconds_to_target: float | None
    steps_by_lr: dict[float, float | None] = field(default_factory=dict)


@dataclass
class SweepResult:
    rows: list[SweepRow]
    target: Target
    data: str
    model: str
    learning_rates: list[float]
    seeds: list[int]
    noise: NoiseScale | None = None
    noise_at_init: NoiseScale | None = None

    def table(self) -> str:
        from minigd.experiments.compare import format_number

        lines = [f"{'batch':>6} {'best lr':>8} {'steps':>8} {'epochs':>8} {'seconds':>8}"]
        for r in self.rows:
            lines.append(
                f"{r.batch_size:>6} {format_number(r.best_lr):>8} "
                f"{format_number(r.steps_to_target):>8} "
                f"{format_number(r.epochs_to_target):>8} "
                f"{format_number(r.seconds_to_target):>8}"
            )
        if self.noise is not None:
            lines.append(f"gradient noise scale near the target: {self.noise}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": {"metric": self.target.metric, "value": self.target.value},
            "data": self.data,
            "model": self.model,
            "learning_rates": self.learning_rates,
            "seeds": self.seeds,
            "rows": [
                dict(r.__dict__, steps_by_lr={str(k): v for k, v in r.steps_by_lr.items()})
                for r in self.rows
            ],
            "noise": None if self.noise is None else self.noise.to_dict(),
            "noise_at_init": None if self.noise_at_init is None else self.noise_at_init.to_dict(),
        }

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "sweep.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=to_plain))
        return path


def sweep(
    model: str,
    data: Any = "mnist-5k",
    *,
    batch_sizes: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024),
    learning_rates: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0),
    seeds: Sequence[int] = (0,),
    target: Target | None = None,
    max_epochs: int = 30,
    optimizer: str = "sgd",
    measure_noise: bool = True,
) -> SweepResult:
    """Runs every (batch size, learning rate, seed) until the target or ``max_epochs``.

    The steps of a (batch size, lr) pair are the median over seeds, and count only when every
    seed reached the target. The best lr of a batch size is the one with the fewest steps.
    """
    name, train, test = resolve_data(data)
    target = target or Target("val_accuracy", 0.9)
    base = parse_model_spec(model, train.X.shape[1], train.n_classes, seed=seeds[0])
    val = base.prepare(test.X, test.y)
    rows = []
    best_model = None
    for b in batch_sizes:
        by_lr: dict[float, tuple[float | None, list]] = {}
        for lr in learning_rates:
            reached, models = [], []
            for seed in seeds:
                net = parse_model_spec(model, train.X.shape[1], train.n_classes, seed=seed)
                tracker = TargetTracker(target, val, stop=True)
                fit(
                    net,
                    train.X,
                    train.y,
                    batch_size=b,
                    epochs=max_epochs,
                    optimizer=optimizer,
                    lr=lr,
                    seed=seed,
                    callbacks=[tracker],
                    verbose=0,
                )
                reached.append(tracker.reached)
                models.append(net)
            done = all(r is not None for r in reached)
            steps = float(np.median([r.steps for r in reached])) if done else None
            by_lr[lr] = (steps, reached if done else [], models)
        finished = {lr: v for lr, v in by_lr.items() if v[0] is not None}
        if not finished:
            rows.append(
                SweepRow(b, None, None, None, None, None, {lr: None for lr in learning_rates})
            )
            continue
        best_lr = min(finished, key=lambda lr: finished[lr][0])
        steps, reached, models = finished[best_lr]
        if best_model is None:
            best_model = models[0]
        rows.append(
            SweepRow(
                b,
                best_lr,
                steps,
                float(np.median([r.epochs for r in reached])),
                float(np.median([r.samples for r in reached])),
                float(np.median([r.seconds for r in reached])),
                {lr: v[0] for lr, v in by_lr.items()},
            )
        )
    result = SweepResult(rows, target, name, model, list(learning_rates), list(seeds))
    if measure_noise:
        kwargs = {
            "b_small": min(32, len(train.X) // 8),
            "b_big": min(1024, len(train.X) // 2),
            "n_batches": 30,
        }
        result.noise_at_init = noise_scale(base, train.X, train.y, **kwargs)
        if best_model is not None:  # the smallest batch's best run, stopped at the target
            result.noise = noise_scale(best_model, train.X, train.y, **kwargs)
    return result
