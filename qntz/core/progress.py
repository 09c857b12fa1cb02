"""What the terminal shows while a pipeline runs: a line per step, a spinner on long ones."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from qntz.core.runner import StepResult
from qntz.core.wording import plural

ICON = {"ran": "[green]✓[/]", "cached": "[dim]•[/]", "pulled": "[cyan]↓[/]", "failed": "[red]✗[/]",
        "skipped": "[yellow]-[/]"}


def describe(result: StepResult) -> str:
    """A short line of what the step made, from its summary."""
    s = result.summary
    if result.kind in ("onnx", "simplify") and "nodes" in s:
        extra = f" (was {s['nodes_before']})" if "nodes_before" in s else ""
        return (f"opset {s.get('opset')}, {plural(s['nodes'], 'node')}{extra}, "
                f"{s['bytes'] / 1024:.0f} KiB")
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
        return (f"{advice} ({verdicts}); {plural(s['counts']['error'], 'error')}, "
                f"{plural(s['counts']['warning'], 'warning')} in {s['seconds']:.1f}s")
    if "method" in s and result.kind in ("auto", "trace", "script", "export"):
        return f"captured with {s['method']} (preflight: {s['verdict']})"
    if result.kind == "load" and "parameters" in s:
        return f"{s.get('class')}, {s['parameters']:,} parameters"
    if s.get("warnings"):
        return f"{plural(len(s['warnings']), 'warning')}: {s['warnings'][0]}"
    return ""


def _quantized(s: dict[str, Any]) -> str:
    if s["precision"] in ("fp16", "bf16"):
        return (f"{s['precision']}: {plural(s['half_weights'], s['precision'] + ' weight')}, "
                f"{plural(s['casts'], 'cast')}")
    acc, cov = s["accuracy"], s["coverage"]
    kept = f", {len(s['kept_float_for_budget'])} kept float for the budget" \
        if s["kept_float_for_budget"] else ""
    return (f"int8 {s['recipe']['mode']}: {plural(cov['quantized_nodes'], 'node')} "
            f"quantized{kept}; "
            f"on calibration data top-1 {acc['top1']['agreement']:.1%}, cosine "
            f"{acc['cosine']['mean']:.4f}")


class SilentReporter:
    """For `--json`: the document at the end is the only output."""

    def started(self, step_id: str, kind: str) -> None:
        pass

    def message(self, step_id: str, text: str) -> None:
        pass

    def finished(self, result: StepResult) -> None:
        pass

    def close(self) -> None:
        pass


class ConsoleReporter:
    """Prints each finished step; a spinner with elapsed time for each running one."""

    def __init__(self, console: Console):
        self.console = console
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def started(self, step_id: str, kind: str) -> None:
        with self._lock:
            if not self.console.is_terminal:
                return
            if self._progress is None:
                self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                          TimeElapsedColumn(), console=self.console,
                                          transient=True)
                self._progress.start()
            self._tasks[step_id] = self._progress.add_task(self._text(step_id, kind))

    def message(self, step_id: str, text: str) -> None:
        with self._lock:
            if self._progress is not None and step_id in self._tasks:
                self._progress.update(self._tasks[step_id],
                                      description=self._text(step_id, text))

    def finished(self, result: StepResult) -> None:
        with self._lock:
            if self._progress is not None and result.id in self._tasks:
                self._progress.remove_task(self._tasks.pop(result.id))
            seconds = f"{result.seconds:.1f}s" if result.state == "ran" else result.state
            detail = {"failed": "(the error follows)", "skipped": result.reason}.get(
                result.state) or describe(result)
            self.console.print(f"{ICON[result.state]} [bold]{result.id}[/] [dim]({result.kind})"
                               f"[/] {seconds}  {escape(detail)}", highlight=False,
                               soft_wrap=True)
            if not self._tasks:
                self._stop()

    @staticmethod
    def _text(step_id: str, what: str) -> str:
        return f"[bold]{escape(step_id)}[/] {escape(what)}"

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        with self._lock:
            self._tasks.clear()
            self._stop()


def _vs_source(c: dict[str, Any]) -> str:
    if c.get("speedup_vs_source") is None:
        return "—"
    text = f"{c['speedup_vs_source']:.2f}x"
    return f"[red]{text} not faster[/]" if c["not_faster_than_source"] else text


SHORT = {"torchscript": "TorchScript", "exported_program": "ExportedProgram", "onnx": "ONNX",
         "engine": "TensorRT"}


def compare_table(console: Console, result: StepResult) -> None:
    from rich import box
    from rich.table import Table

    s: dict[str, Any] = result.summary
    ref = s.get("reference", {})
    lat = ref.get("latency_ms")
    title = f"{result.id}: against {ref.get('runs')}" + (f" ({lat['median']:.2f} ms)" if lat
                                                         else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("candidate", "artifact", "status", "max abs", "cos min", "top-1", "ms",
                   "×ref", "×float src"):
        table.add_column(column, no_wrap=column in ("candidate", "artifact", "ms", "×ref"))
    style = {"pass": "green", "fail": "red", "error": "red", "not run": "yellow"}
    for c in s.get("candidates", []):
        lat = c.get("latency_ms")
        status = c["status"]
        if status == "not run":
            status += ": " + c["reason"].split(" not run: ", 1)[-1]
        table.add_row(c["id"], SHORT.get(c["artifact"], c["artifact"]),
                      f"[{style[c['status']]}]{escape(status)}[/]",
                      "—" if c.get("max_abs") is None else f"{c['max_abs']:.2g}",
                      "—" if c.get("cosine_min") is None else f"{c['cosine_min']:.5f}",
                      "—" if c.get("top1") is None else f"{c['top1']:.1%}",
                      f"{lat['median']:.2f}" if lat else "—",
                      f"{c['speedup']:.2f}x" if c.get("speedup") else "—", _vs_source(c))
    console.print(table)
