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
import sys
import threading
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised inside, collected instead of printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


@contextlib.contextmanager
def quiet(*loggers: str, stderr: bool = False, fds: bool = False
          ) -> Iterator[list[warnings.WarningMessage]]:
    """Warnings recorded, the named loggers ("" is the root) at ERROR, stdout swallowed;
    with `fds`, whatever C code writes to file descriptors 1 and 2 too (the TorchScript
    exporter dumps its whole IR graph there when it fails). The CLI's consoles write to
    their own copies of those descriptors, so qntz's progress is not swallowed."""
    held = [*(f"logger:{name}" for name in loggers), "stdout", *(["stderr"] if stderr else []),
            *(["fd:1", "fd:2"] if fds else [])]
    for name in held:
        _hold(name)
    try:
        with recorded_warnings() as caught:
            yield caught
    finally:
        for name in reversed(held):
            _release(name)


# Steps run in threads (`--jobs`): the first to silence a stream or logger saves it, the
# last to finish restores it, whatever order they finish in.
_lock = threading.Lock()
_holders: dict[str, tuple[int, object]] = {}


def _hold(name: str) -> None:
    with _lock:
        count, saved = _holders.get(name, (0, None))
        if count == 0:
            saved = _silence(name)
        _holders[name] = (count + 1, saved)


def _release(name: str) -> None:
    with _lock:
        count, saved = _holders[name]
        if count == 1:
            del _holders[name]
            _restore(name, saved)
        else:
            _holders[name] = (count - 1, saved)


def _silence(name: str) -> object:
    if name.startswith("fd:"):
        fd = int(name.removeprefix("fd:"))
        _flush_c_streams()
        saved, sink = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
        os.dup2(sink, fd)
        os.close(sink)
        return saved
    if name.startswith("logger:"):
        logger = logging.getLogger(name.removeprefix("logger:") or None)
        level = logger.level
        logger.setLevel(logging.ERROR)
        return level
    saved = getattr(sys, name)
    setattr(sys, name, io.StringIO())
    return saved


def _restore(name: str, saved: object) -> None:
    if name.startswith("fd:"):
        _flush_c_streams()
        os.dup2(saved, int(name.removeprefix("fd:")))  # type: ignore[arg-type]
        os.close(saved)  # type: ignore[arg-type]
        return
    if name.startswith("logger:"):
        logging.getLogger(name.removeprefix("logger:") or None).setLevel(saved)  # type: ignore
    else:
        setattr(sys, name, saved)


def _flush_c_streams() -> None:
    """C's buffered stdio (and C++'s streams, synced with it) written out now, so it lands
    where the descriptor pointed when it was written."""
    import ctypes

    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


def own_stream(stream: object) -> object:
    """A stream on a copy of `stream`'s file descriptor (the same terminal or pipe), which
    `quiet(fds=True)` does not redirect; `stream` itself when it has no descriptor."""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return stream
    stream.flush()  # type: ignore[attr-defined]
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None),
                     errors="replace")


# ONNX Runtime's telemetry writes a session file into $TMPDIR and a database under ~/.cache
# when the library is first imported: qntz writes nowhere but its cache and outputs. This
# module is imported before any step imports ONNX Runtime; an explicit setting is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
