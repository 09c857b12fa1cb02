"""The pipeline's DAG as SVG: one column per depth, boxes coloured by state, edges from needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qntz.report.svg import Frame, esc, finite, num, pos, svg, text

STATE_COLOURS = {"cached": "#c6dbef", "ran": "#a1d99b", "failed": "#fc9272",
                 "skipped": "#e0e0e0", "not run": "#fdd0a2"}
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 168.0, 46.0, 36.0, 14.0, 12.0
NAME_CHARS, DETAIL_CHARS = 21, 30


def depths(steps: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Each step's column: 0 for steps needing nothing known, else 1 + deepest need.

    Steps come in topological order; a need naming no step in the record is ignored.
    """
    depth: dict[str, int] = {}
    for step in steps:
        known = [depth[n] for n in step.get("needs", []) if n in depth]
        depth[step["id"]] = 1 + max(known) if known else 0
    return depth


def layout(steps: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Top-left corner of each step's box, rows filled in record order within a column."""
    rows: dict[int, int] = {}
    corners = {}
    for step_id, col in depths(steps).items():
        row = rows.get(col, 0)
        rows[col] = row + 1
        corners[step_id] = (MARGIN + col * (BOX_W + GAP_X), MARGIN + row * (BOX_H + GAP_Y))
    return corners


def _short(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit - 1] + "…"


def _box(step: dict[str, Any], x: float, y: float) -> str:
    state = str(step.get("state", "not run"))
    fill = STATE_COLOURS.get(state, "#ffffff")
    tip = f"{step['id']} ({step.get('kind', '?')}): {state}, {num(step.get('seconds'), '.2f')}s"
    if step.get("summary"):
        tip += f" — {step['summary']}"
    detail = f"{step.get('kind', '?')} · {state}"
    if finite(step.get("seconds")):
        detail += f" · {num(step['seconds'], '.1f')}s"
    return (f'<g class="node" data-step="{esc(step["id"])}" data-state="{esc(state)}">'
            f"<title>{esc(tip)}</title>"
            f'<rect x="{pos(x)}" y="{pos(y)}" width="{pos(BOX_W)}" height="{pos(BOX_H)}" '
            f'rx="6" fill="{fill}" class="box"/>'
            + text(x + 8, y + 18, _short(str(step["id"]), NAME_CHARS), cls="name")
            + text(x + 8, y + 36, _short(detail, DETAIL_CHARS), cls="small") + "</g>")


def _edge(start: tuple[float, float], end: tuple[float, float]) -> str:
    x1, y1 = start[0] + BOX_W, start[1] + BOX_H / 2
    x2, y2 = end[0], end[1] + BOX_H / 2
    if x2 <= x1:  # a need drawn in the same or a later column: route around the boxes
        x2, y2 = end[0] + BOX_W / 2, end[1]
    mid = (x1 + x2) / 2
    return (f'<path class="edge" d="M{pos(x1)},{pos(y1)} C{pos(mid)},{pos(y1)} '
            f'{pos(mid)},{pos(y2)} {pos(x2)},{pos(y2)}" marker-end="url(#arrow)"/>')


def _legend(y: float) -> list[str]:
    parts, x = [], MARGIN
    for state, colour in STATE_COLOURS.items():
        parts.append(f'<rect x="{pos(x)}" y="{pos(y)}" width="12" height="12" '
                     f'fill="{colour}" class="box"/>')
        parts.append(text(x + 16, y + 10, state, cls="small"))
        x += 28 + 7 * len(state)
    return parts


def dag_svg(steps: Sequence[dict[str, Any]]) -> str:
    """The DAG drawn left to right; each box's tooltip holds the step's one-line summary."""
    corners = layout(steps)
    width = max([x for x, _ in corners.values()] + [MARGIN]) + BOX_W + MARGIN
    height = max([y for _, y in corners.values()] + [MARGIN]) + BOX_H + MARGIN + 24
    frame = Frame(width=max(width, 480.0), height=height)
    marker = ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
              'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
              '<path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>')
    edges = [_edge(corners[need], corners[step["id"]])
             for step in steps for need in step.get("needs", []) if need in corners]
    boxes = [_box(step, *corners[step["id"]]) for step in steps]
    return svg("dag", frame, "pipeline steps and their needs",
               [marker, *edges, *boxes, *_legend(height - 22)])
