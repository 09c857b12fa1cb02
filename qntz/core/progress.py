"""What the terminal shows while a pipeline runs: a line per step, a spinner on long ones."""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from qntz.core.registry import KINDS

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from qntz.core.runner import StepResult

ICON = {"ran": "[green]✓[/]", "cached": "[dim]•[/]", "pulled": "[cyan]↓[/]", "failed": "[red]✗[/]",
        "skipped": "[yellow]-[/]"}


def describe(result: Any) -> str:
    """A short line of what the step made: its kind says, from the step's summary."""
    kind = KINDS.get(result.kind)
    return kind.describe(result.summary) if kind is not None else ""


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
                from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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


def consoles() -> tuple[Any, Any]:
    """stdout and stderr consoles; NO_COLOR (any value) turns off every style, not only
    colour. Each writes to its own copy of the stream: a step silencing a library's prints,
    at the file-descriptor level too, must not silence qntz."""
    from rich.console import Console

    from qntz.core.quiet import own_stream

    plain = {"color_system": None} if os.environ.get("NO_COLOR") else {}
    stdout, stderr = own_stream(sys.stdout), own_stream(sys.stderr)
    out = Console(file=stdout, highlight=False, **plain)
    if not out.is_terminal:
        out = Console(file=stdout, highlight=False, width=120, **plain)
    return out, Console(file=stderr, highlight=False, **plain)
