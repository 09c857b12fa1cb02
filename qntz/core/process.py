"""The one home of the process-wide state qntz changes, each change scoped and restored.

A program that uses qntz as a library (the Python API, a notebook) must end a run as it
began: its temporary folder, its streams and file descriptors, its loggers' levels, its
environment and its torch RNG. Everything qntz changes in them is changed here, by a
context manager that restores it; `tests/test_layout.py` holds every other module to that.

One setting is lasting: ONNX Runtime's telemetry is off (`ORT_DISABLE_TELEMETRY`, unless
set already) from the moment qntz is imported, since ONNX Runtime reads it once, when it
is first imported, and would otherwise write outside qntz's folders.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


# -- the temporary folder of libraries ------------------------------------------------------
# Process-wide, so steps running in threads share one folder: the first to ask sets it,
# the last to let go restores the caller's and removes the folder.
_temp_lock = threading.Lock()
_temp_holders = 0
_temp_previous: tuple[str | None, str | None] = (None, None)
_temp_active = ""


@contextlib.contextmanager
def library_temp(folder: Path) -> Iterator[None]:
    """`tempfile.tempdir` and `$TMPDIR` name `folder` while held (created, then removed)."""
    global _temp_holders, _temp_previous, _temp_active
    with _temp_lock:
        if _temp_holders == 0:
            _temp_previous = tempfile.tempdir, os.environ.get("TMPDIR")
            folder.mkdir(parents=True, exist_ok=True)
            _temp_active = tempfile.tempdir = os.environ["TMPDIR"] = str(folder.resolve())
        _temp_holders += 1
    try:
        yield
    finally:
        with _temp_lock:
            _temp_holders -= 1
            if _temp_holders == 0:
                tempfile.tempdir, variable = _temp_previous
                shutil.rmtree(_temp_active, ignore_errors=True)
                _set_variable("TMPDIR", variable)
                _forget_paths_into(_temp_active)


def _forget_paths_into(folder: str) -> None:
    """Variables a library set to a path in the folder being removed (torch's inductor sets
    TORCHINDUCTOR_CACHE_DIR under the temp folder it finds): they would outlive it."""
    for name, value in list(os.environ.items()):
        if value == folder or value.startswith(folder + os.sep):
            del os.environ[name]


# -- environment variables ------------------------------------------------------------------
@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """The variables set while held (a library reading them at import), then restored."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            _set_variable(name, value)


def _set_variable(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


# -- silenced streams, descriptors and loggers ----------------------------------------------
# Steps run in threads (`--jobs`): the first to silence a stream or logger saves it, the
# last to finish restores it, whatever order they finish in.
_quiet_lock = threading.Lock()
_holders: dict[str, tuple[int, object]] = {}


@contextlib.contextmanager
def silenced(names: list[str]) -> Iterator[None]:
    """Each of `names` silenced while held: "stdout", "stderr" (Python's streams),
    "fd:1", "fd:2" (what C code writes there), "logger:NAME" (at ERROR; "" is the root)."""
    for name in names:
        _hold(name)
    try:
        yield
    finally:
        for name in reversed(names):
            _release(name)


def _hold(name: str) -> None:
    with _quiet_lock:
        count, saved = _holders.get(name, (0, None))
        if count == 0:
            saved = _silence(name)
        _holders[name] = (count + 1, saved)


def _release(name: str) -> None:
    with _quiet_lock:
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


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Whatever is printed while held (Python or C level) goes to stderr, so that stdout
    carries one document only (`--json`)."""
    sys.stdout.flush()
    saved, python_stdout = os.dup(1), sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout = python_stdout


def discard_output(stream: object) -> None:
    """Point a stream's descriptor at /dev/null: its reader went away (a closed pipe), and
    the interpreter's flush at exit must not fail on it. Only ever on the way out."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())  # type: ignore[attr-defined]


# -- torch's random numbers -------------------------------------------------------------------
@contextlib.contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """torch's RNG (CPU and every CUDA device) seeded while held, the caller's state put
    back after: a model built from its initialisation is the same model every time."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# -- torch's intra-op threads ---------------------------------------------------------------
@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count is `count` while held (0: left as it is), the caller's
    put back after. Process-wide: a step running beside it in another thread shares it."""
    torch = sys.modules.get("torch")  # a run that never imported torch has none to set
    if not count or torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
