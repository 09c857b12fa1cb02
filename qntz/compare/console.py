"""Compare's table of candidates, as the terminal shows it after a run."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from qntz.compare.row import CandidateRow
from qntz.core.states import style

SHORT = {"torchscript": "TorchScript", "exported_program": "ExportedProgram", "onnx": "ONNX",
         "engine": "TensorRT"}
COLUMNS = ("candidate", "artifact", "status", "max abs", "cos min", "top-1", "ms", "×ref",
           "×float src")
FIGURES = ("max abs", "cos min", "top-1", "ms", "×ref", "×float src")


def candidates_table(step_id: str, s: dict[str, Any]) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    ref = s.get("reference", {})
    lat = ref.get("latency_ms")
    title = f"{step_id}: against {ref.get('runs')}" + (f" ({lat['median']:.2f} ms)" if lat
                                                      else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    rows = [_row(c) for c in s.get("candidates", [])]
    for index, column in enumerate(COLUMNS):
        widest = max([len(column)] + [len(Text.from_markup(r[index]).plain) for r in rows])
        if column in FIGURES or column == "artifact":  # never cut: names fold instead
            table.add_column(column, no_wrap=True, min_width=widest)
        else:
            table.add_column(column, overflow="fold", min_width=min(widest, 8))
    for row in rows:
        table.add_row(*row)
    notes = [_note(s.get("candidates", []), status) for status in ("not run", "not built")]
    if any(notes):
        table.caption = "\n".join(n for n in notes if n)
        table.caption_justify = "left"
    return table


def _note(candidates: list[CandidateRow], status: str) -> str:
    """`not run: engine: no GPU here` under the table, for the rows of `status`."""
    notes = [f"{c['id']}: {c['reason'].split(f' {status}: ', 1)[-1]}" for c in candidates
             if c["status"] == status]
    return f"{status}: " + "; ".join(notes) if notes else ""


def _row(c: CandidateRow) -> list[str]:
    lat = c.get("latency_ms")
    status = c["status"]
    return [c["id"], SHORT.get(c["artifact"], c["artifact"]),
            f"[{style(c['status'])}]{escape(status)}[/]",
            "—" if c.get("max_abs") is None else f"{c['max_abs']:.2g}",
            "—" if c.get("cosine_min") is None else f"{c['cosine_min']:.5f}",
            "—" if c.get("top1") is None else f"{c['top1']:.1%}",
            f"{lat['median']:.2f}" if lat else "—",
            _speed(c, "speedup"), _vs_source(c)]


def _speed(c: CandidateRow, key: str) -> str:
    if c.get(key) is None:
        return "—"
    text = f"{c[key]:.2f}x"
    return f"[yellow]{text}±[/]" if c.get(f"{key}_wide") else text


def _vs_source(c: CandidateRow) -> str:
    if c.get("speedup_vs_source") is None:
        return "—"
    text = _speed(c, "speedup_vs_source")
    return f"[red]{text} not faster[/]" if c["not_faster_than_source"] else text
