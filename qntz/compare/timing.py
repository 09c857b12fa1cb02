"""Latency figures that hold under load: every model timed in the same rounds.

Timing the reference, then each candidate, lets whatever else the machine does land on one
of them (a 42x "speedup" measured while another job ran during the reference). Here each
round runs every model a few times in turn, the order rotated from round to round, so load
hits all alike; a speedup is the median of the per-round ratios, reported with their
spread, and a wide spread is said. The machine the figures come from is recorded beside
them.

On the CPU, each model runs on one thread and is timed by that thread's CPU time (the
`cpu` clock): another process's load stretches the wall clock, not the work a call does,
so a speedup measured beside a busy job is the one measured on a quiet machine. Work off
the calling thread (a GPU, a thread pool) is timed by the wall clock. Timing phases of
steps running side by side (`--jobs`) take turns, so one is never the other's load.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any, Literal

import numpy as np

ROUNDS = 5
WIDE_SPREAD = 0.25  # (max - min) / median of the per-round ratios past which we warn
MODEL_BUDGET_S = 5.0  # timed seconds per model, about (each round still runs it once)
WARMUP_SHARE = 0.25  # of MODEL_BUDGET_S, past which warm-up stops (after one run)

Clock = Literal["cpu", "wall"]  # the calling thread's CPU time, or the wall clock
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}
_TAKING_TURNS = threading.Lock()


def interleaved(calls: dict[str, Callable[[], Any]], iterations: int, warmup: int,
                budget_s: float = MODEL_BUDGET_S, clock: Clock = "wall"
                ) -> dict[str, dict[str, Any]]:
    """Per model: median and p90 of every timed run (ms on `clock`), and each round's median.

    A model too slow for `iterations` runs within `budget_s` (eager PyTorch on a large
    model on a CPU) runs fewer per round, at least one, in the same rounds."""
    if not iterations or not calls:
        return {}
    with _TAKING_TURNS:
        return _rounds(calls, iterations, warmup, budget_s, CLOCKS[clock])


def _rounds(calls: dict[str, Callable[[], Any]], iterations: int, warmup: int,
            budget_s: float, clock: Callable[[], float]) -> dict[str, dict[str, Any]]:
    warm_ms = {name: _warm_up(call, warmup, budget_s * WARMUP_SHARE, clock)
               for name, call in calls.items()}
    rounds = min(ROUNDS, iterations)
    per_round = {name: _runs_per_round(iterations, rounds, warm_ms[name], budget_s)
                 for name in calls}
    runs: dict[str, list[float]] = {name: [] for name in calls}
    medians: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for index in range(rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            times = [_once(calls[name], clock) for _ in range(per_round[name])]
            runs[name] += times
            medians[name].append(float(np.median(times)))
    return {name: {"median": float(np.median(runs[name])),
                   "p90": float(np.percentile(runs[name], 90)),
                   "iterations": len(runs[name]), "rounds": medians[name]}
            for name in names}


def _warm_up(call: Callable[[], Any], warmup: int, budget_s: float,
             clock: Callable[[], float]) -> float | None:
    """Run `call` up to `warmup` times, stopping once `budget_s` is spent; the last run's
    milliseconds (None without warm-up)."""
    last, spent = None, 0.0
    for _ in range(warmup):
        last = _once(call, clock)
        spent += last / 1e3
        if spent >= budget_s:
            break
    return last


def _runs_per_round(iterations: int, rounds: int, warm_ms: float | None,
                    budget_s: float) -> int:
    """`iterations` spread over the rounds, fewer where one warm run says that they would
    take longer than `budget_s`; at least one."""
    wanted = max(1, iterations // rounds)
    if not warm_ms:
        return wanted
    affordable = int(budget_s * 1e3 / warm_ms / rounds)
    return max(1, min(wanted, affordable))


def _once(call: Callable[[], Any], clock: Callable[[], float]) -> float:
    start = clock()
    call()
    return (clock() - start) * 1e3


def speedup(slow: dict[str, Any] | None, fast: dict[str, Any] | None
            ) -> dict[str, Any] | None:
    """How many times faster `fast` ran than `slow`: the median of the per-round ratios,
    their range, and whether that range is too wide to trust the median alone."""
    if not slow or not fast:
        return None
    ratios = [s / f for s, f in zip(slow["rounds"], fast["rounds"]) if f > 0]
    if not ratios:
        return None
    middle = float(np.median(ratios))
    low, high = float(min(ratios)), float(max(ratios))
    return {"median": middle, "low": low, "high": high,
            "wide": middle > 0 and (high - low) / middle > WIDE_SPREAD}


@cache
def machine() -> dict[str, Any]:
    """The CPU and thread counts the figures were measured with."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "threads": _threads(),
            "python": platform.python_version()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _threads() -> dict[str, Any]:
    threads: dict[str, Any] = {}
    try:
        import torch

        threads["torch"] = torch.get_num_threads()
    except ImportError:
        pass
    threads["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    return threads
