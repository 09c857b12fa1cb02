"""The report's plots as static SVG strings; each names its kind in `data-plot`.

Values that are absent or not finite are left out of a plot (the tables still show them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qntz.report.svg import (
    FAIL,
    NEUTRAL,
    PALETTE,
    PASS,
    Frame,
    Labels,
    category_axis,
    esc,
    finite,
    legend,
    line,
    num,
    pos,
    scale,
    svg,
    text,
    text_box,
    x_axis,
    y_axis,
)

SMALL = 10.0  # px: the `small` labels' font size (the report's CSS)
ROWS_BASE = Frame().top + Frame().bottom  # a plot of rows: its margins, then one band per row


def _colour(passed: Any) -> str:
    return PASS if passed is True else FAIL if passed is False else NEUTRAL


def _dot(x: float, y: float, colour: str, tip: str, r: float = 4.5) -> str:
    return (f'<circle cx="{pos(x)}" cy="{pos(y)}" r="{pos(r)}" fill="{colour}" '
            f'class="dot"><title>{esc(tip)}</title></circle>')


def _hline(y: float, frame: Frame, label: str, labels: Labels) -> list[str]:
    return [line(frame.x0, y, frame.x1, y, "threshold"),
            _line_label(frame.x1 - 4, y - 4, label, labels, "threshold-label")]


def _line_label(x: float, y: float, label: str, labels: Labels, cls: str) -> str:
    """A small label ending at (x, y), kept clear for the point labels placed after it."""
    labels.reserve(text_box(x, y, label, SMALL, "end"))
    return text(x, y, label, anchor="end", cls=f"small {cls}")


def accuracy_latency(candidates: Sequence[dict[str, Any]], metric: str,
                     reference_ms: Any = None) -> str:
    """Candidates of one metric: metric value against latency, tolerance lines drawn."""
    shown = [c for c in candidates if c.get("metric") == metric
             and finite(c.get("value")) and finite(c.get("latency_ms"))]
    frame = Frame()
    tolerances = sorted({c["tolerance"] for c in shown if finite(c.get("tolerance"))})
    xs = scale([c["latency_ms"] for c in shown], frame.x0, frame.x1,
               include=[reference_ms] if finite(reference_ms) else [])
    ys = scale([c["value"] for c in shown], frame.y0, frame.y1, include=tolerances)
    body = [*x_axis(xs, frame, "latency ms (median)"), *y_axis(ys, frame, metric)]
    labels = Labels(frame)
    for tol in tolerances:
        body += _hline(ys(tol), frame, f"tolerance {num(tol)}", labels)
    if finite(reference_ms):
        body += [line(xs(reference_ms), frame.y0, xs(reference_ms), frame.y1, "reference"),
                 _line_label(xs(reference_ms) - 4, frame.y0 - 6, "reference", labels,
                             "reference-label")]
    points = [(xs(c["latency_ms"]), ys(c["value"]), c) for c in shown]
    for x, y, _ in points:
        labels.dot(x, y, 4.5)
    for x, y, c in points:
        tip = f"{c['name']}: {metric} {num(c['value'])}, {num(c['latency_ms'])} ms"
        at_x, at_y, anchor = labels.place(x, y, str(c["name"]))
        body += [_dot(x, y, _colour(c.get("passed")), tip),
                 text(at_x, at_y, c["name"], anchor=anchor, cls="point-label")]
    body += legend([("pass", PASS), ("fail", FAIL)], frame)
    return svg("accuracy-latency", frame, f"{metric} against latency", body)


def _quantile_name(q: float) -> str:
    return "max" if q == 1 else "min" if q == 0 else f"p{q * 100:g}"


def _quantiles(output: dict[str, Any]) -> list[tuple[float, float]]:
    raw = output.get("abs_error_quantiles") or {}
    return sorted((float(q), v) for q, v in raw.items() if finite(v))


def error_quantiles(rows: Sequence[tuple[str, dict[str, Any]]], output: str) -> str:
    """Quantiles of |error| for one output, one row per candidate, on a log axis."""
    rows = [(name, _quantiles(out)) for name, out in rows if _quantiles(out)]
    frame = Frame(height=ROWS_BASE + 26 * max(len(rows), 1), left=120)
    values = [v for _, qs in rows for _, v in qs]
    floor = min([v for v in values if v > 0] or [1e-12]) / 10
    xs = scale([max(v, floor) for v in values], frame.x0, frame.x1, log=True)
    names = sorted({q for _, qs in rows for q, _ in qs})
    colours = {q: PALETTE[i % len(PALETTE)] for i, q in enumerate(names)}
    body = [*x_axis(xs, frame, f"|error| of {output} (log)"),
            *legend([(_quantile_name(q), colours[q]) for q in names], frame)]
    for i, (name, qs) in enumerate(rows):
        y = frame.y1 + 13 + 26 * i
        points = [(q, xs(max(v, floor)), v) for q, v in qs]
        body += [text(frame.x0 - 6, y + 4, name, anchor="end"),
                 line(points[0][1], y, points[-1][1], y, "range")]
        body += [_dot(x, y, colours[q], f"{name} {_quantile_name(q)}: {num(v)}", r=4)
                 for q, x, v in points]
    return svg("error-distribution", frame, f"distribution of |error| for {output}", body)


def _size_labels(candidates: Sequence[dict[str, Any]]) -> list[str]:
    labels: list[str] = []
    for c in candidates:
        labels += [str(r["size"]) for r in c.get("sizes") or [] if str(r["size"]) not in labels]
    return labels


def per_size(candidates: Sequence[dict[str, Any]], field: str, label: str) -> str:
    """`field` (error or latency_ms) per input size, one line per candidate."""
    series = [c for c in candidates if any(finite(r.get(field)) for r in c.get("sizes") or [])]
    frame = Frame()
    labels = _size_labels(series)
    xs, body = category_axis(labels, frame, "input size")
    ys = scale([r.get(field) for c in series for r in c["sizes"]], frame.y0, frame.y1)
    body += y_axis(ys, frame, label)
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    for c, colour in zip(series, colours):
        pts = [(xs[labels.index(str(r["size"]))], ys(r[field]), r) for r in c["sizes"]
               if finite(r.get(field))]
        path = " ".join(f"{pos(x)},{pos(y)}" for x, y, _ in pts)
        body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" class="series"/>')
        body += [_dot(x, y, colour, f"{c['name']} at {r['size']}: {num(r[field])}", r=3.5)
                 for x, y, r in pts]
    body += legend([(c["name"], colour) for c, colour in zip(series, colours)], frame)
    plot = "size-error" if field == "error" else "size-latency"
    return svg(plot, frame, f"{label} per input size", body)


def bars(counts: dict[str, Any], plot: str, title: str) -> str:
    """Horizontal bars, one per key (sorted), e.g. TensorRT layers by precision."""
    items = sorted((str(k), v) for k, v in counts.items() if finite(v))
    frame = Frame(height=ROWS_BASE + 24 * max(len(items), 1), left=90)
    xs = scale([0, *[v for _, v in items]], frame.x0, frame.x1, log=False)
    body = x_axis(xs, frame, "count")
    for i, (name, value) in enumerate(items):
        y = frame.y1 + 4 + 24 * i
        body += [text(frame.x0 - 6, y + 13, name, anchor="end"),
                 f'<rect x="{pos(xs(0))}" y="{pos(y)}" width="{pos(xs(value) - xs(0))}" '
                 f'height="16" fill="{PALETTE[i % len(PALETTE)]}" class="bar">'
                 f"<title>{esc(name)}: {num(value, 'g')}</title></rect>"]
    return svg(plot, frame, title, body)


def budget(points: Sequence[dict[str, Any]], target: Any = None, chosen: Any = None) -> str:
    """The accuracy budget's trade-off: agreement against how many nodes stay float."""
    shown = sorted((p for p in points if finite(p.get("float_nodes"))
                    and finite(p.get("agreement"))), key=lambda p: p["float_nodes"])
    frame = Frame()
    xs = scale([p["float_nodes"] for p in shown], frame.x0, frame.x1, log=False)
    ys = scale([p["agreement"] for p in shown], frame.y0, frame.y1,
               include=[target] if finite(target) else [])
    body = [*x_axis(xs, frame, "nodes kept float"), *y_axis(ys, frame, "agreement")]
    labels = Labels(frame)
    if finite(target):
        body += _hline(ys(target), frame, f"target {num(target)}", labels)
    path = " ".join(f"{pos(xs(p['float_nodes']))},{pos(ys(p['agreement']))}" for p in shown)
    body.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[0]}" class="series"/>')
    for p in shown:
        labels.dot(xs(p["float_nodes"]), ys(p["agreement"]), 4.5)
    for p in shown:
        x, y = xs(p["float_nodes"]), ys(p["agreement"])
        tip = (f"{p['float_nodes']} float: agreement {num(p['agreement'])}, "
               f"{num(p.get('latency_ms'))} ms")
        colour = PASS if p["float_nodes"] == chosen else PALETTE[0]
        label = f"{num(p.get('latency_ms'), '.3g')} ms"
        at_x, at_y, anchor = labels.place(x, y, label, SMALL)
        body += [_dot(x, y, colour, tip),
                 text(at_x, at_y, label, anchor=anchor, cls="small point-label")]
    return svg("budget", frame, "accuracy budget trade-off", body)
