"""The registry of step kinds. Kind modules import heavy libraries only inside `run`."""

from __future__ import annotations

from qntz.steps.base import Step, StepContext
from qntz.steps.capture import Auto, Export, Script, Trace
from qntz.steps.compare import Compare
from qntz.steps.load import Load
from qntz.steps.onnx_export import OnnxExport
from qntz.steps.preflight import Preflight
from qntz.steps.quantize import Quantize
from qntz.steps.simplify import Simplify
from qntz.steps.tensorrt import TensorRT

KINDS: dict[str, type[Step]] = {
    kind.kind: kind
    for kind in (Load, Preflight, Auto, Trace, Script, Export, OnnxExport, Simplify, Quantize,
                 TensorRT, Compare)
}

__all__ = ["KINDS", "Step", "StepContext"]
