"""Compare's row for one candidate: the one shape that `compare/evaluate.py` builds and the
console, the Markdown and HTML reports, the fixes, `explain` and the lock's figures read
(it is also what `report.json` and `qntz run --json` hold per candidate)."""

from __future__ import annotations

from typing import Any, TypedDict

from qntz.core.states import CandidateStatus


class Latency(TypedDict):
    median: float  # ms, of every timed run
    p90: float
    iterations: int
    rounds: list[float]  # each round's median, ms


class CandidateRow(TypedDict, total=False):
    # always there
    id: str  # the candidate's step
    artifact: str  # torchscript | exported_program | onnx | engine
    status: CandidateStatus
    reason: str  # why it is not "pass", one line ("" when it passes)
    # once it ran on every sample
    outputs: list[dict[str, Any]]  # per output: its metric, value, tolerance, verdict
    sizes: list[dict[str, Any]] | None  # RMS relative error per input size
    size_latency_ms: dict[str, float] | None
    max_abs: float
    cosine_min: float
    top1: float | None
    # once timed (the median of per-round ratios, their range, and whether it is too wide)
    latency_ms: Latency
    speedup: float  # over the reference
    speedup_range: list[float]
    speedup_wide: bool
    source: str  # the float model it was made from (quantize, tensorrt)
    speedup_vs_source: float
    speedup_vs_source_range: list[float]
    speedup_vs_source_wide: bool
    not_faster_than_source: bool  # within 5% of its source: noise, not an optimization
    # a failed lossy candidate: where it first departs from its float source
    divergence: dict[str, Any]
