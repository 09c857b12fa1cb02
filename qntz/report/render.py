"""`render(record)`: a run record, as plain dicts and lists, to one self-contained HTML page.

The page opens offline: no scripts, no requests (its Content-Security-Policy forbids both),
plots are static inline SVG. All text from the record is escaped. The same record always
gives the same bytes: nothing is read from the clock or the machine, dicts are walked in
sorted order, lists in their own order, numbers printed with fixed formats.

The run record (format ``"report": 1``); optional keys may be absent or None::

    {
      "report": 1,
      "pipeline": "quickstart",                 # the pipeline's name
      "recorded_at": "2025-01-02T03:04:05Z",    # the run's own time, shown as given
      "stale": [{"id": "capture", "reason": "source changed: models/tiny.py"}],
      "verdict": [{"name": "int8", "compare": "compare", "status": "pass",
                   "metric": "cosine", "value": 0.9993, "tolerance": 0.99, "speedup": 3.1,
                   "file": "out/quickstart/int8/model.onnx", "bytes": 1234567}],
      "steps": [                                # topological order
        {"id": "int8", "kind": "quantize",
         "state": "cached" | "ran" | "failed" | "skipped" | "not run",
         "seconds": 0.5, "built_seconds": 0.5, "summary": "one line", "needs": ["simplify"],
         # at most one domain part, by kind:
         "compare": {
           "reference": {"name": "capture", "latency_ms": 3.2},
           "candidates": [{
             "name": "int8", "passed": True,    # None: not run
             "status": "pass" | "fail" | "error" | "not run" | "not built",
             "reason": "why, if not pass",
             "metric": "top1", "value": 0.99, "tolerance": 0.99, "latency_ms": 1.1,
             "outputs": [{"name": "logits", "max_abs": 0.02, "rms_rel": 0.01,
                          "cosine": 0.9995,
                          "abs_error_quantiles": {"0.5": 1e-3, "0.9": 4e-3, "1": 0.02}}],
             "sizes": [{"size": "batch=1", "error": 0.01, "latency_ms": 0.4}],
             "divergence": {"input": "batch=16, random",
                            "layers": [{"module": "blocks.5.conv_dw",
                                        "node": "/blocks.5/conv_dw/Conv", "op": "Conv",
                                        "error_added": 0.12, "cosine": 0.71}]}}]},
         "preflight": {
           "recommendation": "script",          # None: no method is safe
           "verdicts": {"trace": "risky", "script": "ok", "export": "fails"},
           "findings": [{"rule": "data-dependent-control-flow", "severity": "error",
                         "methods": ["trace"], "file": "hazards.py", "line": 16,
                         "message": "...", "fix": "...",
                         "excerpt": {"start": 13, "lines": ["source line 13", "..."]}}]},
         "quantize": {
           "precision": "int8", "recipe": "static",
           "nodes": [{"name": "/conv1/Conv", "op": "Conv",
                      "action": "quantized" | "fused" | "float", "reason": "..."}],
           "budget": {"max_drop": 0.01, "target": 0.99, "chosen": 2,
                      "points": [{"float_nodes": 0, "agreement": 0.95, "latency_ms": 1.0}]}},
         "tensorrt": {
           "precision": "fp16", "runtime": "tensorrt-rtx 1.2", "engine_bytes": 1234567,
           "build_seconds": 12.5, "layers_by_precision": {"fp16": 17, "fp32": 2},
           "not_run": [{"name": "compare/engine", "reason": "no GPU"}]},
         "section": {                           # any other kind's `Step.report_section`
           "title": "ORT graph optimization", "facts": [["nodes removed", 12]],
           "tables": [{"headers": ["op", "count"], "rows": [["Gelu", 4]], "caption": ""}],
           "notes": ["free text"]}}
      ]
    }
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import qntz.report.compare as compare
import qntz.report.domains as domains
from qntz.report.blocks import badge, code, heading, table
from qntz.report.dag import dag_svg
from qntz.report.svg import esc, num

FORMAT = 1
DOMAINS = (("preflight", domains.preflight), ("quantize", domains.quantize),
           ("tensorrt", domains.tensorrt), ("compare", compare.section),
           ("section", domains.kind_section))
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STATE_KIND = {"cached": "neutral", "ran": "ok", "failed": "bad", "skipped": "neutral",
              "not run": "warn"}
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;
color:#222;background:#fff}
h1{margin:0 0 4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}
code{font-family:ui-monospace,monospace;font-size:13px}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;background:#eee}
.ok,.ran,.quantized{background:#c7e9c0}.bad,.failed{background:#fcbba1}
.warn,.not-run,.float{background:#fdd0a2}.neutral,.cached,.fused{background:#deebf7}
figure{margin:8px 0 16px;display:inline-block;vertical-align:top}
figcaption{font-size:12px;color:#555}
svg text{font:11px system-ui,sans-serif;fill:#333}svg .label{font-size:12px;fill:#111}
svg .small{font-size:10px}svg .name{font-weight:600;font-size:12px}
svg .axis{stroke:#333}svg .grid{stroke:#eee}svg .box{stroke:#555}
svg .edge{fill:none;stroke:#777;stroke-width:1.4}svg .arrowhead{fill:#777}
svg .threshold{stroke:#d62728;stroke-dasharray:5 4}svg .reference{stroke:#555;
stroke-dasharray:2 3}svg .range{stroke:#999;stroke-width:2}svg .series{stroke-width:1.8}
svg .dot{stroke:#fff;stroke-width:1}svg[data-plot=dag]{max-width:100%;height:auto}
.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
.facts dt{color:#555}.facts dd{margin:0}
.finding{border-left:4px solid #ccc;padding:4px 12px;margin:8px 0}
.where{font-family:ui-monospace,monospace}.fix{color:#225}
.excerpt{background:#f8f8f8;padding:6px;overflow-x:auto}.excerpt .hit{background:#fee08b}
.excerpt .ln{color:#999}.note{color:#555;font-size:13px}
"""


def _status(steps: Sequence[dict[str, Any]]) -> str:
    failed = [s for s in steps if s.get("state") == "failed"]
    return f"{len(failed)} step(s) failed" if failed else "no step failed"


def _steps_table(steps: Sequence[dict[str, Any]]) -> str:
    rows = [[code(s["id"]), s.get("kind"), badge(s.get("state", "not run"),
                                                  STATE_KIND.get(str(s.get("state")), "neutral")),
             num(s.get("seconds"), ".2f"), num(s.get("built_seconds"), ".2f"),
             ", ".join(map(str, s.get("needs") or [])) or None,
             s.get("summary")] for s in steps]
    return table(["step", "kind", "state", "this run (s)", "built in (s)", "needs", "summary"],
                 rows, cls="steps")


def _stale(record: dict[str, Any]) -> list[str]:
    """A warning that the pipeline changed since the run the page shows."""
    stale = record.get("stale") or []
    if not stale:
        return []
    items = "".join(f"<li>{code(s['id'])}: {esc(s['reason'])}</li>" for s in stale)
    return [f'<section class="stale finding">{badge("stale", "warn")} The pipeline has '
            f"changed since this run: it shows what the last run built. "
            f"<code>qntz run</code> would re-run:<ul>{items}</ul></section>"]


def _verdict(record: dict[str, Any]) -> list[str]:
    """Which file to ship: the candidates that pass, fastest first, then the others."""
    rows = record.get("verdict") or []
    if not rows:
        return []
    body = [[code(r["name"]), badge(r["status"], "ok" if r["status"] == "pass" else "bad"),
             f"{r['metric']} {num(r.get('value'), '.4g')}"
             + (f" (bar {num(r['tolerance'], 'g')})" if r.get("tolerance") is not None else ""),
             f"{num(r.get('speedup'), '.2f')}x" if r.get("speedup") else None,
             code(r["file"]) if r.get("file") else None, _size(r.get("bytes"))]
            for r in rows]
    best = next((r for r in rows if r["status"] == "pass"), None)
    lead = (f"Ship {code(best['file'] or best['name'])}: the fastest candidate that passes."
            if best else "No candidate passes: nothing here is fit to ship.")
    return ['<section class="verdict">', heading(2, "Verdict", "verdict"),
            f"<p>{lead}</p>",
            table(["candidate", "status", "accuracy", "speedup vs reference", "file", "size"],
                  body, cls="verdict"), "</section>"]


def _size(count: Any) -> str | None:
    if not isinstance(count, int):
        return None
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _step_parts(index: int, step: dict[str, Any]) -> list[str]:
    parts = []
    for key, build in DOMAINS:
        if step.get(key):
            parts += build(step[key])
    if not parts:
        return []
    title = f"{step['id']} ({step.get('kind', '?')})"
    return [f'<section class="step">{heading(2, title, f"step-{index}")}', *parts, "</section>"]


def _nav(steps: Sequence[dict[str, Any]]) -> str:
    links = [f'<a href="#step-{i}">{esc(s["id"])}</a>' for i, s in enumerate(steps)
             if any(s.get(key) for key, _ in DOMAINS)]
    return f"<nav>Sections: {' · '.join(links)}</nav>" if links else ""


def render(record: dict[str, Any]) -> str:
    """The report page for `record` (its shape is in this module's docstring)."""
    if record.get("report", FORMAT) != FORMAT:
        raise ValueError(f"run record format {record.get('report')!r}; this renders {FORMAT}")
    steps = record.get("steps") or []
    name = str(record.get("pipeline", "?"))
    when = record.get("recorded_at")
    head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>qntz report: {esc(name)}</title><style>{CSS}</style></head><body>")
    lines = [head, f"<header><h1>{esc(name)}</h1>",
             f'<p class="note">recorded {esc(when or "—")} · {len(steps)} steps · '
             f"{esc(_status(steps))}</p></header>", *_stale(record), *_verdict(record),
             _nav(steps),
             '<section class="dag">', heading(2, "Steps", "steps"), dag_svg(steps),
             _steps_table(steps), "</section>"]
    for index, step in enumerate(steps):
        lines += _step_parts(index, step)
    lines.append("</body></html>\n")
    return "\n".join(lines)
