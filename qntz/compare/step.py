"""`compare`: every candidate against the reference, on inputs unlike the capture example."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError
from qntz.core.inputs import MAX_ELEMENTS
from qntz.core.schema import MAX_SAMPLES
from qntz.core.step import Step, StepContext

if TYPE_CHECKING:
    from qntz.core.hashing import FileDigests
    from qntz.core.spec import Pipeline, StepSpec

METRIC = {"enum": ["auto", "allclose", "top1", "cosine"],
          "description": "what decides pass: auto (per input: allclose at 1e-4/1e-3, or both "
          "sides near zero, or max abs error within `scale` of the reference's RMS, or as "
          "close as eager's own change under rounding noise), "
          "allclose (atol/rtol only), top1 agreement or mean cosine at least `threshold`; "
          "setting atol or rtol means allclose"}
THRESHOLD = {"type": "number", "minimum": 0, "maximum": 1}
SCALE = {"type": "number", "minimum": 0, "maximum": 1,
         "description": "auto: max abs error allowed as a fraction of the reference's RMS"}
MATCH = {"enum": ["order", "rows"],
         "description": "rows: a variable-length output (a detector's boxes, scores, labels) "
         "is compared after each candidate row is matched to its nearest reference row; the "
         "counts must agree"}
TOLERANCE = {"type": "object", "additionalProperties": False,
             "properties": {"atol": {"type": "number", "minimum": 0},
                            "rtol": {"type": "number", "minimum": 0},
                            "metric": METRIC, "threshold": THRESHOLD, "scale": SCALE,
                            "match": MATCH}}


class Compare(Step):
    kind = "compare"
    version = 8  # a failure carries one fix; a candidate not built is a row
    help = "run the reference and every candidate on fresh inputs; fail beyond tolerance"
    params = {
        "reference": {"type": ["string", "null"], "default": None,
                      "description": "step whose model is the reference (default: the model)"},
        "atol": {"type": ["number", "null"], "minimum": 0, "default": None,
                 "description": "absolute tolerance (default 1e-4 under metric auto)"},
        "rtol": {"type": ["number", "null"], "minimum": 0, "default": None,
                 "description": "relative tolerance (default 1e-3 under metric auto)"},
        "metric": {**METRIC, "default": "auto"},
        "threshold": {**THRESHOLD, "default": 0.99},
        "scale": {**SCALE, "default": 1e-3},
        "tolerances": {"type": "object", "default": {}, "additionalProperties": TOLERANCE,
                       "description": "per candidate step id: {atol, rtol, metric, threshold, "
                                      "scale}"},
        "outputs": {"type": "object", "default": {}, "additionalProperties": TOLERANCE,
                    "description": "per output name (dict keys, dotted for nested outputs): "
                                   "{atol, rtol, metric, threshold, scale}"},
        "data": {"type": ["string", "null"], "default": None,
                 "description": "compare on this dataset instead of generated inputs"},
        "samples": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES, "default": 2,
                    "description": "random draws per size variant"},
        "sizes": {"type": ["array", "null"], "default": None, "maxItems": 64,
                  "items": {"type": "object", "additionalProperties": {
                      "type": "integer", "minimum": 1, "maximum": MAX_ELEMENTS}},
                  "description": "dim sizes to test, e.g. [{batch: 1}, {batch: 16}]"},
        "seed": {"type": "integer", "minimum": 0, "default": 1000},
        "require": {"type": "array", "items": {"type": "string"}, "default": [],
                    "description": "candidates that must run here: a 'not run' row fails"},
        "iterations": {"type": "integer", "minimum": 0, "maximum": MAX_SAMPLES, "default": 20,
                       "description": "timed runs per model for latency (0: no timing)"},
        "warmup": {"type": "integer", "minimum": 0, "maximum": MAX_SAMPLES, "default": 3},
        "threads": {"type": "integer", "minimum": 0, "maximum": 1024, "default": 1,
                    "description": "threads each model is timed on (ONNX Runtime's intra-op "
                    "and PyTorch's). 1: per-core figures, timed by the CPU time of the thread "
                    "that runs the model, which other processes' load does not change; 0: "
                    "every core, timed by the wall clock (figures move with the machine's "
                    "load). Accuracy runs always use every core"},
        "provider": {"enum": ["cpu", "cuda", "tensorrt"], "default": "cpu",
                     "description": "ONNX Runtime's execution provider for ONNX candidates "
                     "(cuda, tensorrt: onnxruntime-gpu); latency is measured there"},
        "device": {"type": ["string", "null"], "pattern": "^(cpu|cuda(:[0-9]+)?)$",
                   "default": None, "description": "where TorchScript and ExportedProgram "
                   "candidates run (cpu, cuda, cuda:N; default: where they were captured); "
                   "the reference stays on the model's device"},
    }
    libraries = ("torch", "onnxruntime", "numpy", "onnx", "protobuf", "ml_dtypes")
    consumes_model = True
    consumes = ("torchscript", "exported_program", "onnx", "engine")

    @classmethod
    def check(cls, step: StepSpec, pipeline: Pipeline) -> None:
        for name in [*step.params["tolerances"], *step.params["require"]]:
            if name not in step.needs:
                raise PipelineError(
                    f"step '{step.id}': '{name}' is named in tolerances or require, but it is "
                    "not compared", where=pipeline.where(*step.at),
                    hint=f"use one of its needs: {', '.join(step.needs)}")
        if step.params["data"]:
            from qntz.core.data import dataset_spec
            dataset_spec(pipeline, step.params["data"], pipeline.where(*step.at, "data"))
        ref = step.params["reference"]
        if ref is not None and ref not in step.needs:
            raise PipelineError(f"step '{step.id}': reference '{ref}' is not in its needs",
                                where=pipeline.where(*step.at, "reference"),
                                hint=f"add '{ref}' to `needs`")

    @classmethod
    def runs_without(cls, step: StepSpec, pipeline: Pipeline, missing: list[str]) -> bool:
        """A candidate that was not built is marked so, the others judged; without the
        model or the reference, or with no candidate left, there is nothing to judge."""
        from qntz.core.pipeline import provided_by

        fixed = {n for n in step.needs if n == step.params["reference"]
                 or "model" in provided_by(pipeline.steps[n])}
        return not fixed & set(missing) and bool(set(step.needs) - fixed - set(missing))

    @classmethod
    def key_extras(cls, step: StepSpec, pipeline: Pipeline, digests: FileDigests) -> dict:
        from qntz.core.data import data_digest

        name = step.params["data"]
        return {"data": data_digest(pipeline, name, digests)} if name else {}

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        if "candidates" not in summary:
            return super().describe(summary)
        counts: dict[str, int] = {}
        for c in summary["candidates"]:
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        text = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no candidates"
        if summary.get("unverified"):
            text += f"; UNVERIFIED (could not run here): {', '.join(summary['unverified'])}"
        return text

    @classmethod
    def details(cls, step_id: str, summary: dict[str, Any]) -> list[Any]:
        from qntz.compare.console import candidates_table

        return [candidates_table(step_id, summary)] if "candidates" in summary else []

    def run(self, ctx: StepContext) -> dict[str, Any]:
        from qntz.compare.divergence import explain_failures
        from qntz.compare.evaluate import evaluate, sample_inputs
        from qntz.compare.fixes import fix_for, without_fix
        from qntz.compare.report import markdown, split_timing
        from qntz.compare.runners import TORCH_DEVICE
        from qntz.core.scratch import scratch
        from qntz.runtime.ortrun import PROVIDER, missing_provider

        provider = ctx.params["provider"]
        if provider != "cpu" and (why := missing_provider(provider)):
            raise ctx.fail(f"provider: {provider}: {why}", hint="install onnxruntime-gpu, or "
                           "set `provider: cpu`")
        _check_device(ctx)
        token, placed = PROVIDER.set(provider), TORCH_DEVICE.set(ctx.params["device"])
        try:
            with scratch(ctx, "compare-") as work:  # engine runtimes leave files in TMPDIR
                report = evaluate(ctx)
                report["provider"] = provider
                _mark_missing(ctx, report)
                if any(c["status"] == "fail" for c in report["candidates"]):
                    explain_failures(ctx, report, sample_inputs(ctx.pipeline, ctx.params), work)
        finally:
            PROVIDER.reset(token)
            TORCH_DEVICE.reset(placed)
        lasting, timing = split_timing(report)
        (ctx.out / "report.json").write_text(json.dumps(lasting, indent=1))
        (ctx.out / "latency.json").write_text(json.dumps(timing, indent=1))
        (ctx.out / "report.md").write_text(markdown(report, ctx.pipeline.name))  # shows latency
        failed = [c for c in report["candidates"] if c["status"] in FAILING
                  or (c["status"] == "not run" and c["id"] in ctx.params["require"])]
        summary: dict[str, Any] = {"passed": not failed, "candidates": [
            {k: c.get(k) for k in ("id", "artifact", "status", "reason", "latency_ms", "speedup",
                                   "speedup_range", "speedup_wide", "speedup_vs_source",
                                   "speedup_vs_source_wide", "source", "not_faster_than_source",
                                   "max_abs", "cosine_min", "top1")}
            for c in report["candidates"]],
            "reference": report["reference"], "volatile": ["latency.json", "report.md"],
            "figures": figures(lasting)}
        unverified = [c["id"] for c in report["candidates"] if c["status"] == "not run"]
        if unverified:
            summary["unverified"] = unverified
        if failed:
            summary["failed"] = "; ".join(
                without_fix(c["reason"]) + (" (required by `require`)"
                                            if c["status"] == "not run" else "")
                for c in failed)
            summary["fix"] = fix_for(failed, ctx.params["require"])
        return summary


FAILING = ("fail", "error", "not built")


def _mark_missing(ctx: StepContext, report: dict[str, Any]) -> None:
    """A row for each candidate that was not built (its step or one before it failed),
    in the order of `needs`, among those that were judged."""
    if not ctx.missing:
        return
    from qntz.core.pipeline import provided_by
    from qntz.core.registry import runner_factory

    rows = {c["id"]: c for c in report["candidates"]}
    for sid, why in ctx.missing.items():
        kind = (runner_factory(list(provided_by(ctx.pipeline.steps[sid]))) or ("?",))[0]
        rows[sid] = {"id": sid, "artifact": kind, "status": "not built",
                     "reason": f"{sid} ({kind}) not built: {why}"}
    report["candidates"] = [rows[n] for n in ctx.step.needs if n in rows]
    report["passed"] = False


def _check_device(ctx: StepContext) -> None:
    device = ctx.params["device"]
    if device and device.startswith("cuda"):
        from qntz.runtime.torchio import cuda_problem

        if why := cuda_problem(device):
            raise ctx.fail(f"device: {device}, but {why}", hint="run where that GPU is, or "
                           "remove `device` from the compare step")


def figures(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each candidate's deterministic accuracy figures, for the lock file (`qntz diff`):
    status, the deciding metric and its value, worst max abs error, cosine and top-1."""
    rounded = {}
    for c in report["candidates"]:
        first = (c.get("outputs") or [{}])[0]
        metric = first.get("metric")
        value = {"top1": c.get("top1"), "cosine": first.get("cosine_mean")}.get(
            metric, c.get("max_abs"))
        rounded[c["id"]] = {"status": c["status"], "metric": metric if metric in (
            "top1", "cosine") else "max_abs", "value": _six(value), "top1": _six(c.get("top1")),
            "cosine_min": _six(c.get("cosine_min")), "max_abs": _six(c.get("max_abs"))}
    return rounded


def _six(value: Any) -> Any:
    """Six significant digits: what a person compares, stable across reruns."""
    return float(f"{value:.6g}") if isinstance(value, float) else value
