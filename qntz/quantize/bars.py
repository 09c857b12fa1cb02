"""The bars a pipeline's `compare` steps set for a quantized model: read by `quantize` to
fail early, and part of its key (kept light: a fully cached run computes keys)."""

from __future__ import annotations

from typing import Any


def compare_bars(pipeline: Any, step_id: str) -> dict[str, float]:
    """The top-1 / cosine bars that the pipeline's `compare` steps set for the model of
    `step_id` (step-wide metric and threshold, then `tolerances.<step_id>`), the strictest."""
    bars: dict[str, float] = {}
    for step in pipeline.steps.values():
        if step.kind != "compare" or step_id not in step.needs:
            continue
        tol = {"metric": step.params.get("metric"), "threshold": step.params.get("threshold"),
               **step.params.get("tolerances", {}).get(step_id, {})}
        if tol["metric"] in ("top1", "cosine") and tol["threshold"] is not None:
            bars[tol["metric"]] = max(bars.get(tol["metric"], -1.0), tol["threshold"])
    return bars
