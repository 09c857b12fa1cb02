"""`qntz explain FILE STEP`: where a built ONNX candidate diverges from its float source,
on the input a compare step failed it worst on (or the first compare input)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from qntz.compare.divergence import failing_input, float_source, localize_candidate
from qntz.core.cache import Artifact
from qntz.core.errors import PipelineError, QntzError

Samples = list[tuple[str, dict[str, np.ndarray]]]


def explain(session: Any, step_id: str) -> dict[str, Any]:
    """The layers of step `step_id`'s ONNX model ranked by the error each adds."""
    from qntz.core.plan import plan

    pipeline = session.pipeline
    states, found = plan(pipeline, pipeline.order(), session.cache, session.read_lock())
    where = f"{pipeline.path}: step '{step_id}'"
    artifact = found.get(step_id)
    if artifact is None:
        raise QntzError(f"not built ({states[step_id].reason})", where=where,
                        hint=f"run `qntz run {pipeline.path}` first")
    if "onnx" not in artifact.provides or "model.onnx" not in artifact.files():
        raise PipelineError(f"explain compares ONNX models; this step makes "
                            f"{', '.join(artifact.provides) or 'none'}", where=where,
                            hint="name a quantize, simplify or onnx step")
    source = float_source(step_id, pipeline, found)
    if source is None or source.step_id == step_id:
        raise QntzError("no built float ONNX model it was made from", where=where,
                        hint="explain a step made from an ONNX model (e.g. a quantize step), "
                        "after `qntz run`")
    compare_id, label, feed = _input(pipeline, found, step_id)
    temp = session.cache.root / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="explain-", dir=temp) as work:
        found_layers = localize_candidate(source, artifact, feed, label, Path(work))
    return {"step": step_id, "compare": compare_id, **found_layers}


def _input(pipeline: Any, found: dict[str, Artifact], step_id: str
           ) -> tuple[str | None, str, dict[str, np.ndarray]]:
    """The compare that judged the step (a failing one first) and its worst input."""
    from qntz.compare.evaluate import sample_inputs
    from qntz.compare.step import Compare

    rows = []
    for sid, artifact in found.items():
        if pipeline.steps[sid].kind != "compare" or "report.json" not in artifact.files():
            continue
        report = json.loads(artifact.file("report.json").read_text())
        rows += [(row["status"] == "pass", sid, row) for row in report["candidates"]
                 if row["id"] == step_id]
    if not rows:
        samples = sample_inputs(pipeline, Compare.with_defaults({}))
        return None, *samples[0]
    _, sid, row = min(rows, key=lambda r: r[0])  # a failing row first
    samples: Samples = sample_inputs(pipeline, pipeline.steps[sid].params)
    return sid, *failing_input(row, samples)
