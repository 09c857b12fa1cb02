"""Scratch folders for third-party tools, inside qntz's cache and removed after use.

Libraries that make temporary files ask `tempfile` (ONNX Runtime's quantization, torch) or
the TMPDIR variable (TensorRT-RTX's native code leaves a `.ses` file there) for a folder;
while a step holds `scratch`, both name one qntz owns. They are process-wide, so they point
at one folder in the cache's temp folder for all steps (never at one step's scratch, which
another step's library might still be using); the last step to let go restores them and
removes the folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qntz.core.process import library_temp


@contextlib.contextmanager
def scratch(ctx: Any, prefix: str = "scratch-") -> Iterator[Path]:
    """A fresh folder for one step's temporary files, removed on exit."""
    base = ctx.temp if ctx.temp.is_dir() else ctx.out.parent  # the runner's, or beside out
    shared = ctx.shared.parent / "tmp" / f"libraries-{os.getpid()}"  # in the cache
    with library_temp(shared), tempfile.TemporaryDirectory(prefix=prefix, dir=base) as folder:
        yield Path(folder)
