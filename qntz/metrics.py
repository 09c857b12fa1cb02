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
    metric: str = "allclose"  # what decides pass: allclose | top1 | cosine
    threshold: float = 0.99  # for top1 and cosine
    max_abs: float = 0.0
    max_rel: float = 0.0
    cosine_min: float = 1.0
    cosine_sum: float = 0.0
    samples: int = 0
    failures: int = 0
    worst_sample: str | None = None
    problem: str | None = None
    rows: int = 0
    agree: int = 0
    _worst_excess: float = field(default=-np.inf, repr=False)

    def __bool__(self) -> bool:
        if self.problem is not None:
            return False
        if self.metric == "top1":
            return self.top1 is not None and self.top1 >= self.threshold
        if self.metric == "cosine":
            return self.cosine_mean is not None and self.cosine_mean >= self.threshold
        return self.failures == 0

    def verdict(self) -> str:
        """Why it failed, in numbers."""
        if self.problem:
            return self.problem
        numbers = (f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, cosine "
                   f"{self.cosine_min:.4f}")
        if self.metric == "top1":
            top1 = "n/a (no class axis)" if self.top1 is None else f"{self.top1:.2%}"
            return f"top-1 agreement {top1} < {self.threshold:.2%} ({numbers})"
        if self.metric == "cosine":
            return f"mean cosine {self.cosine_mean:.4f} < {self.threshold} ({numbers})"
        return (f"{numbers} (atol {self.atol:g}, rtol {self.rtol:g}), worst on "
                f"'{self.worst_sample}', {self.failures}/{self.samples} inputs outside")

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
        if got.ndim >= 1 and got.shape[-1] > 1:
            self.agree += int((got64.argmax(-1) == want64.argmax(-1)).sum())
            self.rows += int(np.prod(got.shape[:-1]))
        excess = float(np.nanmax(diff - (self.atol + self.rtol * np.abs(want64)))) \
            if got.size else -1.0
        if np.isnan(diff).any() or excess > 0:
            self.failures += 1
        if np.isnan(excess) or excess > self._worst_excess:
            self._worst_excess = excess
            self.worst_sample = label

    @property
    def cosine_mean(self) -> float | None:
        return self.cosine_sum / self.samples if self.samples else None

    @property
    def top1(self) -> float | None:
        return self.agree / self.rows if self.rows else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "pass": bool(self), "metric": self.metric,
            "threshold": self.threshold if self.metric != "allclose" else None,
            "atol": self.atol, "rtol": self.rtol,
            "max_abs": self.max_abs, "max_rel": self.max_rel,
            "cosine_min": self.cosine_min,
            "cosine_mean": self.cosine_mean, "top1": self.top1,
            "samples": self.samples, "failed_samples": self.failures,
            "worst_sample": self.worst_sample, "problem": self.problem,
        }


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row (first axis) of two same-shape arrays; 1 where both
    rows are zero-length or one of them is all zeros."""
    rows = max(len(a), 1) if a.ndim else 1
    a64, b64 = a.reshape(rows, -1).astype(np.float64), b.reshape(rows, -1).astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return np.where(norms > 0, (a64 * b64).sum(1) / np.maximum(norms, 1e-30), 1.0)


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
