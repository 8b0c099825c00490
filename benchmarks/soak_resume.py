"""Soak test of exact resume: real training processes killed at random instants, then resumed.

Each trial starts ``minigd train`` (mnist-5k, mlp:64 with BatchNorm and dropout, Adam, B=32,
3 epochs, a checkpoint every 3 steps so that many kills land during a write), waits a random time
drawn over the whole run (start-up included), and sends SIGKILL (60% of trials), SIGINT (20%) or
SIGTERM (20%). Then it

1. reads every file left in the run folder (config.json, history files, model.npz, each
   checkpoint) and counts any that cannot be read as *torn*;
2. checks the exit code: -9 for SIGKILL, 130 for SIGINT, 143 for SIGTERM, or 0 when the run had
   already finished;
3. resumes with ``minigd train --resume`` (or starts afresh when the kill came before the run
   folder existed) and compares the final model.npz bitwise with an uninterrupted run's.

Trials take turns among three kinds of run: the one above; the same with ``--batch-size
adaptive`` (the schedule must resume where it was); and the first on two MPI ranks
(``mpiexec -n 2``, signalled as a whole job: every process of its group gets the signal, as a
scheduler ending an allocation sends it). Each kind is compared with its own uninterrupted run.

Usage: ``python benchmarks/soak_resume.py --trials 100`` (about 8 minutes on 2 cores). Prints
one line per trial and the tally; ``--json PATH`` also writes the tally and every trial.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARGS = [
    "--data", "mnist-5k", "--model", "mlp:64+bn+dropout0.1", "--optimizer", "adam",
    "--batch-size", "32", "--last-batch", "merge", "--epochs", "3", "--seed", "7",
    "--checkpoint-every", "3", "--quiet",
]  # fmt: skip
KINDS = {
    "plain": ([], 1),
    "adaptive": (["--batch-size", "adaptive"], 1),
    "2 ranks": ([], 2),
}  # extra arguments (the last --batch-size wins), processes
SIGNALS = [(signal.SIGKILL, 0.6), (signal.SIGINT, 0.2), (signal.SIGTERM, 0.2)]
EXPECTED_EXIT = {signal.SIGKILL: -signal.SIGKILL, signal.SIGINT: 130, signal.SIGTERM: 143}
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def minigd(*args: str, ranks: int = 1) -> subprocess.Popen:
    """``minigd train`` in a process group of its own (mpiexec and its ranks, for 2 ranks)."""
    command = [sys.executable, "-m", "minigd", "train", *args]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
        command = [mpiexec, "-n", str(ranks), *command, "--threads", "1"]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )


def parameters(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "model.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k != "architecture"}


def torn_files(folder: Path) -> list[str]:
    """Files in the run folder that cannot be read back whole."""
    from minigd.nn import load_model
    from minigd.training import load_checkpoint

    readers = {
        "config.json": lambda p: json.loads(p.read_text()),
        "history.json": lambda p: json.loads(p.read_text()),
        "history.csv": _read_csv,
        "epochs.csv": _read_csv,
        "model.npz": load_model,
    }
    torn = []
    for name, read in readers.items():
        if (folder / name).exists():
            try:
                read(folder / name)
            except Exception as exc:
                torn.append(f"{name}: {exc}")
    for path in sorted((folder / "checkpoints").glob("checkpoint-*.npz")):
        try:
            load_checkpoint(path)
        except Exception as exc:
            torn.append(f"{path.name}: {exc}")
    return torn


def _read_csv(path: Path) -> None:
    rows = list(csv.reader(path.read_text().splitlines()))
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("ragged or empty")


def trial(i: int, root: Path, kind: str, reference: dict, timing: tuple[float, float], rng):
    """One kill at a random instant: 20% in start-up (before the run folder exists), 80% while
    training and writing."""
    folder = root / f"trial{i:03d}"
    extra, ranks = KINDS[kind]
    sig = [s for s, _ in SIGNALS][rng.choice(len(SIGNALS), p=[p for _, p in SIGNALS])]
    started, seconds = timing
    delay = float(
        rng.uniform(0.0, started) if rng.random() < 0.2 else rng.uniform(started, seconds)
    )
    child = minigd(*ARGS, *extra, "--out", str(folder), ranks=ranks)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)  # the whole job: mpiexec and every rank
    _, err = child.communicate()
    code = child.returncode
    exit_ok = code in (0, EXPECTED_EXIT[sig])
    torn = torn_files(folder) if folder.exists() else []
    resumable = (folder / "config.json").exists()
    again = (
        minigd("--resume", str(folder), ranks=ranks)
        if resumable
        else minigd(*ARGS, *extra, "--out", str(folder), ranks=ranks)
    )
    _, err2 = again.communicate()
    exact = again.returncode == 0 and all(
        np.array_equal(a, reference[k]) for k, a in parameters(folder).items()
    )
    if exact:
        shutil.rmtree(folder)
    return {
        "trial": i,
        "kind": kind,
        "signal": signal.Signals(sig).name,
        "delay": round(delay, 3),
        "exit": code,
        "exit_ok": exit_ok,
        "torn": torn,
        "resumed": resumable,
        "exact": exact,
        "error": None if exact else (err2.strip()[-500:] or err.strip()[-500:]),
        "stderr": None if exit_ok else err.strip()[-500:],
    }


def reference_run(folder: Path, kind: str) -> tuple[float, float] | None:
    """(seconds until training began, seconds in all) of one uninterrupted run."""
    extra, ranks = KINDS[kind]
    start = time.perf_counter()
    ref = minigd(*ARGS, *extra, "--out", str(folder), ranks=ranks)
    started = None
    while ref.poll() is None:
        if started is None and (folder / "config.json").exists():
            started = time.perf_counter() - start
        time.sleep(0.01)
    if ref.returncode != 0:
        print(ref.stderr.read(), file=sys.stderr)
        return None
    seconds = time.perf_counter() - start
    return (seconds / 2 if started is None else started), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="minigd-soak-"))
    references, timing = {}, {}
    for kind in KINDS:
        runs = [reference_run(root / f"reference-{kind}-{i}", kind) for i in range(2)]
        if None in runs:
            return 1
        # the fastest: kills drawn within it land before the run could have finished
        timing[kind] = (min(t[0] for t in runs), min(t[1] for t in runs))
        references[kind] = parameters(root / f"reference-{kind}-0")
        started, seconds = timing[kind]
        print(f"{kind}: uninterrupted {seconds:.2f} s, training from {started:.2f} s")
    rng = np.random.default_rng(args.seed)
    results = []
    for i in range(args.trials):
        kind = list(KINDS)[i % len(KINDS)]
        r = trial(i, root, kind, references[kind], timing[kind], rng)
        results.append(r)
        mark = "exact" if r["exact"] else f"NOT EXACT: {r['error']}"
        print(
            f"{i:3d} {kind:<8} {r['signal']:<7} at {r['delay']:5.2f} s exit {r['exit']:>4} "
            f"{'resumed' if r['resumed'] else 'restart'} {len(r['torn'])} torn  {mark}",
            flush=True,
        )
    tally = {
        "trials": len(results),
        "exact": sum(r["exact"] for r in results),
        "torn_files": sum(len(r["torn"]) for r in results),
        "wrong_exit_codes": sum(not r["exit_ok"] for r in results),
        "by_kind": {kind: sum(r["kind"] == kind for r in results) for kind in KINDS},
        "by_signal": {
            name: sum(r["signal"] == name for r in results)
            for name in ("SIGKILL", "SIGINT", "SIGTERM")
        },
        "resumed": sum(r["resumed"] for r in results),
        "finished_before_the_signal": sum(r["exit"] == 0 for r in results),
        # a signal swallowed by mistake would show as an exit 0 long before a run can finish
        "earliest_exit_0_at": min((r["delay"] for r in results if r["exit"] == 0), default=None),
        "uninterrupted_seconds": {kind: round(t[1], 2) for kind, t in timing.items()},
    }
    print(json.dumps(tally, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"tally": tally, "trials": results}, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    ok = (
        tally["exact"] == tally["trials"]
        and not tally["torn_files"]
        and not tally["wrong_exit_codes"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
