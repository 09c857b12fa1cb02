"""qntz: declarative, cached, verified conversion of PyTorch models to deployable artifacts.

The Python API (`qntz.run`, `qntz.load_pipeline`, `qntz.status`) is loaded on first use, so
`qntz --help` and a fully cached run stay fast.
"""

from __future__ import annotations

from typing import Any

import qntz.core.process  # noqa: F401  (ONNX Runtime's telemetry off before it is imported)

__version__ = "0.1.0"

_API = {"run", "status", "load_pipeline", "RunResult", "StepOutcome"}
_ERRORS = {"QntzError", "PipelineError", "StepFailed", "ComparisonFailed"}
__all__ = sorted(_API | _ERRORS | {"__version__"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from qntz import api

        return getattr(api, name)
    if name in _ERRORS:
        from qntz.core import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'qntz' has no attribute {name!r}")
