"""`tensorrt`: build an engine from ONNX through Polygraphy and prove its precision."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError
from qntz.core.step import Step, StepContext

if TYPE_CHECKING:
    from qntz.core.hashing import FileDigests
    from qntz.core.spec import Pipeline, StepSpec

DIMS3 = {"type": "array", "items": {"type": "integer", "minimum": 0}}
PROFILE = {"type": "object", "additionalProperties": {
    "type": "object", "required": ["min", "opt", "max"], "additionalProperties": False,
    "properties": {"min": DIMS3, "opt": DIMS3, "max": DIMS3}}}


def _toolchain(step: StepSpec, pipeline: Pipeline) -> tuple[str, str]:
    """The TensorRT flavour and version this step builds with; refuses what it lacks."""
    from qntz.tensorrt import env as tensorrt_env

    where = pipeline.where(*step.at)
    flavour, version = tensorrt_env.resolve(step.params["runtime"], where)
    legacy = step.params["builder_flags"] or step.params["implicit_calibration"]
    if legacy and tensorrt_env.is_strongly_typed_only(flavour, version):
        raise PipelineError(
            f"{flavour} {version} has no builder precision flags or implicit calibration",
            where=where, hint="remove builder_flags / implicit_calibration and set "
            "`precision:` (qntz converts or quantizes the ONNX model)")
    return flavour, version


class TensorRT(Step):
    kind = "tensorrt"
    version = 2  # the build time moved from layers.json / layers.md to timing.json
    help = "build a TensorRT engine (strongly typed: precision comes from the ONNX model)"
    params = {
        "runtime": {"enum": ["auto", "tensorrt", "tensorrt-rtx"], "default": "auto"},
        "precision": {"enum": ["fp32", "fp16", "bf16", "int8", "fp8"], "default": "fp32"},
        "calibration": {"type": ["object", "null"], "default": None,
                        "description": "int8 from float ONNX: {data, method, samples}",
                        "additionalProperties": False, "required": ["data"],
                        "properties": {"data": {"type": "string"},
                                       "method": {"enum": ["minmax", "entropy", "percentile"]},
                                       "samples": {"type": "integer", "minimum": 1}}},
        "profiles": {"type": "array", "items": PROFILE, "default": [],
                     "description": "extra shape profiles: [{input: {min, opt, max}}]"},
        "workspace": {"type": ["integer", "null"], "minimum": 1, "default": None,
                      "description": "workspace limit in MiB"},
        "compute_capabilities": {"type": "array", "default": ["8.6"], "minItems": 1,
                                 "items": {"type": "string", "pattern": r"^\d+\.\d+$"},
                                 "description": "TensorRT-RTX ahead-of-time targets"},
        "hardware_compatibility": {"enum": ["none", "ampere_plus", "same_compute_capability"],
                                   "default": "none", "description": "full TensorRT only"},
        "timing_cache": {"type": "boolean", "default": True},
        "min_coverage": {"type": "number", "minimum": 0, "maximum": 1, "default": 1.0,
                         "description": "share of compute layers that must be in `precision`"},
        "builder_flags": {"type": "array", "default": [],
                          "items": {"enum": ["fp16", "bf16", "int8", "fp8", "tf32"]},
                          "description": "TensorRT 8.6-10.x only (removed in TensorRT 11)"},
        "implicit_calibration": {"type": ["string", "null"], "default": None,
                                 "description": "TensorRT 8.6-10.x only: dataset for the "
                                 "implicit INT8 calibrator"},
    }
    libraries = ("polygraphy", "onnx", "numpy", "protobuf", "ml_dtypes")  # TensorRT: key_extras
    consumes = ("onnx",)
    provides = ("engine",)

    @classmethod
    def check(cls, step: StepSpec, pipeline: Pipeline) -> None:
        _toolchain(step, pipeline)
        if step.params["implicit_calibration"]:
            from qntz.core.data import dataset_spec
            dataset_spec(pipeline, step.params["implicit_calibration"], pipeline.where(*step.at))

    @classmethod
    def key_extras(cls, step: StepSpec, pipeline: Pipeline, digests: FileDigests) -> dict:
        from qntz.tensorrt import env as tensorrt_env

        flavour, version = _toolchain(step, pipeline)
        extras: dict[str, Any] = {"runtime": flavour, "runtime_version": version}
        if flavour == "tensorrt":  # built for the GPU at hand
            extras["gpus"] = [g["compute_capability"] for g in tensorrt_env.gpus()]
        if step.params["implicit_calibration"]:
            from qntz.core.data import data_digest
            extras["data"] = data_digest(pipeline, step.params["implicit_calibration"], digests)
        return extras

    @classmethod
    def resources(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Full TensorRT builds for the GPU it runs on; TensorRT-RTX builds ahead of time
        on any CPU. Pin a GPU type with the step's `resources: {accelerator_type: ...}`."""
        from qntz.tensorrt import env as tensorrt_env

        flavour = "tensorrt" if params["runtime"] == "tensorrt" or (
            params["runtime"] == "auto" and tensorrt_env.version_of("tensorrt")) else "rtx"
        return {"num_cpus": 1, "num_gpus": 1} if flavour == "tensorrt" else {"num_cpus": 1}

    @classmethod
    def implicit_steps(cls, step: StepSpec, steps: dict[str, StepSpec],
                       pipeline: Pipeline) -> list[tuple[str, str, dict[str, Any]]]:
        from qntz.tensorrt.plan import implicit_conversion

        return implicit_conversion(step, steps, pipeline)

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        s = summary
        if "engine_bytes" not in s:
            return super().describe(s)
        coverage = s.get("precision_coverage")
        checked = f", {coverage:.0%} of compute layers {s['precision']}" if coverage else ""
        return (f"{s['runtime']} {s['runtime_version']}, {s['precision']} engine "
                f"{s['engine_bytes'] / 1024:.0f} KiB for {', '.join(s['targets'])}{checked}")

    def run(self, ctx: StepContext) -> dict[str, Any]:
        from qntz.core.scratch import scratch
        from qntz.tensorrt.build import build
        from qntz.tensorrt.layers_report import markdown

        start = time.perf_counter()
        with scratch(ctx, "tensorrt-"):
            summary = build(ctx)
        seconds = round(time.perf_counter() - start, 3)
        (ctx.out / "layers.json").write_text(json.dumps(summary, indent=1))
        (ctx.out / "layers.md").write_text(markdown(summary, ctx.step.id))
        (ctx.out / "timing.json").write_text(json.dumps({"build_seconds": seconds}))
        return {**{k: v for k, v in summary.items() if k not in ("compute_layers",)},
                "build_seconds": seconds, "volatile": ["timing.json"]}
