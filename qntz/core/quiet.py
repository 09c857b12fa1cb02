"""Keeping the libraries' own chatter (progress prints, log noise, warnings) off the terminal.

qntz reports what matters itself; warnings are recorded, since some (tracer warnings) are
findings. The redirections are process-wide (qntz.core.process makes and undoes them): the
CLI binds its console to its own copy of stdout, so steps running in parallel never swallow
each other's progress lines.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator

from qntz.core.process import silenced


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised inside, collected instead of printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


# torch's loggers write through handlers bound to the stderr they found at import, which
# swapping sys.stderr misses (`W1203 … symbolic_shapes.py] Unable to find user code
# corresponding to {u0}` during torch.export): with stderr held they go to ERROR too
STDERR_LOGGERS = ("logger:torch",)


@contextlib.contextmanager
def quiet(*loggers: str, stderr: bool = False, fds: bool = False
          ) -> Iterator[list[warnings.WarningMessage]]:
    """Warnings recorded, the named loggers ("" is the root) at ERROR, stdout swallowed;
    with `fds`, whatever C code writes to file descriptors 1 and 2 too (the TorchScript
    exporter dumps its whole IR graph there when it fails). The CLI's consoles write to
    their own copies of those descriptors, so qntz's progress is not swallowed."""
    held = [*(f"logger:{name}" for name in loggers), "stdout",
            *(["stderr", *STDERR_LOGGERS] if stderr else []), *(["fd:1", "fd:2"] if fds else [])]
    with silenced(held), recorded_warnings() as caught:
        yield caught


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
