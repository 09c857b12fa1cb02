"""HTML building blocks: tables whose cells are escaped unless marked as markup, badges."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from qntz.core.states import tone
from qntz.report.svg import esc


class Markup(str):
    """HTML this package built itself (everything else is escaped on the way out)."""


def cell(value: Any) -> str:
    if isinstance(value, Markup):
        return str(value)
    return "—" if value is None or value == "" else esc(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> Markup:
    klass = f' class="{esc(cls)}"' if cls else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return Markup(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def badge(label: Any, kind: Any = None) -> Markup:
    """A coloured label; `kind` (default: the label) picks the colour through CSS."""
    kind = label if kind is None else kind
    return Markup(f'<span class="badge {esc(str(kind).replace(" ", "-"))}">{esc(label)}'
                  "</span>")


def passed_badge(passed: Any, status: Any = None) -> Markup:
    if status:
        return badge(status, tone(status))
    if passed is None:
        return badge("not run", "warn")
    return badge("pass", "ok") if passed else badge("FAIL", "bad")


def code(value: Any) -> Markup:
    return Markup(f"<code>{esc(value)}</code>")


def heading(level: int, content: Any, anchor: str = "") -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<h{level}{ident}>{esc(content)}</h{level}>"


def facts(items: Sequence[tuple[str, Any]]) -> str:
    """A short definition list of name: value pairs, absent values left out."""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{cell(v)}</dd>" for k, v in items
                   if v is not None and v != "")
    return f'<dl class="facts">{rows}</dl>'


def figure(svg_text: str, caption: str) -> str:
    return f"<figure>{svg_text}<figcaption>{esc(caption)}</figcaption></figure>"


def note(content: Any) -> str:
    return f'<p class="note">{esc(content)}</p>'
