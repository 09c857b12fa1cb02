"""Where a `tensorrt` step's precision comes from, decided when the pipeline is read.

TensorRT 11 and TensorRT-RTX build strongly typed networks: an fp16 engine needs an fp16
ONNX model, an int8 engine a Q/DQ model made for TensorRT. When the input is float32,
qntz inserts the conversion as a step of its own (`<id>.fp16`, `<id>.int8`), cached and
laid out like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError

if TYPE_CHECKING:
    from qntz.core.spec import Pipeline, StepSpec


def _onnx_source(step: StepSpec, steps: dict[str, StepSpec]) -> StepSpec | None:
    from qntz.core.pipeline import provided_by

    sources = [steps[n] for n in step.needs if n in steps and "onnx" in provided_by(steps[n])]
    return sources[-1] if sources else None


def implicit_conversion(step: StepSpec, steps: dict[str, StepSpec],
                        pipeline: Pipeline) -> list[tuple[str, str, dict[str, Any]]]:
    params, where = step.params, pipeline.where(*step.at)
    precision = params["precision"]
    if params["builder_flags"] or params["implicit_calibration"]:
        return []  # TensorRT <= 10: the builder sets precision
    source = _onnx_source(step, steps)
    if source is None:
        return []  # reported by the check that every step gets what it consumes
    made = source.params if source.kind == "quantize" else {}
    if precision in ("fp16", "bf16"):
        if made.get("precision") == precision:
            return []
        return [(f"{step.id}.{precision}", "quantize", {"precision": precision})]
    if precision == "int8":
        return _int8(step, source, made, where)
    if precision == "fp8" and source.kind != "load":
        raise PipelineError("fp8 engines need an FP8 Q/DQ ONNX model (e.g. from NVIDIA "
                            "ModelOpt)", where=where, hint="load it with `model: {onnx: ...}`")
    return []


def _int8(step: StepSpec, source: StepSpec, made: dict[str, Any],
          where: str) -> list[tuple[str, str, dict[str, Any]]]:
    if made.get("precision") == "int8":
        if made.get("target") != "tensorrt":
            raise PipelineError(
                f"'{source.id}' quantized for ONNX Runtime (uint8 activations, int32 bias), "
                "which the TensorRT ONNX parser rejects", where=where,
                hint=f"set `target: tensorrt` on '{source.id}', or give this step "
                     "`calibration: {data: NAME}`")
        return []
    calibration = step.params["calibration"]
    if calibration is None:
        if source.kind == "load":
            return []  # a Q/DQ model from elsewhere; the build verifies it
        raise PipelineError(
            "an int8 engine needs a Q/DQ model, and its input is float", where=where,
            hint="add `calibration: {data: NAME}` to this step, or a `quantize` step with "
                 "`target: tensorrt` before it")
    given = {"precision": "int8", "target": "tensorrt", **calibration}
    return [(f"{step.id}.int8", "quantize", given)]
