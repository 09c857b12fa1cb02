"""`trace`, `script`, `export`: capture the live model as TorchScript or an ExportedProgram."""

from __future__ import annotations

import json
import warnings
from typing import Any

from qntz.core.errors import first_line
from qntz.core.step import Step, StepContext


def _user_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    keep = [w for w in caught if "TracerWarning" in type(w.message).__name__
            or not issubclass(w.category, (DeprecationWarning, FutureWarning))]
    seen: list[str] = []
    for w in keep:
        text = f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}"
        if text not in seen:
            seen.append(text)
    return seen


def _method(kind: str) -> dict[str, Any]:
    return {"method": {"enum": ["auto", kind], "default": kind,
                       "description": "auto: the method preflight recommends"}}


class Capture(Step):
    """trace, script and export share `method: auto`: capture as preflight recommends."""

    libraries = ("torch", "numpy")
    consumes_model = True

    @classmethod
    def provides_for(cls, params: dict[str, Any]) -> tuple[str, ...]:
        if params.get("method", cls.kind) == "auto":
            return ("torchscript", "exported_program", "eager")
        return cls.provides

    @classmethod
    def check(cls, step: Any, pipeline: Any) -> None:
        from qntz.core.errors import PipelineError

        if step.params.get("method", step.kind) != "auto":
            return
        if not any(pipeline.steps[n].kind == "preflight" for n in step.needs
                   if n in pipeline.steps):
            raise PipelineError(f"step '{step.id}': `method: auto` needs a preflight step",
                                where=pipeline.where(*step.at),
                                hint="add `preflight: {}` before it (or to its `needs`)")

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        if "method" not in summary:
            return super().describe(summary)
        if summary["method"] == "eager":
            return ("no capture method works: the onnx step exports the eager model (no "
                    "TorchScript or ExportedProgram artifact)")
        return f"captured with {summary['method']} (preflight: {summary['verdict']})"

    def run(self, ctx: StepContext) -> dict[str, Any]:
        method = ctx.params.get("method", self.kind)
        if method != "auto":
            return CAPTURES[method](ctx)
        preflight = ctx.input_providing("preflight").summary
        chosen = preflight.get("recommendation")
        if chosen is None and preflight.get("eager_onnx"):
            return _eager(ctx, preflight["verdicts"])
        if chosen is None:
            verdicts = ", ".join(f"{m} {v}" for m, v in preflight["verdicts"].items())
            raise ctx.fail(f"no capture method gives a correct model ({verdicts})",
                           hint="fix the findings in the preflight report (report.md)")
        summary = CAPTURES[chosen](ctx)
        provides = ["exported_program"] if chosen == "export" else ["torchscript"]
        return {**summary, "method": chosen, "provides": provides,
                "verdict": preflight["verdicts"][chosen]}


def _eager(ctx: StepContext, verdicts: dict[str, str]) -> dict[str, Any]:
    """No method captures the model, yet preflight's ONNX export of the eager model works
    (a custom autograd.Function with a `symbolic`): the onnx step exports the eager model
    with the TorchScript exporter and compare judges that; nothing is captured here."""
    said = ", ".join(f"{m} {v}" for m, v in verdicts.items())
    ctx.report(f"no capture method works ({said}): handing the eager model to onnx")
    # the onnx step's key follows this file's digest: it names the model's, so a changed
    # model (source, weights, kwargs) is exported again
    record = {"method": "eager", "verdicts": verdicts, "artifact": None,
              "model": ctx.input_providing("model").digest}
    (ctx.out / "eager.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    return {"method": "eager", "provides": ["eager"], "verdict": verdicts.get("onnx"),
            "verdicts": verdicts, "output_names": _output_names(ctx)}


class Auto(Capture):
    kind = "auto"
    version = 4  # a dynamic dim captured at 2 when its opt is 1 (torch.export keeps it)
    help = "capture with the method preflight recommends (trace, script or export)"
    params = {"method": {"enum": ["auto"], "default": "auto"}}
    provides = ("torchscript", "exported_program")


class Trace(Capture):
    kind = "trace"
    version = 4  # a dynamic dim captured at 2 when its opt is 1 (torch.export keeps it)
    help = "torch.jit.trace at the inputs' opt sizes; saves TorchScript model.pt"
    params = {
        **_method("trace"),
        "check_trace": {"type": "boolean", "default": True,
                        "description": "re-run the trace on the example and compare"},
        "strict": {"type": "boolean", "default": True,
                   "description": "refuse mutable containers (lists, dicts) as outputs"},
    }
    provides = ("torchscript",)


def _trace(ctx: StepContext) -> dict[str, Any]:
    import torch

    from qntz.core.inputs import capture_example
    from qntz.core.quiet import recorded_warnings
    from qntz.runtime.torchio import to_torch, trace

    model = ctx.live_model()
    call = to_torch(capture_example(ctx.pipeline.inputs), ctx.pipeline.inputs, model)
    with recorded_warnings() as caught, torch.no_grad():
        try:
            traced = trace(model, call, check_trace=ctx.params.get("check_trace", True),
                           strict=ctx.params.get("strict", True))
        except Exception as exc:
            raise ctx.fail(f"cannot trace the model: {first_line(exc)}",
                           hint="fix that line, or capture with `uses: script` or "
                           "`uses: export`") from exc
    _save(ctx, "traced", lambda f: torch.jit.save(traced, f), "model.pt")
    return {"warnings": _user_warnings(caught), "output_names": _output_names(ctx)}


class Script(Capture):
    kind = "script"
    version = 4  # a dynamic dim captured at 2 when its opt is 1 (torch.export keeps it)
    help = "torch.jit.script; saves TorchScript model.pt"
    params = _method("script")
    provides = ("torchscript",)


def _script(ctx: StepContext) -> dict[str, Any]:
    import torch

    from qntz.core.quiet import recorded_warnings

    with recorded_warnings() as caught:
        try:
            scripted = torch.jit.script(ctx.live_model())
        except Exception as exc:
            raise ctx.fail(f"cannot script the model: {_script_error(exc)}",
                           hint="add type hints or rewrite that construct, or capture with "
                           "`uses: trace` / `uses: export`") from exc
    _save(ctx, "scripted", lambda f: torch.jit.save(scripted, f), "model.pt")
    return {"warnings": _user_warnings(caught), "output_names": _output_names(ctx)}


def _save(ctx: StepContext, what: str, save: Any, name: str) -> None:
    """Some captures succeed and still cannot be serialized (a Python autograd.Function).

    torch writes a random id (and TorchScript, paths of the model's code) into the archive:
    it is rewritten without them. Both happen in memory and Python writes the file, since
    torch's own file writer aborts the process when the disk fills up."""
    import io

    from qntz.capture.determinism import rewrite_archive

    saved = io.BytesIO()
    try:
        save(saved)
    except Exception as exc:
        raise ctx.fail(f"the {what} model cannot be saved: {first_line(exc)}",
                       hint="run preflight: another capture method may work") from exc
    (ctx.out / name).write_bytes(rewrite_archive(saved.getvalue()))


def _script_error(exc: BaseException) -> str:
    """The scripting error reduced to its message and the user's file and line."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    message = lines[0].strip() if lines else type(exc).__name__
    location = next((ln.strip() for ln in lines if ln.strip().startswith("File ")), "")
    return f"{message} ({location})" if location else message


class Export(Capture):
    kind = "export"
    version = 4  # a dynamic dim captured at 2 when its opt is 1 (torch.export keeps it)
    help = "torch.export with dynamic dims from `inputs`; saves the ExportedProgram model.pt2"
    params = {
        **_method("export"),
        "strict": {"type": "boolean", "default": False,
                   "description": "trace with TorchDynamo (strict) instead of non-strict mode"},
    }
    provides = ("exported_program",)


def _export(ctx: StepContext) -> dict[str, Any]:
    import torch

    from qntz.capture.determinism import portable_program
    from qntz.core.inputs import capture_example
    from qntz.core.quiet import recorded_warnings
    from qntz.core.scratch import scratch
    from qntz.runtime.torchio import dynamic_shapes, to_torch

    inputs, model = ctx.pipeline.inputs, ctx.live_model()
    args, kwargs = to_torch(capture_example(inputs), inputs, model)
    with recorded_warnings() as caught, scratch(ctx, "export-"):  # torch makes cache folders
        try:
            program = torch.export.export(model, args, kwargs,
                                          dynamic_shapes=dynamic_shapes(inputs, model),
                                          strict=ctx.params.get("strict", False))
        except Exception as exc:
            raise ctx.fail(f"cannot export the model: {first_line(exc)}",
                           hint="rewrite data-dependent control flow with torch.cond / "
                           "torch.where, or capture with `uses: script`") from exc
    portable_program(program, ctx.pipeline.root)
    _save(ctx, "exported", lambda f: torch.export.save(program, f), "model.pt2")
    return {"warnings": _user_warnings(caught), "output_names": _output_names(ctx)}


def _output_names(ctx: StepContext) -> list[str]:
    """The eager model's output names (dict and ModelOutput keys): a traced model returns
    a plain tuple, so the names are taken here, for the onnx step and compare."""
    import torch

    from qntz.core.inputs import capture_example
    from qntz.runtime.torchio import output_names, to_torch

    model = ctx.live_model()
    args, kwargs = to_torch(capture_example(ctx.pipeline.inputs), ctx.pipeline.inputs, model)
    with torch.no_grad():  # inference tensors cached on the live model would break export
        return output_names(model(*args, **kwargs), ctx.pipeline.inputs)


CAPTURES = {"trace": _trace, "script": _script, "export": _export}
