"""The report's parts for preflight, quantize and tensorrt steps, and for any other kind's
`Step.report_section`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import qntz.report.plots as plots
from qntz.core.states import tone
from qntz.report.blocks import badge, code, facts, figure, heading, note, table
from qntz.report.svg import esc, finite, num

ACTIONS = ("quantized", "fused", "float")


def excerpt(found: dict[str, Any]) -> str:
    """The source lines around a finding, numbered, its own line marked."""
    source = found.get("excerpt") or {}
    lines = source.get("lines") or []
    if not lines:
        return ""
    first = int(source.get("start", 1))
    width = len(str(first + len(lines) - 1))
    rows = []
    for number, content in enumerate(lines, start=first):
        mark = ' class="hit"' if number == found.get("line") else ""
        rows.append(f'<span{mark}><span class="ln">{number:>{width}}</span> '
                    f"{esc(content)}</span>")
    return '<pre class="excerpt">' + "\n".join(rows) + "</pre>"


def _finding(found: dict[str, Any]) -> str:
    where = f"{found['file']}:{found.get('line', '?')}" if found.get("file") else "—"
    severity = str(found.get("severity", "info"))
    head = (f'<div class="finding">{badge(severity, tone(severity))} '
            f"{code(found.get('rule', '?'))} <span class=\"where\">{esc(where)}</span>")
    methods = found.get("methods") or []
    if methods:
        head += f' <span class="small">affects {esc(", ".join(map(str, methods)))}</span>'
    body = f"<p>{esc(found.get('message', ''))}</p>"
    if found.get("fix"):
        body += f'<p class="fix">Fix: {esc(found["fix"])}</p>'
    return head + body + excerpt(found) + "</div>"


def preflight(section: dict[str, Any]) -> list[str]:
    verdicts = section.get("verdicts") or {}
    rows = [[code(m), badge(v, tone(v))]
            for m, v in sorted(verdicts.items())]
    parts = [facts([("recommendation", code(section["recommendation"])
                     if section.get("recommendation") else "none is safe")])]
    if rows:
        parts.append(table(["method", "verdict"], rows))
    findings = section.get("findings") or []
    parts.append(f"<h4>Findings ({len(findings)})</h4>")
    parts += [_finding(f) for f in findings] or [note("No findings.")]
    return parts


def _node_rows(nodes: Sequence[dict[str, Any]]) -> list[list[Any]]:
    order = {a: i for i, a in enumerate(ACTIONS)}
    ranked = sorted(nodes, key=lambda n: order.get(str(n.get("action")), len(ACTIONS)))
    return [[code(n.get("name", "?")), n.get("op"), badge(n.get("action", "?")),
             n.get("reason")] for n in ranked]


def quantize(section: dict[str, Any]) -> list[str]:
    nodes = section.get("nodes") or []
    counts = Counter(str(n.get("action", "?")) for n in nodes)
    summary = ", ".join(f"{counts[a]} {a}" for a in sorted(counts))
    parts = [facts([("precision", section.get("precision")), ("recipe", section.get("recipe")),
                    ("nodes", summary or None)])]
    if nodes:
        parts.append(table(["node", "op", "action", "why"], _node_rows(nodes)))
    parts += _budget(section.get("budget") or {})
    return parts


def _budget(found: dict[str, Any]) -> list[str]:
    points = found.get("points") or []
    if not points:
        return []
    target, chosen = found.get("target"), found.get("chosen")
    rows = [[p.get("float_nodes"), num(p.get("agreement")), num(p.get("latency_ms"), ".3f"),
             badge("chosen", "ok") if p.get("float_nodes") == chosen else ""]
            for p in sorted(points, key=lambda p: p.get("float_nodes", 0))]
    caption = "agreement with the float model against nodes kept float; labels are latency"
    missed = [] if found.get("met", True) else [note(
        f"No point explored meets the target {num(target)}: the step failed; every point it "
        "tried is below.")]
    return ["<h4>Accuracy budget</h4>", *missed,
            facts([("max drop", num(found.get("max_drop"))), ("target", num(target)),
                   ("nodes kept float", chosen if found.get("met", True) else "none meets it")]),
            figure(plots.budget(points, target, chosen), caption),
            table(["nodes kept float", "agreement", "latency ms", ""], rows)]


def _size(engine_bytes: Any) -> str | None:
    return f"{engine_bytes / 1024:.0f} KiB" if finite(engine_bytes) else None


def tensorrt(section: dict[str, Any]) -> list[str]:
    seconds = section.get("build_seconds")
    parts = [facts([("precision", section.get("precision")), ("runtime", section.get("runtime")),
                    ("engine size", _size(section.get("engine_bytes"))),
                    ("build time", f"{num(seconds, '.1f')} s" if finite(seconds) else None)])]
    layers = section.get("layers_by_precision") or {}
    if layers:
        parts += [figure(plots.bars(layers, "layers-by-precision", "layers by precision"),
                         "compute layers by precision"),
                  table(["precision", "layers"], [[p, n] for p, n in sorted(layers.items())])]
    not_run = section.get("not_run") or []
    if not_run:
        parts += ["<h4>Not run here</h4>",
                  table(["what", "state", "why"],
                        [[code(r.get("name", "?")), badge("not run", "warn"),
                          r.get("reason")] for r in not_run], cls="not-run-rows")]
    return parts


def kind_section(section: dict[str, Any]) -> list[str]:
    """A kind's own section (`Step.report_section`), every value shown as text."""
    out = [heading(3, section.get("title") or "details"),
           facts([(str(k), v) for k, v in section.get("facts") or []])]
    for part in section.get("tables") or []:
        out.append(table(part.get("headers") or [], part.get("rows") or []))
        if part.get("caption"):
            out.append(note(part["caption"]))
    out += [note(text) for text in section.get("notes") or []]
    return out
