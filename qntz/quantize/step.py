"""`quantize`: INT8 (calibrated Q/DQ or dynamic) or FP16 ONNX, verified and within budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError, first_line
from qntz.core.schema import MAX_SAMPLES
from qntz.core.step import Step, StepContext
from qntz.core.wording import plural

if TYPE_CHECKING:
    from qntz.core.hashing import FileDigests
    from qntz.core.spec import Pipeline, StepSpec

NAMES = {"type": ["array", "null"], "items": {"type": "string"}, "default": None}


class Quantize(Step):
    kind = "quantize"
    version = 7  # 7-bit weights for ONNX Runtime (reduce_range)
    help = "INT8 (calibrated Q/DQ, or dynamic) or FP16 ONNX for ONNX Runtime and TensorRT"
    params = {
        "precision": {"enum": ["int8", "fp16", "bf16"], "default": "int8",
                      "description": "bf16 is for TensorRT (ONNX Runtime's CPU kernels lack it)"},
        "recipe": {"enum": ["auto", "static", "dynamic"], "default": "auto",
                   "description": "auto: dynamic for transformer graphs, static Q/DQ otherwise"},
        "target": {"enum": ["onnxruntime", "tensorrt"], "default": "onnxruntime",
                   "description": "tensorrt: symmetric int8, no bias quantization"},
        "data": {"type": ["string", "null"], "default": None,
                 "description": "calibration dataset from `data:` (default: generated)"},
        "samples": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES, "default": 16,
                    "description": "calibration batches"},
        "method": {"enum": ["minmax", "entropy", "percentile"], "default": "minmax"},
        "percentile": {"type": "number", "exclusiveMinimum": 0, "maximum": 100,
                       "default": 99.999},
        "per_channel": {"type": "boolean", "default": True},
        "reduce_range": {"type": "boolean", "default": True,
                         "description": "target onnxruntime: 7-bit weights. ONNX Runtime's x86 "
                         "kernels without VNNI (AVX2, AVX-512 without VNNI) saturate the "
                         "products of 8-bit weights (the encoder example on an AVX2 CPU: mean "
                         "cosine 0.9916 at 8 bits, 0.9999 at 7); false: full 8-bit weights, "
                         "for models that run only on VNNI or ARM CPUs"},
        "preprocess": {"type": "boolean", "default": True},
        "fuse": {"type": "boolean", "default": True,
                 "description": "dynamic int8 of a transformer for ONNX Runtime: fuse attention "
                 "and normalization first (each fusion checked against the float model)"},
        "op_types": {**NAMES, "description": "quantize only these op types"},
        "nodes": {**NAMES, "description": "quantize only these nodes"},
        "exclude_op_types": {"type": "array", "items": {"type": "string"}, "default": [],
                             "description": "op types kept in float (fp16: in float32)"},
        "exclude_nodes": {"type": "array", "items": {"type": "string"}, "default": []},
        "float_edges": {"type": "boolean", "default": True,
                        "description": "static int8 for ONNX Runtime: the weighted nodes "
                        "reading a graph input stay float (when 3 or more others are "
                        "quantized)"},
        "keep_io_types": {"type": "boolean", "default": True,
                          "description": "fp16: inputs and outputs stay float32"},
        "max_drop": {"type": ["number", "null"], "minimum": 0, "default": None,
                     "description": "accuracy budget in `metric`; sensitive nodes stay float"},
        "metric": {"enum": ["cosine", "top1"], "default": "cosine",
                   "description": "cosine: 1 - mean cosine; top1: 1 - arg-max agreement"},
        "min_top1": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1},
                               {"enum": [None, "auto"]}], "default": "auto",
                     "description": "without max_drop: fail when top-1 agreement with the "
                     "float model on the calibration data is lower (null: no check; auto: 0.85 "
                     "on `data`, no check on generated data); with or without it, the step "
                     "also fails below the top1/cosine threshold a compare step needing it "
                     "sets for it"},
        "min_cosine": {"type": ["number", "null"], "minimum": -1, "maximum": 1,
                       "default": 0.98, "description": "without max_drop: fail when the mean "
                       "cosine on the calibration data is lower (null: no check)"},
        "bias_correction": {"type": "boolean", "default": True,
                            "description": "static int8: take each quantized Conv/Gemm's "
                            "mean output shift from weight rounding off its bias"},
    }
    # onnxscript rewrites the fusions; ONNX Runtime's tools package (shape inference) imports
    # torch, so a torch upgrade re-runs quantize too
    libraries = ("onnx", "onnxruntime", "numpy", "protobuf", "ml_dtypes",
                 "onnxscript", "onnx_ir", "torch")
    consumes = ("onnx",)
    provides = ("onnx",)

    @classmethod
    def check(cls, step: StepSpec, pipeline: Pipeline) -> None:
        from qntz.core.data import check_spec, dataset_spec

        name = step.params["data"]
        dataset_spec(pipeline, name, pipeline.where(*step.at, "data"))
        if name:
            check_spec(pipeline, name)
        if step.params["precision"] != "int8" and step.params["max_drop"] is not None:
            raise PipelineError("`max_drop` applies to int8", where=pipeline.where(*step.at),
                                hint="remove max_drop, or exclude ops with exclude_op_types")

    @classmethod
    def key_extras(cls, step: StepSpec, pipeline: Pipeline, digests: FileDigests) -> dict:
        from qntz.core.data import data_digest
        from qntz.quantize.bars import compare_bars
        from qntz.runtime.onnx_files import threshold_key

        if step.params["precision"] != "int8":
            return threshold_key()  # another external-data threshold writes other files
        return {"data": data_digest(pipeline, step.params["data"], digests),
                "compare_bars": compare_bars(pipeline, step.id), **threshold_key()}

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        s = summary
        if "precision" not in s:
            return super().describe(s)
        if s["precision"] in ("fp16", "bf16"):
            return (f"{s['precision']}: {plural(s['half_weights'], s['precision'] + ' weight')}, "
                    f"{plural(s['casts'], 'cast')}")
        acc, cov = s["accuracy"], s["coverage"]
        kept = (f", {len(s['kept_float_for_budget'])} kept float for the budget"
                if s["kept_float_for_budget"] else "")
        warning = f"; warning: {s['warnings'][0]}" if s.get("warnings") else ""
        return (f"int8 {s['recipe']['mode']}: {plural(cov['quantized_nodes'], 'node')} "
                f"quantized{kept}; on calibration data{_top1(acc)} "
                f"cosine {acc['cosine']['mean']:.4f}{warning}")

    def run(self, ctx: StepContext) -> dict[str, Any]:
        source = ctx.input_providing("onnx")
        path = source.file("model.onnx")
        if ctx.params["precision"] in ("fp16", "bf16"):
            summary = _half(ctx, path)
        else:
            from qntz.quantize.int8 import quantize_step

            summary = quantize_step(ctx, path)
        summary["source"] = source.step_id
        (ctx.out / "quantize.json").write_text(json.dumps(summary, indent=1))
        return summary


def _half(ctx: StepContext, path: Path) -> dict[str, Any]:
    import onnx

    from qntz.quantize.ort_tools import convert_fp16, retype_bf16
    from qntz.quantize.precision_check import PrecisionMismatch, check_half
    from qntz.runtime.onnxinfo import describe

    precision, target = ctx.params["precision"], ctx.out / "model.onnx"
    try:
        kept = convert_fp16(path, target, ctx.params)
        if precision == "bf16":
            retype_bf16(target)
    except Exception as exc:
        raise ctx.fail(f"{precision.upper()} conversion failed: {first_line(exc)}",
                       hint="keep the failing op in float32 with exclude_op_types") from exc
    try:
        verified = check_half(onnx.load(str(target)), precision, ctx.params["keep_io_types"])
    except PrecisionMismatch as exc:
        raise ctx.fail(f"asked for {precision}, got another precision: {exc}",
                       hint="check exclude_op_types / exclude_nodes") from exc
    return {"precision": precision, "kept_float32_ops": ctx.params["exclude_op_types"],
            "blocked_by_default": len(kept), **verified, **describe(target)}


def _top1(accuracy: dict[str, Any]) -> str:
    top1 = accuracy["top1"]["agreement"]
    return "" if top1 is None else f" top-1 {top1:.1%},"
