"""`onnxruntime-optimize`: the ONNX model as ONNX Runtime rewrites it before running it.

ONNX Runtime folds constants, fuses operators and drops redundant nodes each time it loads
a model; this step saves the result once, so deployment loads the optimized graph and
`compare` checks it like any other candidate. `basic` rewrites are portable; `extended`
fusions use operators of ONNX Runtime's own domain (`com.microsoft`), so the model then
needs ONNX Runtime to run.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from qntz.core.step import Section, Step, StepContext, Table

if TYPE_CHECKING:
    from qntz.core.cache import Artifact

LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}


class OrtOptimize(Step):
    kind = "onnxruntime-optimize"
    api_version = 1
    version = 1
    help = "save the ONNX model as ONNX Runtime's graph optimizations rewrite it"
    params = {
        "level": {"enum": list(LEVELS), "default": "basic",
                  "description": "basic: portable rewrites; extended: ORT's own fused ops"},
    }
    libraries = ("onnxruntime", "onnx", "numpy")
    consumes = ("onnx",)
    provides = ("onnx",)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        import onnx
        import onnxruntime as ort

        source = ctx.input_providing("onnx").file("model.onnx")
        target = ctx.out / "model.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   LEVELS[ctx.params["level"]])
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        before, after = onnx.load(str(source)).graph, onnx.load(str(target)).graph
        ops = Counter(n.op_type for n in after.node) - Counter(n.op_type for n in before.node)
        return {"level": ctx.params["level"], "nodes_before": len(before.node),
                "nodes": len(after.node), "new_ops": dict(sorted(ops.items()))}

    @classmethod
    def report_section(cls, artifact: Artifact) -> Section:
        summary = artifact.summary
        new_ops = summary.get("new_ops") or {}
        return Section(
            title="ONNX Runtime graph optimization",
            facts=[("level", summary.get("level")), ("nodes before", summary.get("nodes_before")),
                   ("nodes after", summary.get("nodes"))],
            tables=[Table(["operator", "added"], sorted(new_ops.items()),
                          caption="operators the rewrite introduced")] if new_ops else [],
            notes=["extended fusions need ONNX Runtime to run the model"]
            if summary.get("level") == "extended" else [])
