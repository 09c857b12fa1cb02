"""Each capture method tried for real, and the ONNX export at the pipeline's opset."""

from __future__ import annotations

import re
from typing import Any

from qntz.core.errors import first_line
from qntz.core.inputs import capture_example
from qntz.core.quiet import quiet, recorded_warnings
from qntz.preflight.checks import FIXES, Checks

SCRIPT_FIXES = [
    (("Expected a value of type", "inferred", "type annotation", "annotat"),
     "add type hints to the arguments (TorchScript assumes Tensor)"),
    (("undefined value", "global"), "make the global an attribute of the module or a constant"),
    (("numpy", "Python builtin", "builtin_function_or_method"),
     "use torch ops instead of NumPy or Python builtins"),
    (("not supported", "NotSupported", "Unsupported", "cannot"),
     "rewrite the construct in TorchScript's subset of Python (no generators, lambdas, "
     "*args/**kwargs){else}"),
]


def try_trace(checks: Checks) -> None:
    import torch

    from qntz.runtime.torchio import trace

    example = checks.args(capture_example(checks.inputs))
    with recorded_warnings() as caught, torch.no_grad():
        try:
            traced = trace(checks.model, example, check_trace=False)
        except Exception as exc:
            checks.add("trace-fails", "error", ["trace"], f"tracing fails: {first_line(exc)}",
                       _trace_fix(str(exc)), checks.user.in_traceback(exc))
            checks.verdicts["trace"] = "fails"
            return
    for w in caught:
        if "TracerWarning" in type(w.message).__name__ and checks.user.owns(w.filename) \
                and (w.filename, w.lineno) not in checks.constant_sites:
            said = str(w.message).splitlines()[0].split(". ")[0]
            checks.add("trace-python-value", "warning", ["trace"],
                       f"the tracer records a constant: {said}",
                       FIXES["data-dependent"], (w.filename, w.lineno))
    _device_constants(checks, traced)
    checks.captured["trace"] = traced
    works = checks.serializable("trace", traced.save) and checks.agrees("trace", traced)
    checks.verdicts["trace"] = "ok" if works else "fails"


def _trace_fix(text: str) -> str:
    if "dict at the output" in text or "strict" in text:
        return ("trace with `strict: false` (`capture: {uses: trace, strict: false}`: the "
                "output's structure must not change with the inputs){else}")
    return "fix the line it names{else}"


def _device_constants(checks: Checks, traced: Any) -> None:
    for node in traced.inlined_graph.nodes():
        if node.kind() == "prim::Constant" and node.output().type().kind() == "DeviceObjType":
            where = checks.user.in_text(str(node.sourceRange()))
            if where[0]:
                checks.add("trace-device-constant", "warning", ["trace"],
                           f"the device '{node.output().toIValue()}' is frozen into the traced "
                           "graph", "create tensors with device=x.device (and dtype=x.dtype) "
                           "from an input{else}", where)


def try_script(checks: Checks) -> None:
    import torch

    with recorded_warnings():
        try:
            scripted = torch.jit.script(checks.model)
        except Exception as exc:
            text = str(exc)
            fix = next((f for keys, f in SCRIPT_FIXES if any(k in text for k in keys)),
                       SCRIPT_FIXES[-1][1])
            checks.add("script-unsupported", "error", ["script"],
                       f"scripting fails: {first_line(exc)}", fix, checks.user.in_text(text))
            checks.verdicts["script"] = "fails"
            return
    checks.captured["script"] = scripted
    works = checks.serializable("script", scripted.save) and checks.agrees("script", scripted)
    checks.verdicts["script"] = "ok" if works else "fails"


def try_export(checks: Checks) -> None:
    import torch

    from qntz.runtime.torchio import dynamic_shapes

    args, kwargs = checks.args(capture_example(checks.inputs))
    with quiet(stderr=True):
        try:
            program = torch.export.export(checks.model, args, kwargs,
                                          dynamic_shapes=dynamic_shapes(checks.inputs,
                                                                        checks.model),
                                          strict=False)
        except Exception as exc:
            _export_finding(checks, exc)
            checks.verdicts["export"] = "fails"
            return
    checks.captured["export"] = program
    works = checks.serializable("export", lambda f: torch.export.save(program, f)) and \
        checks.agrees("export", program.module())
    checks.verdicts["export"] = "ok" if works else "fails"


def _export_finding(checks: Checks, exc: BaseException) -> None:
    text, where = str(exc), checks.user.in_traceback(exc)
    name = type(exc).__name__
    if "DataDependent" in name or "data-dependent" in text or "data dependent" in text:
        rule, fix = "export-data-dependent", FIXES["control-flow"]
        message = "torch.export cannot guard on a data-dependent value"
    elif "Constraints violated" in text or "specializ" in text or "ConstraintViolation" in name:
        rule, fix = "export-dynamic-dim", FIXES["frozen-shape"]
        dims = ", ".join(sorted(set(re.findall(r"Dim\('?(\w+)", text)))) or "a dynamic dim"
        message = f"torch.export specialized {dims} to the capture example's size"
    else:
        rule, fix = "export-unsupported", "rewrite that construct{else}"
        message = f"torch.export fails: {first_line(exc)}"
    checks.add(rule, "error", ["export"], f"{message} ({name})", fix, where)


def _call_site(checks: Checks, op: str) -> tuple[str | None, int | None]:
    """Where the user's code called the torch function behind an ATen operator."""
    names = sorted((n for n in checks.calls if n and (op.startswith(n) or n.startswith(op))),
                   key=len, reverse=True)
    return checks.calls[names[0]] if names else (None, None)


def try_onnx(checks: Checks) -> None:
    """Export the first working capture at the pipeline's opset, as the onnx step would.

    Into a file: given a buffer, the dynamo exporter still writes a file named after the
    buffer in the current folder."""
    import torch

    order = [*checks.uses, "export", "trace", "script"]  # as the pipeline would export
    method = next((m for m in order if m in checks.captured), None)
    if method is None:
        return
    model = checks.captured[method]
    sink = checks.scratch / "preflight.onnx"
    try:
        from qntz.capture.onnx_export import EXPORTER_LOGGERS
        from qntz.runtime.torchio import export_call

        args, kwargs, names = export_call(capture_example(checks.inputs), checks.inputs, model)
        with quiet(*EXPORTER_LOGGERS, stderr=True):
            torch.onnx.export(model, args, str(sink), kwargs=kwargs, input_names=names,
                              opset_version=checks.opset, dynamo=method == "export")
        checks.verdicts["onnx"] = "ok"
    except Exception as exc:
        text = str(exc)
        operator = re.search(r"operator '([\w:.]+)'", text) or re.search(
            r"No ONNX function found for <OpOverload\(op='([\w.]+)'", text)
        op = operator.group(1).replace("aten.", "aten::") if operator else None
        where = _call_site(checks, op.split("::")[-1]) if op else (None, None)
        message = (f"{op} has no ONNX exporter at opset {checks.opset}" if op
                   else f"ONNX export at opset {checks.opset} fails: {first_line(exc)}")
        checks.add("onnx-unsupported-op", "error", ["onnx"], message,
                   "use another opset (`onnx: {opset: N}`), the dynamo exporter, or replace "
                   "the operator with ones ONNX has", where)
        checks.verdicts["onnx"] = "fails"
