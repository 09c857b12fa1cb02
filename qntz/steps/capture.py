"""`trace`, `script`, `export`: capture the live model as TorchScript or an ExportedProgram."""

from __future__ import annotations

import warnings
from typing import Any

from qntz.steps.base import Step, StepContext


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _user_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    keep = [w for w in caught if "TracerWarning" in type(w.message).__name__
            or not issubclass(w.category, (DeprecationWarning, FutureWarning))]
    seen: list[str] = []
    for w in keep:
        text = f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}"
        if text not in seen:
            seen.append(text)
    return seen


class Trace(Step):
    kind = "trace"
    version = 1
    help = "torch.jit.trace at the inputs' opt sizes; saves TorchScript model.pt"
    params = {
        "check_trace": {"type": "boolean", "default": True,
                        "description": "re-run the trace on the example and compare"},
        "strict": {"type": "boolean", "default": True,
                   "description": "refuse mutable containers (lists, dicts) as outputs"},
    }
    libraries = ("torch",)
    consumes_model = True
    provides = ("torchscript",)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        import torch

        from qntz.inputs import capture_example
        from qntz.torchio import quiet_torch, to_torch

        model = ctx.live_model()
        args = to_torch(capture_example(ctx.pipeline.inputs), ctx.pipeline.inputs)
        with quiet_torch() as caught, torch.no_grad():
            try:
                traced = torch.jit.trace(model, args, check_trace=ctx.params["check_trace"],
                                         strict=ctx.params["strict"])
            except Exception as exc:
                raise ctx.fail(f"cannot trace the model: {_first_line(exc)}",
                               hint="fix that line, or capture with `uses: script` or "
                               "`uses: export`") from exc
        traced.save(str(ctx.out / "model.pt"))
        return {"warnings": _user_warnings(caught)}


class Script(Step):
    kind = "script"
    version = 1
    help = "torch.jit.script; saves TorchScript model.pt"
    params: dict[str, dict[str, Any]] = {}
    libraries = ("torch",)
    consumes_model = True
    provides = ("torchscript",)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        import torch

        from qntz.torchio import quiet_torch

        with quiet_torch() as caught:
            try:
                scripted = torch.jit.script(ctx.live_model())
            except Exception as exc:
                raise ctx.fail(f"cannot script the model: {_script_error(exc)}",
                               hint="add type hints or rewrite that construct, or capture with "
                               "`uses: trace` / `uses: export`") from exc
        scripted.save(str(ctx.out / "model.pt"))
        return {"warnings": _user_warnings(caught)}


def _script_error(exc: BaseException) -> str:
    """The scripting error reduced to its message and the user's file and line."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    message = lines[0].strip() if lines else type(exc).__name__
    location = next((ln.strip() for ln in lines if ln.strip().startswith("File ")), "")
    return f"{message} ({location})" if location else message


class Export(Step):
    kind = "export"
    version = 1
    help = "torch.export with dynamic dims from `inputs`; saves the ExportedProgram model.pt2"
    params = {
        "strict": {"type": "boolean", "default": False,
                   "description": "trace with TorchDynamo (strict) instead of non-strict mode"},
    }
    libraries = ("torch",)
    consumes_model = True
    provides = ("exported_program",)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        import torch

        from qntz.inputs import capture_example
        from qntz.torchio import dynamic_shapes, quiet_torch, to_torch

        inputs = ctx.pipeline.inputs
        args = to_torch(capture_example(inputs), inputs)
        with quiet_torch() as caught:
            try:
                program = torch.export.export(ctx.live_model(), args,
                                              dynamic_shapes=dynamic_shapes(inputs),
                                              strict=ctx.params["strict"])
            except Exception as exc:
                raise ctx.fail(f"cannot export the model: {_first_line(exc)}",
                               hint="rewrite data-dependent control flow with torch.cond / "
                               "torch.where, or capture with `uses: script`") from exc
        torch.export.save(program, str(ctx.out / "model.pt2"))
        return {"warnings": _user_warnings(caught)}
