"""Which TensorRT is here (full TensorRT or TensorRT-RTX), its version, and the GPU, if any.

Everything here answers without importing TensorRT, so planning a run stays cheap.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from functools import cache
from importlib import metadata
from typing import Any

from qntz.core.errors import PipelineError

MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
DISTRIBUTIONS = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
    "tensorrt-rtx": ("tensorrt-rtx", "tensorrt_rtx"),
}
INSTALL_HINT = {
    "tensorrt-rtx": 'pip install "qntz[tensorrt-rtx]" (builds engines ahead of time, '
                    "even on a machine without a GPU)",
    "tensorrt": "install full TensorRT for your CUDA version (pip install tensorrt-cu12, or "
                "NVIDIA's tar/deb packages) on a machine with an NVIDIA GPU",
}


@cache
def version_of(flavour: str) -> str | None:
    """The installed version of a TensorRT flavour, or None (reads metadata only)."""
    if importlib.util.find_spec(MODULES[flavour]) is None:
        return None
    for name in DISTRIBUTIONS[flavour]:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def resolve(runtime: str, where: str) -> tuple[str, str]:
    """`auto` takes full TensorRT where it is installed and TensorRT-RTX otherwise."""
    order = ["tensorrt", "tensorrt-rtx"] if runtime == "auto" else [runtime]
    for flavour in order:
        version = version_of(flavour)
        if version is not None:
            return flavour, version
    wanted = "TensorRT or TensorRT-RTX" if runtime == "auto" else runtime
    hint = INSTALL_HINT["tensorrt-rtx"] if runtime != "tensorrt" else INSTALL_HINT["tensorrt"]
    if runtime == "auto":
        hint += "; or for full TensorRT: " + INSTALL_HINT["tensorrt"]
    raise PipelineError(f"{wanted} is not installed", where=where, hint=hint)


def major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def is_strongly_typed_only(flavour: str, version: str) -> bool:
    """TensorRT 11 and TensorRT-RTX removed precision flags and implicit calibration."""
    return flavour == "tensorrt-rtx" or major(version) >= 11


@cache
def gpus() -> tuple[dict[str, Any], ...]:
    """NVIDIA GPUs of this machine with their compute capability (empty without one)."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ()
    found = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            found.append({"name": parts[0], "compute_capability": parts[1], "driver": parts[2]})
    return tuple(found)


_active: list[str] = []


def import_tensorrt(flavour: str) -> Any:
    """Import the flavour's module with Polygraphy pointed at it.

    Polygraphy binds its TensorRT module when its backend is first imported, so one
    process serves one flavour.
    """
    if _active and _active[0] != flavour:
        raise PipelineError(f"this run already uses {_active[0]}; one TensorRT flavour per run",
                            hint="set the same `runtime:` on every tensorrt step")
    import contextlib
    import io

    from qntz.core.process import environment

    # Polygraphy reads the variable when its config is first imported; later, its value
    # is the module attribute set below
    with environment(POLYGRAPHY_USE_TENSORRT_RTX="1" if flavour == "tensorrt-rtx" else "0"), \
            contextlib.redirect_stdout(io.StringIO()):  # its logger announces missing colours
        import polygraphy.config as polygraphy_config
        from polygraphy.logger import logger as polygraphy_logger

        polygraphy_logger.has_colors()

    polygraphy_config.USE_TENSORRT_RTX = flavour == "tensorrt-rtx"
    _rebind_polygraphy()
    import importlib

    module = importlib.import_module(MODULES[flavour])
    _active[:] = [flavour]
    return module


def _rebind_polygraphy() -> None:
    """Each Polygraphy module binds its `trt` when it is first imported, to the flavour
    configured then; another library may have imported them first (MONAI imports Polygraphy's
    TensorRT backend), bound to full TensorRT. Rebind them to the flavour now configured."""
    import sys

    from polygraphy.mod.trt_importer import lazy_import_trt

    for name, module in list(sys.modules.items()):
        bound = getattr(module, "trt", None) if name.startswith("polygraphy.") else None
        if type(bound).__name__ == "LazyModule":
            module.trt = lazy_import_trt()
