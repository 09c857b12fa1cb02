"""Numbers that say how far a candidate's outputs are from the reference's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class OutputStats:
    """One output of one candidate, over every sample. Truthy only when it passes."""

    name: str
    atol: float
    rtol: float
    max_abs: float = 0.0
    max_rel: float = 0.0
    cosine_min: float = 1.0
    cosine_sum: float = 0.0
    samples: int = 0
    failures: int = 0
    worst_sample: str | None = None
    problem: str | None = None
    _worst_excess: float = field(default=-np.inf, repr=False)

    def __bool__(self) -> bool:
        return self.failures == 0 and self.problem is None

    def add(self, label: str, got: np.ndarray, want: np.ndarray) -> None:
        self.samples += 1
        if got.shape != want.shape:
            self.failures += 1
            self.problem = f"shape {tuple(got.shape)} vs reference {tuple(want.shape)} on {label}"
            self.worst_sample = label
            return
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        diff = np.abs(got64 - want64)
        diff = np.where(np.isnan(got64) & np.isnan(want64), 0.0, diff)
        if got.size:
            self.max_abs = max(self.max_abs, float(np.nanmax(diff)) if diff.size else 0.0)
            if np.isnan(diff).any():
                self.max_abs = float("nan")
            rel = diff / (np.abs(want64) + self.atol + 1e-12)
            self.max_rel = max(self.max_rel, float(np.nanmax(rel)))
        cos = cosine(got64, want64)
        self.cosine_min = min(self.cosine_min, cos)
        self.cosine_sum += cos
        excess = float(np.nanmax(diff - (self.atol + self.rtol * np.abs(want64)))) \
            if got.size else -1.0
        if np.isnan(diff).any() or excess > 0:
            self.failures += 1
        if np.isnan(excess) or excess > self._worst_excess:
            self._worst_excess = excess
            self.worst_sample = label

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "pass": bool(self), "atol": self.atol, "rtol": self.rtol,
            "max_abs": self.max_abs, "max_rel": self.max_rel,
            "cosine_min": self.cosine_min,
            "cosine_mean": self.cosine_sum / self.samples if self.samples else None,
            "samples": self.samples, "failed_samples": self.failures,
            "worst_sample": self.worst_sample, "problem": self.problem,
        }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if not a.size:
        return 1.0
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norm)


def latency_ms(call: Callable[[], Any], iterations: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)),
            "iterations": iterations}
