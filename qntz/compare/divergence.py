"""Where a failing ONNX candidate starts to diverge from its float source.

`compare` runs this on every ONNX candidate that fails, on the input it failed worst on;
`qntz explain` runs it on demand. The float source is the ONNX model the candidate was made
from (a quantize step's input, recorded as `source` in its summary) or, failing that, the
nearest float ONNX ancestor in the pipeline. The result is a plain dict (kept in
`report.json` and the report): the layers ranked by the error they add, named by the
PyTorch module that produced them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qntz.compare.row import CandidateRow
from qntz.core.cache import Artifact
from qntz.core.errors import first_line

LAYERS_KEPT = 10  # the ranked layers a report shows
HALF_PRECISIONS = ("int8", "fp16", "bf16")
TORCH_ARTIFACTS = {"torchscript", "exported_program"}


def is_float_onnx(artifact: Artifact) -> bool:
    """An ONNX model in float32: not the output of a precision step."""
    return "onnx" in artifact.provides and "model.onnx" in artifact.files() and \
        artifact.summary.get("precision") not in HALF_PRECISIONS


def float_source(candidate: str, pipeline: Any, available: Mapping[str, Artifact]
                 ) -> Artifact | None:
    """The float ONNX model `candidate` was made from, among `available` artifacts: the
    source its step records, else the nearest float ONNX ancestor (breadth first)."""
    recorded = available[candidate].summary.get("source") if candidate in available else None
    if recorded in available and is_float_onnx(available[recorded]):
        return available[recorded]
    seen, frontier = {candidate}, list(pipeline.steps[candidate].needs)
    while frontier:
        for sid in frontier:
            if sid in available and is_float_onnx(available[sid]):
                return available[sid]
        seen |= set(frontier)
        frontier = [n for sid in frontier for n in pipeline.steps[sid].needs if n not in seen]
    return None


def _round(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) and np.isfinite(value) else value


def _layer(layer: Any) -> dict[str, Any]:
    return {"module": layer.module, "node": layer.node, "op": layer.op_label,
            "precision": layer.precision, "error_added": _round(layer.added_error),
            "error": _round(layer.error), "cosine": _round(layer.cosine),
            "weight_error": _round(layer.weight_error)}


def localize_candidate(source: Artifact, candidate: Artifact, feed: dict[str, np.ndarray],
                       label: str, workdir: Path | None = None) -> dict[str, Any]:
    """The ranked layers of `candidate` against `source` on one input; a localization that
    cannot run (an unsupported model) says why instead of failing the caller."""
    from qntz.compare.localize import localize

    where = {"input": label, "source": source.step_id}
    try:
        found = localize(source.file("model.onnx"), candidate.file("model.onnx"), feed,
                         workdir=workdir)
    except Exception as exc:  # localization explains a failure; it must not add one
        reason = _without_paths(first_line(exc, 200), workdir)
        return {**where, "summary": f"localization failed: {reason}", "error": reason,
                "layers": []}
    return {**where, "summary": found.summary(), "flagged": len(found.flagged),
            "matched": found.matched, "total": found.total,
            "layers": [_layer(layer) for layer in found.layers[:LAYERS_KEPT]]}


def failing_input(row: CandidateRow, samples: list[tuple[str, dict[str, np.ndarray]]]
                  ) -> tuple[str, dict[str, np.ndarray]]:
    """The input a failing candidate row did worst on (its first failing output's)."""
    outputs = row.get("outputs") or []
    bad = next((o for o in outputs if not o.get("pass")), outputs[0] if outputs else {})
    worst = bad.get("worst_sample")
    return next(((label, feed) for label, feed in samples if label == worst), samples[0])


def explain_failures(ctx: Any, report: dict[str, Any],
                     samples: list[tuple[str, dict[str, np.ndarray]]], workdir: Path) -> None:
    """Localize every failing ONNX candidate of a compare report, in place: the row gets
    `divergence`, and its reason the one-line summary."""
    for row in report["candidates"]:
        artifact = ctx.inputs.get(row["id"])
        if row["status"] != "fail" or artifact is None:
            continue
        if TORCH_ARTIFACTS & set(artifact.provides):
            _replay_against_eager(ctx, row, artifact, samples)
            continue
        if "onnx" not in artifact.provides:
            continue
        others = {sid: a for sid, a in ctx.inputs.items() if sid != row["id"]}
        source = float_source(row["id"], ctx.pipeline, {**others, row["id"]: artifact})
        if source is None or source.step_id == row["id"]:
            row["divergence"] = {"summary": "not localized: no float ONNX model it was made "
                                 "from among this step's inputs", "layers": []}
            continue
        ctx.report(f"localizing where {row['id']} diverges from {source.step_id}")
        label, feed = failing_input(row, samples)
        row["divergence"] = localize_candidate(source, artifact, feed, label, workdir)
        if row["divergence"]["layers"] and row["divergence"].get("flagged"):
            row["reason"] += f"; {row['divergence']['summary']}"


def _replay_against_eager(ctx: Any, row: CandidateRow, artifact: Artifact,
                          samples: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    """A failing TorchScript or ExportedProgram candidate: its submodules replayed on what
    their eager twins received (compare's reference must be the eager model)."""
    from qntz.compare.module_replay import replay, summary

    if ctx.params["reference"] is not None or \
            not any("model" in a.provides for a in ctx.inputs.values()):
        return
    ctx.report(f"replaying {row['id']}'s submodules on eager's inputs")
    label, feed = failing_input(row, samples)
    where = {"input": label, "source": "PyTorch eager"}
    try:
        layers = replay(ctx.live_model(), _torch_module(artifact), feed, ctx.pipeline.inputs)
    except Exception as exc:  # localization explains a failure; it must not add one
        reason = first_line(exc, 200)
        row["divergence"] = {**where, "summary": f"localization failed: {reason}",
                             "error": reason, "layers": []}
        return
    row["divergence"] = {**where, "summary": summary(layers), "flagged": len(layers),
                         "layers": layers}
    if layers:
        row["reason"] += f"; {row['divergence']['summary']}"


def _torch_module(artifact: Artifact) -> Any:
    import torch

    if "torchscript" in artifact.provides:
        return torch.jit.load(str(artifact.file("model.pt"))).eval()
    return torch.export.unflatten(torch.export.load(str(artifact.file("model.pt2"))))


def _without_paths(text: str, workdir: Path | None) -> str:
    """The message with temporary folders left out: it goes into a digested report."""
    import re
    import tempfile

    for folder in filter(None, (workdir, tempfile.gettempdir())):
        text = text.replace(str(folder), "<tmp>")
    return re.sub(r"<tmp>/\S*", "<tmp>/…", text)
