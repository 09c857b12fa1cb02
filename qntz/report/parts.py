"""Each domain's part of the run record, from the files its step wrote (plain dicts in,
plain dicts out; the shapes are those `qntz.report.render` documents)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qntz.compare.row import CandidateRow
from qntz.core.states import passed

EXCERPT_LINES = 3  # source lines shown before and after a finding's line


def _median(latency: Any) -> float | None:
    return latency.get("median") if isinstance(latency, dict) else None


def _decider(row: CandidateRow) -> tuple[str, Any, Any]:
    """The metric that decides a candidate (its first output's), its value and tolerance."""
    first = (row.get("outputs") or [{}])[0]
    metric = first.get("metric")
    if metric == "top1":
        return "top1", row.get("top1"), first.get("threshold")
    if metric == "cosine":
        return "cosine", first.get("cosine_mean"), first.get("threshold")
    tolerance = first.get("atol") if metric == "allclose" else None
    return "max abs error", row.get("max_abs"), tolerance


def _outputs(row: CandidateRow) -> list[dict[str, Any]]:
    return [{"name": o["name"], "max_abs": o.get("max_abs"), "rms_rel": o.get("rms_rel"),
             "cosine": o.get("cosine_min"), "abs_error_quantiles": o.get("abs_error_quantiles")}
            for o in row.get("outputs") or []]


def _sizes(row: CandidateRow, latencies: dict[str, Any] | None) -> list[dict[str, Any]]:
    latencies = latencies or {}
    return [{"size": r["size"], "error": r.get("rms_rel"), "latency_ms": latencies.get(r["size"])}
            for r in row.get("sizes") or []]


def _divergence(found: dict[str, Any] | None) -> dict[str, Any] | None:
    if not found or not found.get("layers"):
        return None
    return {"input": found.get("input"), "source": found.get("source"),
            "summary": found.get("summary"), "layers": found["layers"]}


def candidate(row: CandidateRow, timing: dict[str, Any]) -> dict[str, Any]:
    metric, value, tolerance = _decider(row)
    return {"name": row["id"], "status": row["status"], "passed": passed(row["status"]),
            "reason": row.get("reason") or None, "metric": metric, "value": value,
            "tolerance": tolerance, "latency_ms": _median(timing.get("latency_ms")),
            "speedup": timing.get("speedup"), "speedup_range": timing.get("speedup_range"),
            "outputs": _outputs(row), "sizes": _sizes(row, timing.get("size_latency_ms")),
            "divergence": _divergence(row.get("divergence"))}


def compare(report: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """A compare step's candidates, from `report.json` and the volatile `latency.json`."""
    reference = timing.get("reference") or {}
    rows = timing.get("candidates") or {}
    return {"reference": {"name": (report.get("reference") or {}).get("id"),
                          "latency_ms": _median(reference.get("latency_ms"))},
            "candidates": [candidate(c, rows.get(c["id"]) or {})
                           for c in report.get("candidates") or []]}


def excerpt(root: Path, file: str | None, line: int | None) -> dict[str, Any] | None:
    """The lines around `line` of a source file named relative to the pipeline's folder."""
    if not file or not line:
        return None
    path = Path(file) if Path(file).is_absolute() else root / file
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    start = max(1, line - EXCERPT_LINES)
    return {"start": start, "lines": lines[start - 1:line + EXCERPT_LINES]} if lines else None


def preflight(report: dict[str, Any], root: Path) -> dict[str, Any]:
    findings = [{**{k: f.get(k) for k in ("rule", "severity", "methods", "file", "line",
                                           "message", "fix")},
                 "excerpt": excerpt(root, f.get("file"), f.get("line"))}
                for f in report.get("findings") or []]
    return {"recommendation": report.get("recommendation"),
            "verdicts": report.get("verdicts") or {}, "findings": findings}


def _budget(summary: dict[str, Any], params: dict[str, Any], latencies: list[Any]
            ) -> dict[str, Any] | None:
    points = summary.get("budget_search") or []
    if not points:
        return None
    metric = params.get("metric", "cosine")
    timed = {p.get("float_nodes"): p.get("latency_ms") for p in latencies
             if isinstance(p, dict)}
    max_drop = params.get("max_drop")
    return {"max_drop": max_drop, "metric": metric,
            "target": 1 - max_drop if isinstance(max_drop, (int, float)) else None,
            "chosen": None if summary.get("failed") else len(
                summary.get("kept_float_for_budget") or []), "met": not summary.get("failed"),
            "points": [{"float_nodes": p["float_nodes"], "agreement": 1 - p["drop"],
                        "latency_ms": timed.get(p["float_nodes"])} for p in points]}


def quantize(summary: dict[str, Any], params: dict[str, Any], latencies: list[Any]
             ) -> dict[str, Any]:
    """What was quantized, fused and kept float, and the accuracy-budget search."""
    recipe = summary.get("recipe")
    return {"precision": summary.get("precision"),
            "recipe": recipe.get("mode") if isinstance(recipe, dict) else recipe,
            "nodes": summary.get("node_actions") or [],
            "budget": _budget(summary, params, latencies)}


def tensorrt(layers: dict[str, Any], build_seconds: Any) -> dict[str, Any]:
    by_precision: dict[str, int] = {}
    for layer in layers.get("compute_layers") or []:
        by_precision[layer["precision"]] = by_precision.get(layer["precision"], 0) + 1
    runtime = " ".join(str(layers[k]) for k in ("runtime", "runtime_version") if layers.get(k))
    return {"precision": layers.get("precision"), "runtime": runtime or None,
            "engine_bytes": layers.get("engine_bytes"), "build_seconds": build_seconds,
            "layers_by_precision": by_precision}
