"""Keeping the libraries' own chatter (progress prints, log noise, warnings) off the terminal.

qntz reports what matters itself; warnings are recorded, since some (tracer warnings) are
findings. The redirections are process-wide: the CLI binds its console to the real stdout,
so steps running in parallel never swallow each other's progress lines.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised inside, collected instead of printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


@contextlib.contextmanager
def quiet(*loggers: str, stderr: bool = False) -> Iterator[list[warnings.WarningMessage]]:
    """Warnings recorded, the named loggers ("" is the root) at ERROR, stdout swallowed."""
    chosen = [logging.getLogger(name or None) for name in loggers]
    levels = [logger.level for logger in chosen]
    for logger in chosen:
        logger.setLevel(logging.ERROR)
    streams = contextlib.ExitStack()
    streams.enter_context(contextlib.redirect_stdout(io.StringIO()))
    if stderr:
        streams.enter_context(contextlib.redirect_stderr(io.StringIO()))
    try:
        with recorded_warnings() as caught, streams:
            yield caught
    finally:
        for logger, level in zip(chosen, levels):
            logger.setLevel(level)


# ONNX Runtime's telemetry writes a session file into $TMPDIR and a database under ~/.cache
# when the library is first imported: qntz writes nowhere but its cache and outputs. This
# module is imported before any step imports ONNX Runtime; an explicit setting is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
