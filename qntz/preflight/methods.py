"""Each capture method tried for real, and the ONNX export at the pipeline's opset."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from qntz.core.errors import first_line
from qntz.core.inputs import capture_example
from qntz.core.quiet import quiet, recorded_warnings
from qntz.preflight.checks import FIXES, Checks, tensors_only

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

    model = checks.fresh()
    example = checks.args(capture_example(checks.inputs), model)
    with recorded_warnings() as caught, torch.no_grad():
        try:
            traced = trace(model, example, check_trace=False)
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
    if "can be output from traced functions" in text:  # a list of dicts: detectors
        return ("torch.jit.trace returns only tensors and flat tuples, lists or dicts of "
                "them, not this nesting (a list of dicts): return a flat tuple or dict, or "
                "let `capture: {uses: auto}` export the eager model, whose nesting the ONNX "
                "exporter flattens{else}")
    if "dict at the output" in text or "strict" in text:
        return ("trace with `strict: false` (`capture: {uses: trace, strict: false}`: the "
                "output's structure must not change with the inputs){else}")
    return "fix the line it names{else}"


def _device_constants(checks: Checks, traced: Any) -> None:
    """Tracing freezes every device it saw, `device=x.device` included. Where a GPU is
    there, the traced model is run on the other device to see whether that matters;
    elsewhere the frozen device is reported as a risk, and says it was not run."""
    sites = _device_sites(checks, traced)
    if not sites:
        return
    other = _other_device(checks.model)
    if other is None:
        result = "not run on another device: this machine has no GPU"
    else:
        result = _on_other_device(checks, traced, other)
        if result is None:
            return
    for device, where in sites:
        checks.add("trace-device-constant", "warning", ["trace"],
                   f"the device '{device}' is frozen into the traced graph ({result})",
                   "create the tensor from an input (x.new_zeros(...), torch.zeros_like(x)): "
                   "tracing and torch.export freeze device=x.device too; or capture with "
                   "`uses: script`, which keeps it", where)


def _device_sites(checks: Checks, traced: Any) -> list[tuple[str, tuple[Any, Any]]]:
    """Each device constant of the traced graph, at its line in the user's code (other
    constants come from torch or a library and are not the user's to fix)."""
    sites = []
    for node in traced.inlined_graph.nodes():
        if node.kind() == "prim::Constant" and node.output().type().kind() == "DeviceObjType":
            where = checks.user.in_text(str(node.sourceRange()))
            if where[0]:
                sites.append((str(node.output().toIValue()), where))
    return sites


def _other_device(model: Any) -> str | None:
    """The device a model captured here may be deployed on instead: the CPU for a model
    on a GPU, the GPU for one on the CPU; None without a GPU."""
    import torch

    from qntz.runtime.torchio import model_device

    if not torch.cuda.is_available():
        return None
    return "cpu" if model_device(model) is not None else "cuda"


def _on_other_device(checks: Checks, traced: Any, device: str) -> str | None:
    """Run the traced model, loaded onto `device` as a deployment would, against eager;
    what went wrong there, or None when it agrees."""
    import torch

    from qntz.runtime.torchio import call_eager, flatten_outputs

    path = checks.scratch / "trace-other-device.pt"
    feed = checks.probes()[0][2]
    try:
        traced.save(str(path))
        moved = torch.jit.load(str(path), map_location=device)
        with torch.no_grad():
            want = tensors_only(flatten_outputs(call_eager(checks.model, feed, checks.inputs)))
            got = tensors_only(flatten_outputs(checks.run(moved, feed)))
    except Exception as exc:
        return f"on {device} the traced model fails: {first_line(exc)}"
    finally:
        path.unlink(missing_ok=True)
    if len(got) != len(want) or any(g.shape != w.shape or not np.allclose(
            g, w, rtol=1e-3, atol=1e-4, equal_nan=True) for g, w in zip(got, want)):
        return f"on {device} the traced model gives other outputs than eager"
    return None


def try_script(checks: Checks) -> None:
    import torch

    with recorded_warnings():
        try:
            scripted = torch.jit.script(checks.fresh())
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

    model = checks.fresh()
    args, kwargs = checks.args(capture_example(checks.inputs), model)
    with quiet(stderr=True):
        try:
            program = torch.export.export(model, args, kwargs,
                                          dynamic_shapes=dynamic_shapes(checks.inputs, model),
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
    """Export as the onnx step would (the first working capture at the pipeline's opset,
    with its fallback from dynamo to the TorchScript exporter), then verify the file: the
    opset written, the ONNX checker, and ONNX Runtime's outputs against eager."""
    order = [*checks.uses, "export", "trace", "script"]  # as the pipeline would export
    method = next((m for m in order if m in checks.captured
                   and (m in checks.uses or checks.verdicts.get(m) != "fails")), None)
    # with no capture, `capture: {uses: auto}` hands the eager model to the onnx step
    first = "dynamo" if method == "export" else "torchscript"
    tries = [(first, checks.captured[method])] if method else []
    tries.append(("torchscript", checks.fresh()))
    failures: list[Exception | str] = []
    for exporter, model in tries:
        problem = _onnx_problem(checks, model, exporter)
        if problem is None:
            checks.verdicts["onnx"] = "ok"
            if method is None:  # what `auto` would hand to the onnx step: judged for real
                checks.eager_onnx = _onnx_agrees(checks, checks.scratch /
                                                 f"preflight-{exporter}.onnx")
            if failures:
                checks.details["onnx"] = (f"the {first} exporter {_text(failures[0])}; the "
                                          "TorchScript exporter's model of the eager module "
                                          "is right (what `exporter: auto` does)")
            return
        failures.append(problem)
    _onnx_fails(checks, failures[0])


def _onnx_problem(checks: Checks, model: Any, exporter: str) -> Exception | str | None:
    """Into a file: given a buffer, the dynamo exporter still writes a file named after the
    buffer in the current folder."""
    import torch

    from qntz.capture.onnx_export import EXPORTER_LOGGERS, without_defaults
    from qntz.runtime.torchio import export_call

    sink = checks.scratch / f"preflight-{exporter}.onnx"
    try:
        example = capture_example(checks.inputs)
        args, kwargs, names = export_call(example, checks.inputs, model)
        if exporter == "torchscript":
            model = without_defaults(model, args, kwargs)
        with quiet(*EXPORTER_LOGGERS, stderr=True, fds=True):
            torch.onnx.export(model, args, str(sink), kwargs=kwargs, input_names=names,
                              opset_version=checks.opset, dynamo=exporter == "dynamo",
                              **_dynamic(checks, model, exporter))
    except Exception as exc:
        return exc
    return _onnx_file_problem(checks, sink, example, names) or _size_problem(checks, sink)


def _dynamic(checks: Checks, model: Any, exporter: str) -> dict[str, Any]:
    """The dynamic dims as the onnx step exports them (its default `dynamic: true`)."""
    from qntz.runtime.torchio import dynamic_shapes

    if exporter == "torchscript":
        axes = {n: s.dynamic_axes for n, s in checks.inputs.items() if s.dynamic_axes}
        return {"dynamic_axes": axes} if axes else {}
    if hasattr(model, "graph_signature") or not any(s.dynamic_axes
                                                     for s in checks.inputs.values()):
        return {}  # an ExportedProgram keeps the dims it was exported with
    return {"dynamic_shapes": dynamic_shapes(checks.inputs, model)}


def _size_problem(checks: Checks, path: Path) -> str | None:
    """The written model must run at the smallest and the largest declared sizes, as the
    onnx step checks: a loop over the batch (a detector's images) is unrolled at export."""
    from qntz.core.inputs import all_dims, generate_feed
    from qntz.runtime.ortrun import run, session

    dims = all_dims(checks.inputs)
    if not dims or any(s.dtype == "bfloat16" for s in checks.inputs.values()):
        return None
    sess, rng = session(path), np.random.default_rng(0)
    for end in (0, 2):
        sizes = {d: r[end] for d, r in dims.items()}
        feed = generate_feed(checks.inputs, sizes, rng)
        try:
            with quiet(stderr=True, fds=True):
                run(sess, feed)
        except Exception as exc:
            if _eager_fails(checks, feed):  # the model's own limit: compare names the rule
                continue
            label = ", ".join(f"{d}={v}" for d, v in sizes.items())
            return (f"wrote a model that fails at {label}, a declared size: "
                    f"{first_line(exc).split(' Status Message:')[0]}")
    return None


def _onnx_file_problem(checks: Checks, path: Path, example: dict, names: list[str]
                       ) -> str | None:
    """What is wrong with the written file (opset, checker, ONNX Runtime refusing it), or
    None; outputs that differ from eager are a warning only: `compare` judges them."""
    import onnx

    from qntz.runtime.onnxinfo import describe
    from qntz.runtime.ortrun import run, session

    try:
        written = describe(path)["opset"]
        if written != checks.opset:
            return f"wrote opset {written}, not the {checks.opset} asked for"
        onnx.checker.check_model(str(path), full_check=False)
        got = run(session(path), {n: example[n] for n in names if n in example})
    except Exception as exc:
        text = first_line(exc).replace(str(checks.scratch), "<scratch>")
        return f"wrote a model ONNX Runtime rejects: {text}"
    _warn_if_outputs_differ(checks, got, example)
    return None


def _onnx_agrees(checks: Checks, path: Path) -> bool:
    """The ONNX export of the eager model agrees with eager on inputs unlike the example
    (other values, the range's ends): an exporter's trace freezes a NumPy result or a
    Python number as surely as torch.jit.trace does. Sizes are the onnx step's check."""
    import torch

    from qntz.runtime.ortrun import run, session
    from qntz.runtime.torchio import call_eager, flatten_outputs

    try:
        sess = session(path)
        for kind, _, feed in checks.probes():
            if kind != "values":
                continue
            with torch.no_grad():
                want = tensors_only(flatten_outputs(call_eager(checks.model, feed,
                                                               checks.inputs)))
            got = run(sess, feed)
            if len(got) != len(want) or any(g.shape != w.shape or not np.allclose(
                    g, w, rtol=1e-3, atol=1e-4, equal_nan=True) for g, w in zip(got, want)):
                return False
    except Exception:
        return False
    return True


def _eager_fails(checks: Checks, feed: dict[str, np.ndarray]) -> bool:
    import torch

    from qntz.runtime.torchio import call_eager

    try:
        with torch.no_grad():
            call_eager(checks.fresh(), feed, checks.inputs)
    except Exception:
        return True
    return False


def _warn_if_outputs_differ(checks: Checks, got: list, example: dict) -> None:
    import torch

    from qntz.runtime.torchio import flatten_outputs, to_torch

    args, kwargs = to_torch(example, checks.inputs, checks.model)
    with torch.no_grad():
        want = tensors_only(flatten_outputs(checks.model(*args, **kwargs)))
    if len(got) != len(want) or any(g.shape != w.shape or not np.allclose(
            g, w, atol=1e-3, rtol=1e-2) for g, w in zip(got, want)):
        checks.add("onnx-outputs-differ", "warning", ["onnx"],
                   "the exported ONNX model's outputs differ from eager on the example input",
                   "compare will judge it on varied inputs; if it fails there, try the other "
                   "exporter (`exporter:`) or another opset")


def _text(problem: Exception | str) -> str:
    return problem if isinstance(problem, str) else f"fails: {first_line(problem)}"


def _onnx_fails(checks: Checks, problem: Exception | str) -> None:
    text = str(problem)
    operator = re.search(r"operator '([\w:.]+)'", text) or re.search(
        r"No ONNX function found for <OpOverload\(op='([\w.]+)'", text)
    op = operator.group(1).replace("aten.", "aten::") if operator else None
    where = _call_site(checks, op.split("::")[-1]) if op else (None, None)
    message = (f"{op} has no ONNX exporter at opset {checks.opset}" if op
               else f"ONNX export at opset {checks.opset} fails: {first_line(problem)}"
               if isinstance(problem, Exception)
               else f"ONNX export at opset {checks.opset}: the exporter {problem}")
    if "a declared size" in text:
        checks.add("onnx-frozen-size", "error", ["onnx"], message,
                   "the export holds a size of the capture example (Python code that loops "
                   "over a dim, as a detector loops over its images, is unrolled): give that "
                   "dim the one size you deploy (`dynamic: {batch: [N, N, N]}`){else}")
    elif op:
        checks.add("onnx-unsupported-op", "error", ["onnx"], message,
                   "use another opset (`onnx: {opset: N}`), or replace the operator with ones "
                   "ONNX has", where)
    else:
        checks.add("onnx-export-fails", "error", ["onnx"], message,
                   "use another opset (`onnx: {opset: N}`); -v on the onnx step shows the "
                   "exporter's whole message", where)
    checks.verdicts["onnx"] = "fails"
