"""`preflight`: before converting, which capture methods give a correct model, and why not."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.core.step import Step, StepContext
from qntz.core.wording import plural
from qntz.preflight.findings import METHODS

if TYPE_CHECKING:
    from qntz.core.spec import Pipeline, StepSpec

PREFERENCE = ("export", "trace", "script")  # torch.export is where PyTorch is going


class Preflight(Step):
    kind = "preflight"
    version = 6  # frozen device run elsewhere; List[Tensor] forwards; capture at size 2
    help = "try trace, script and export on the live model; find what breaks each, and where"
    params = {
        "methods": {"type": "array", "items": {"enum": list(METHODS)}, "default": list(METHODS),
                    "description": "capture methods to try"},
        "opset": {"type": ["integer", "null"], "default": None,
                  "description": "ONNX opset to check (default: the pipeline's onnx step)"},
        "onnx": {"type": "boolean", "default": True, "description": "check the ONNX export"},
        "fail_on": {"enum": ["error", "warning", "never"], "default": "error",
                    "description": "findings for the methods this pipeline uses that fail it"},
    }
    libraries = ("torch", "numpy", "onnx", "onnxscript", "onnx_ir", "protobuf", "ml_dtypes",
                 "onnxruntime")  # the ONNX check runs the exported file
    consumes_model = True
    provides = ("preflight",)

    @classmethod
    def key_extras(cls, step: StepSpec, pipeline: Pipeline, digests: Any) -> dict:
        return {"opset": _opset(step, pipeline), "uses": sorted(_pipeline_methods(pipeline))}

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        s = summary
        if "verdicts" not in s:
            return ""
        verdicts = ", ".join(f"{m} {v}" for m, v in s["verdicts"].items())
        advice = f"use {s['recommendation']}" if s["recommendation"] else \
            "no safe method; its eager ONNX agrees (auto exports it)" if s.get("eager_onnx") \
            else "no safe method"
        return (f"{advice} ({verdicts}); {plural(s['counts']['error'], 'error')}, "
                f"{plural(s['counts']['warning'], 'warning')} in {s['seconds']:.1f}s")

    def run(self, ctx: StepContext) -> dict[str, Any]:
        from qntz.core.scratch import scratch
        from qntz.preflight.report import markdown

        start = time.perf_counter()
        with scratch(ctx, "preflight-") as folder:
            report = check_model(ctx, folder)
        seconds = round(time.perf_counter() - start, 2)
        (ctx.out / "report.json").write_text(json.dumps(report, indent=1))
        (ctx.out / "report.md").write_text(markdown(report, ctx.pipeline.name))
        (ctx.out / "timing.json").write_text(json.dumps({"seconds": seconds}))
        summary = {**{k: report[k] for k in ("verdicts", "recommendation", "counts",
                                             "eager_onnx")},
                   "seconds": seconds, "volatile": ["timing.json"]}
        blocking, methods = _blocking(report, ctx.params["fail_on"], ctx.extras["uses"])
        if blocking:
            first = blocking[0]
            summary["failed"] = (f"{len(blocking)} finding(s) block {', '.join(methods)}; "
                                 f"first: [{first['rule']}] {first['message']} at "
                                 f"{first['file']}:{first['line']} (fix: {first['fix']})")
        return summary


def _opset(step: StepSpec, pipeline: Pipeline) -> int:
    if step.params["opset"] is not None:
        return step.params["opset"]
    onnx_steps = [s for s in pipeline.steps.values() if s.kind == "onnx"]
    return onnx_steps[0].params["opset"] if onnx_steps else 17


def _pipeline_methods(pipeline: Pipeline) -> set[str]:
    """The capture methods this pipeline uses (all three when it picks automatically)."""
    used = set()
    for spec in pipeline.steps.values():
        if spec.kind in METHODS:
            method = spec.params.get("method", spec.kind)
            used |= set(METHODS) if method == "auto" else {spec.kind}
        elif spec.kind == "auto":
            used |= set(METHODS)
    return used or set(METHODS)


def _blocking(report: dict[str, Any], fail_on: str, uses: list[str]
              ) -> tuple[list[dict[str, Any]], list[str]]:
    """The findings that fail the run, and the methods they block: `fail_on` applies to
    the method the pipeline captures with (with `capture: auto`, the recommended one)."""
    if fail_on == "never":
        return [], []
    severities = {"error"} if fail_on == "error" else {"error", "warning"}
    auto = set(uses) == set(METHODS)
    if auto and report["recommendation"]:
        uses = [report["recommendation"]]  # auto captures with the safe method
    elif auto and report["eager_onnx"]:
        uses = []  # no method works: auto hands the eager model to the onnx step
    relevant = set(uses) | {"onnx"}
    found = [f for f in report["findings"]
             if f["severity"] in severities and relevant & set(f["methods"])]
    blocked = [m for m in [*METHODS, "onnx"] if any(m in f["methods"] for f in found)
               and m in relevant]
    return found, blocked


def check_model(ctx: StepContext, scratch: Path) -> dict[str, Any]:
    """The findings; `scratch` takes the files the ONNX export check writes."""
    from qntz.preflight.checks import Checks
    from qntz.preflight.methods import try_export, try_onnx, try_script, try_trace

    model = ctx.live_model()  # as loaded: preflight runs before any capture
    checks = Checks(pristine_copy(model), ctx.pipeline.inputs, ctx.extras["opset"],
                    ctx.report, ctx.extras["uses"], scratch, lambda: pristine_copy(model))
    ctx.report("general rules")
    output = checks.general()
    if output is not None:
        for method, attempt in (("trace", try_trace), ("script", try_script),
                                ("export", try_export)):
            if method in ctx.params["methods"]:
                ctx.report(method)
                attempt(checks)
        if ctx.params["onnx"]:
            ctx.report(f"ONNX at opset {ctx.extras['opset']}")
            try_onnx(checks)
    checks.judge()
    verdicts = {m: _verdict(m, checks) for m in ctx.params["methods"]}
    if "onnx" in checks.verdicts:
        verdicts["onnx"] = checks.verdicts["onnx"]
    from qntz.core.model_source import display_path
    from qntz.preflight.checks import other_methods

    findings = [f.as_dict() for f in checks.findings]
    for finding in findings:
        finding["fix"] = other_methods(finding["fix"], finding["methods"], verdicts)
        if finding["file"]:
            finding["file"] = display_path(finding["file"], ctx.pipeline.root)
    recommendation = recommend(verdicts)
    return {"verdicts": verdicts, "recommendation": recommendation,
            "eager_onnx": recommendation is None and checks.eager_onnx,
            "findings": findings, "opset": ctx.extras["opset"], "uses": ctx.extras["uses"],
            "counts": {s: sum(f["severity"] == s for f in findings)
                       for s in ("error", "warning")}}


def pristine_copy(model: Any) -> Any:
    """A deep copy of the model as loaded, never run: each method, and the eager reference,
    gets its own, so what one forward caches on a module (a detector's anchors, created
    under no_grad or inference_mode) reaches neither another method nor the pipeline's
    capture. A model that cannot be copied is used itself."""
    import copy

    try:
        return copy.deepcopy(model)
    except Exception:
        return model


def _verdict(method: str, checks: Any) -> str:
    if checks.verdicts.get(method, "fails") == "fails":
        return "fails"
    return "risky" if any(method in f.methods for f in checks.findings) else "ok"


def recommend(verdicts: dict[str, str]) -> str | None:
    for wanted in ("ok", "risky"):
        for method in PREFERENCE:
            if verdicts.get(method) == wanted:
                return method
    return None
