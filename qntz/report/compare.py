"""A compare step's part of the report: candidates, plots, per-output and per-size figures,
and where a failing candidate started to diverge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import qntz.report.plots as plots
from qntz.report.blocks import code, figure, note, passed_badge, table
from qntz.report.svg import esc, finite, num


def _candidates_table(candidates: Sequence[dict[str, Any]], reference: dict[str, Any]) -> str:
    rows = [[code(reference.get("name", "reference")), "reference", None, None, None,
             num(reference.get("latency_ms"), ".3f"), None]] if reference else []
    rows += [[code(c["name"]), passed_badge(c.get("passed"), c.get("status")),
              c.get("metric"), num(c.get("value")), num(c.get("tolerance")),
              num(c.get("latency_ms"), ".3f"), c.get("reason")] for c in candidates]
    return table(["candidate", "result", "metric", "value", "tolerance", "latency ms", "why"],
                 rows, cls="candidates")


def _accuracy_plots(candidates: Sequence[dict[str, Any]], reference: dict[str, Any]) -> list[str]:
    metrics = sorted({str(c["metric"]) for c in candidates if c.get("metric")
                      and finite(c.get("value")) and finite(c.get("latency_ms"))})
    out = [figure(plots.accuracy_latency(candidates, m, reference.get("latency_ms")),
                  f"{m} against latency; the dashed line is the tolerance") for m in metrics]
    missing = [c["name"] for c in candidates
               if not (finite(c.get("value")) and finite(c.get("latency_ms")))]
    if missing:
        out.append(note("Not plotted (no figure or no latency): " + ", ".join(missing)))
    return out


def _output_names(candidates: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for c in candidates:
        names += [str(o["name"]) for o in c.get("outputs") or [] if str(o["name"]) not in names]
    return names


def _outputs(candidates: Sequence[dict[str, Any]]) -> list[str]:
    rows = [[code(c["name"]), code(o["name"]), num(o.get("max_abs")), num(o.get("rms_rel")),
             num(o.get("cosine"), ".6f")]
            for c in candidates for o in c.get("outputs") or []]
    if not rows:
        return []
    out = ["<h4>Per output</h4>",
           table(["candidate", "output", "max abs error", "RMS rel error", "cosine"], rows)]
    for name in _output_names(candidates):
        pairs = [(str(c["name"]), o) for c in candidates for o in c.get("outputs") or []
                 if str(o["name"]) == name and o.get("abs_error_quantiles")]
        if pairs:
            out.append(figure(plots.error_quantiles(pairs, name),
                              f"quantiles of |error| on {name}, per candidate"))
    return out


def _sizes(candidates: Sequence[dict[str, Any]]) -> list[str]:
    sized = [c for c in candidates if c.get("sizes")]
    if not sized:
        return []
    rows = [[code(c["name"]), r["size"], num(r.get("error")), num(r.get("latency_ms"), ".3f")]
            for c in sized for r in c["sizes"]]
    out = ["<h4>Per input size</h4>"]
    for field, label in (("error", "error"), ("latency_ms", "latency ms")):
        if any(finite(r.get(field)) for c in sized for r in c["sizes"]):
            out.append(figure(plots.per_size(sized, field, label), f"{label} per input size"))
    out.append(table(["candidate", "size", "error", "latency ms"], rows))
    return out


def _divergence(candidate: dict[str, Any]) -> list[str]:
    found = candidate.get("divergence")
    if not found:
        return []
    rows = [[i + 1, code(r.get("module") or "?"), code(r.get("node") or "?"), r.get("op"),
             num(r.get("error_added")), num(r.get("cosine"), ".4f")]
            for i, r in enumerate(found.get("layers") or [])]
    where = f" on input {found['input']}" if found.get("input") else ""
    return [f"<h4>Where {code(candidate['name'])} diverges{esc(where)}</h4>",
            table(["rank", "PyTorch module", "ONNX node", "op", "error added", "cosine"], rows,
                  cls="divergence")]


def section(compare: dict[str, Any]) -> list[str]:
    """The HTML parts of one compare step (its heading is the caller's)."""
    candidates = compare.get("candidates") or []
    reference = compare.get("reference") or {}
    parts = [_candidates_table(candidates, reference), *_accuracy_plots(candidates, reference)]
    parts += _outputs(candidates) + _sizes(candidates)
    for c in candidates:
        parts += _divergence(c)
    return parts
