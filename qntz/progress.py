"""What the terminal shows while a pipeline runs: a line per step, a spinner on long ones."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from qntz.runner import StepResult

ICON = {"ran": "[green]✓[/]", "cached": "[dim]•[/]", "failed": "[red]✗[/]",
        "skipped": "[yellow]-[/]"}


def describe(result: StepResult) -> str:
    """A short line of what the step made, from its summary."""
    s = result.summary
    if result.kind in ("onnx", "simplify") and "nodes" in s:
        extra = f" (was {s['nodes_before']})" if "nodes_before" in s else ""
        return f"opset {s.get('opset')}, {s['nodes']} nodes{extra}, {s['bytes'] / 1024:.0f} KiB"
    if result.kind == "compare" and "candidates" in s:
        counts: dict[str, int] = {}
        for c in s["candidates"]:
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        text = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no candidates"
        if s.get("unverified"):
            text += f"; UNVERIFIED (could not run here): {', '.join(s['unverified'])}"
        return text
    if result.kind == "quantize" and "precision" in s:
        return _quantized(s)
    if result.kind == "tensorrt" and "engine_bytes" in s:
        coverage = s.get("precision_coverage")
        checked = f", {coverage:.0%} of compute layers {s['precision']}" if coverage else ""
        return (f"{s['runtime']} {s['runtime_version']}, {s['precision']} engine "
                f"{s['engine_bytes'] / 1024:.0f} KiB for {', '.join(s['targets'])}{checked}")
    if result.kind == "preflight" and "verdicts" in s:
        verdicts = ", ".join(f"{m} {v}" for m, v in s["verdicts"].items())
        advice = f"use {s['recommendation']}" if s["recommendation"] else "no safe method"
        return (f"{advice} ({verdicts}); {s['counts']['error']} errors, "
                f"{s['counts']['warning']} warnings in {s['seconds']:.1f}s")
    if "method" in s and result.kind in ("auto", "trace", "script", "export"):
        return f"captured with {s['method']} (preflight: {s['verdict']})"
    if result.kind == "load" and "parameters" in s:
        return f"{s.get('class')}, {s['parameters']:,} parameters"
    if s.get("warnings"):
        return f"{len(s['warnings'])} warning(s): {s['warnings'][0]}"
    return ""


def _quantized(s: dict[str, Any]) -> str:
    if s["precision"] == "fp16":
        return f"fp16: {s['float16_weights']} float16 weights, {s['casts']} casts"
    acc, cov = s["accuracy"], s["coverage"]
    kept = f", {len(s['kept_float_for_budget'])} kept float for the budget" \
        if s["kept_float_for_budget"] else ""
    return (f"int8 {s['recipe']['mode']}: {cov['quantized_nodes']} nodes quantized{kept}; "
            f"on calibration data top-1 {acc['top1']['agreement']:.1%}, cosine "
            f"{acc['cosine']['mean']:.4f}")


class ConsoleReporter:
    """Prints each finished step; shows a live spinner with elapsed time for running ones."""

    def __init__(self, console: Console):
        self.console = console
        self._running: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._status: Status | None = None

    def started(self, step_id: str, kind: str) -> None:
        with self._lock:
            self._running[step_id] = (time.perf_counter(), kind)
            self._refresh()

    def message(self, step_id: str, text: str) -> None:
        with self._lock:
            if step_id in self._running:
                start, _ = self._running[step_id]
                self._running[step_id] = (start, text)
                self._refresh()

    def finished(self, result: StepResult) -> None:
        with self._lock:
            self._running.pop(result.id, None)
            self._refresh()
            seconds = f"{result.seconds:.1f}s" if result.state == "ran" else result.state
            detail = {"failed": "(the error follows)", "skipped": result.reason}.get(
                result.state) or describe(result)
            self.console.print(f"{ICON[result.state]} [bold]{result.id}[/] [dim]({result.kind})"
                               f"[/] {seconds}  {escape(detail)}", highlight=False,
                               soft_wrap=True)

    def _refresh(self) -> None:
        if not self.console.is_terminal:
            return
        if not self._running:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        text = ", ".join(f"{sid}: {what}" for sid, (_, what) in self._running.items())
        if self._status is None:
            self._status = Status(text, console=self.console)
            self._status.start()
        else:
            self._status.update(text)

    def close(self) -> None:
        with self._lock:
            self._running.clear()
            self._refresh()


def _vs_source(c: dict[str, Any]) -> str:
    if c.get("speedup_vs_source") is None:
        return "—"
    text = f"{c['speedup_vs_source']:.2f}x {c['source']}"
    return f"[red]{text} (not faster)[/]" if c["slower_than_source"] else text


def compare_table(console: Console, result: StepResult) -> None:
    from rich.table import Table

    s: dict[str, Any] = result.summary
    ref = s.get("reference", {})
    lat = ref.get("latency_ms")
    title = f"{result.id}: reference {ref.get('runs')}" + (
        f", {lat['median']:.2f} ms" if lat else "")
    table = Table(title=title, title_justify="left")
    for column in ("candidate", "artifact", "status", "max abs", "cosine min", "top-1",
                   "ms (median)", "vs reference", "vs float source"):
        table.add_column(column)
    style = {"pass": "green", "fail": "red", "error": "red", "not run": "yellow"}
    for c in s.get("candidates", []):
        lat = c.get("latency_ms")
        status = c["status"]
        if status == "not run":
            status += ": " + c["reason"].split(" not run: ", 1)[-1]
        table.add_row(c["id"], c["artifact"], f"[{style[c['status']]}]{escape(status)}[/]",
                      "—" if c.get("max_abs") is None else f"{c['max_abs']:.3g}",
                      "—" if c.get("cosine_min") is None else f"{c['cosine_min']:.6f}",
                      "—" if c.get("top1") is None else f"{c['top1']:.1%}",
                      f"{lat['median']:.2f}" if lat else "—",
                      f"{c['speedup']:.2f}x" if c.get("speedup") else "—", _vs_source(c))
    console.print(table)
