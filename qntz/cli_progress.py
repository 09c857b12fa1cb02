"""What the terminal shows while a pipeline runs: a line per step, a spinner on long ones."""

from __future__ import annotations

import os
import sys
import threading
import time
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


class ConsoleReporter:
    """Prints each finished step; a spinner with elapsed time for each running one. Where
    stdout is no terminal (CI logs), a line when a step starts and a heartbeat every
    `heartbeat` seconds while it runs instead. `quiet`: nothing on the console (the CLI
    still prints errors and its final line); `log`: a second console that gets every line."""

    def __init__(self, console: Console, quiet: bool = False, log: Console | None = None,
                 heartbeat: float = 30.0):
        self.console = console
        self.quiet = quiet
        self.log = log
        self.heartbeat = heartbeat
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._running: dict[str, tuple[str, float]] = {}  # id -> (kind, started at)
        self._closed = threading.Event()
        self._beating: threading.Thread | None = None

    @property
    def _spinner(self) -> bool:
        return self.console.is_terminal and not self.quiet

    def started(self, step_id: str, kind: str) -> None:
        with self._lock:
            self._running[step_id] = (kind, time.monotonic())
            self._say(f"… [bold]{escape(step_id)}[/] [dim]({escape(kind)})[/] started",
                      console=not self._spinner)
            if not self._spinner:
                self._start_heartbeat()
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
            self._running.pop(result.id, None)
            if self._progress is not None and result.id in self._tasks:
                self._progress.remove_task(self._tasks.pop(result.id))
            seconds = f"{result.seconds:.1f}s" if result.state == "ran" else result.state
            detail = {"failed": "(the error follows)", "skipped": result.reason}.get(
                result.state) or describe(result)
            self._say(f"{ICON[result.state]} [bold]{result.id}[/] [dim]({result.kind})"
                      f"[/] {seconds}  {escape(detail)}")
            if not self._tasks:
                self._stop()

    def _say(self, text: str, console: bool = True) -> None:
        if console and not self.quiet:
            self.console.print(text, highlight=False, soft_wrap=True)
        if self.log is not None:
            self.log.print(text, highlight=False, soft_wrap=True)

    def _start_heartbeat(self) -> None:
        if self._beating is None and self.heartbeat > 0 and (self.log or not self.quiet):
            self._beating = threading.Thread(target=self._beat, name="qntz-heartbeat",
                                             daemon=True)
            self._beating.start()

    def _beat(self) -> None:
        """A line per running step every `heartbeat` seconds: a CI log that stays silent
        for minutes looks like a hung job."""
        while not self._closed.wait(self.heartbeat):
            with self._lock:
                now = time.monotonic()
                for sid, (kind, since) in self._running.items():
                    if now - since >= self.heartbeat:
                        self._say(f"… [bold]{escape(sid)}[/] [dim]({escape(kind)})[/] "
                                  f"still running, {now - since:.0f}s")

    @staticmethod
    def _text(step_id: str, what: str) -> str:
        return f"[bold]{escape(step_id)}[/] {escape(what)}"

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        self._closed.set()
        if self._beating is not None:
            self._beating.join()
        with self._lock:
            self._tasks.clear()
            self._running.clear()
            self._stop()


def consoles() -> tuple[Any, Any]:
    """stdout and stderr consoles; NO_COLOR (any value) turns off every style, not only
    colour. Each writes to its own copy of the stream: a step silencing a library's prints,
    at the file-descriptor level too, must not silence qntz."""
    from rich.console import Console

    from qntz.core.process import discard_output
    from qntz.core.quiet import own_stream

    class _Console(Console):
        """rich exits with 1 when the reader of a pipe leaves (`qntz steps | head -1`),
        the code of a failed step, and silences sys.stdout rather than its own copy of
        it: silence this console's stream and raise BrokenPipeError for the CLI instead."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            discard_output(self.file)
            raise BrokenPipeError

    plain = {"color_system": None} if os.environ.get("NO_COLOR") else {}
    stdout, stderr = own_stream(sys.stdout), own_stream(sys.stderr)
    out = _Console(file=stdout, highlight=False, **plain)
    if not out.is_terminal:
        out = _Console(file=stdout, highlight=False, width=120, **plain)
    return out, _Console(file=stderr, highlight=False, **plain)


def log_console(path: str) -> Any:
    """A console appending plain text (no colour, no markup left) to the file at `path`."""
    from rich.console import Console

    return Console(file=open(path, "a", encoding="utf-8"), color_system=None,  # noqa: SIM115
                   force_terminal=False, highlight=False, width=120)
