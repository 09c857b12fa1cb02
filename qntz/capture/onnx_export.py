"""`onnx`: export the captured model to ONNX at an opset, with dynamic axes from `inputs`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError, QntzError, first_line
from qntz.core.quiet import quiet
from qntz.core.step import Step, StepContext
from qntz.core.wording import plural

if TYPE_CHECKING:
    from qntz.core.spec import Pipeline, StepSpec

EXPORTER_LOGGERS = ("torch.onnx", "onnxscript")  # progress prints and registry noise


class OnnxExport(Step):
    kind = "onnx"
    version = 6  # exported from an example at size 2 where opt is 1; ends named in failures
    help = ("export to ONNX; exporter auto = dynamo for an ExportedProgram (falling back to "
            "torchscript on the eager model when dynamo fails, writes another opset or a model "
            "ONNX Runtime rejects), torchscript otherwise")
    params = {
        "opset": {"type": "integer", "minimum": 7, "maximum": 23, "default": 17},
        "exporter": {"enum": ["auto", "torchscript", "dynamo"], "default": "auto"},
        "output_names": {"type": ["array", "null"], "items": {"type": "string"}, "default": None,
                         "description": "default: the model's output keys (dotted paths for nested "
                                        "outputs), else output, or output_0, output_1, ..."},
        "dynamic": {"type": "boolean", "default": True,
                    "description": "keep the named dims of `inputs` dynamic"},
    }
    libraries = ("torch", "numpy", "onnx", "onnxscript", "onnx_ir", "protobuf", "ml_dtypes",
                 "onnxruntime")
    consumes = ("exported_program", "torchscript", "eager", "model")
    provides = ("onnx",)

    @classmethod
    def check(cls, step: StepSpec, pipeline: Pipeline) -> None:
        clash = sorted(set(step.params["output_names"] or ()) & set(pipeline.inputs))
        if clash:
            raise PipelineError(f"output_names reuses the input name '{clash[0]}'; ONNX names "
                                "every value once", where=pipeline.where(*step.at),
                                hint=f"name the output e.g. 'output.{clash[0]}'")

    @classmethod
    def key_extras(cls, step: StepSpec, pipeline: Pipeline, digests: Any) -> dict[str, Any]:
        from qntz.runtime.onnx_files import threshold_key

        return threshold_key()  # another threshold writes other files

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        return describe_onnx(summary)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        from qntz.runtime.onnxinfo import describe

        source = _pick_source(ctx)
        exporter = ctx.params["exporter"]
        if exporter == "auto":
            exporter = "dynamo" if "exported_program" in source.provides else "torchscript"
        if exporter == "torchscript" and "exported_program" in source.provides:
            raise PipelineError("an ExportedProgram can only be exported with `exporter: dynamo`",
                                where=ctx.where, hint="set exporter: dynamo (or auto)")
        path = ctx.out / "model.onnx"
        problem = _export_checked(ctx, source, exporter, path)
        eager = bool({"model", "eager"} & set(source.provides))
        said: list[str] = []
        for other in _fallbacks(ctx.params["exporter"], exporter, source, eager):
            if not problem:
                break
            # the captured graph would not export, or holds a size of the capture example
            # (dynamo, or a ScriptModule that lost its shapes): export the eager model, with
            # the TorchScript exporter, then with dynamo (torch.export keeps sizes symbolic);
            # compare judges what is written
            on = " on the eager model" if said or eager else ""
            captured = not (said or eager) and exporter == "torchscript"
            said.append(f"the {exporter} exporter{on} {problem[0]}" +
                        (" on the captured TorchScript module" if captured else ""))
            ctx.report(f"{said[-1]}; exporting the eager model with the {other} exporter")
            exporter, problem = other, _export_checked(ctx, None, other, path)
        fallback = "; then ".join(said) or None
        if problem:
            raise ctx.fail(f"the {exporter} exporter {problem[0]}" +
                           (f" (after: {fallback})" if fallback else ""),
                           hint=_hint(exporter, fallback, problem[0])) from problem[1]
        summary = {"exporter": exporter, **describe(path)}
        return {**summary, "fallback": fallback} if fallback else summary


Problem = tuple[str, "BaseException | None"]  # what went wrong, and the exception behind it


def _fallbacks(asked: str, first: str, source: Any, eager: bool) -> list[str]:
    """The exporters `exporter: auto` tries on the eager model after the first attempt: the
    TorchScript one (unless that was the first, on the eager model already), then dynamo
    (unless the first was dynamo on an ExportedProgram, torch.export's own graph)."""
    if asked != "auto":
        return []
    tries = [] if first == "torchscript" and eager else ["torchscript"]
    if not (first == "dynamo" and "exported_program" in source.provides) and \
            not (first == "dynamo" and eager):
        tries.append("dynamo")
    return tries


def _export_checked(ctx: StepContext, source: Any, exporter: str, path: Path
                    ) -> Problem | None:
    """Export, then check what was written; None when it is right, else what went wrong."""
    import onnx

    from qntz.capture.determinism import portable_onnx
    from qntz.core.scratch import scratch
    from qntz.runtime.onnx_files import install_onnx
    from qntz.runtime.onnxinfo import describe

    try:  # written aside: past 2 GB the TorchScript exporter writes a file per tensor
        with quiet(*EXPORTER_LOGGERS, fds=True), scratch(ctx, "onnx-") as work:
            _export(ctx, source, exporter, work / "model.onnx")
            install_onnx(work / "model.onnx", path)
        portable_onnx(path, ctx.pipeline.root)
        onnx.checker.check_model(str(path), full_check=False)
    except QntzError:  # the model itself failed to build: not the exporter's doing
        raise
    except Exception as exc:
        return f"failed at opset {ctx.params['opset']}: {first_line(exc)}", exc
    written = describe(path)["opset"]
    if written != ctx.params["opset"]:
        return f"wrote opset {written}, not the {ctx.params['opset']} asked for", None
    return _runtime_rejects(path, list(ctx.pipeline.inputs)) or (
        _fails_at_range_ends(ctx, path) if ctx.params["dynamic"] else None)


def _fails_at_range_ends(ctx: StepContext, path: Path) -> Problem | None:
    """A model can load and still hold a size of the capture example (a Reshape a trace
    baked in): it runs, on ONNX Runtime, at the smallest and the largest declared sizes, the
    two most likely to break it (two runs: compare judges values, this only sizes)."""
    import numpy as np

    from qntz.core.inputs import all_dims, generate_feed
    from qntz.runtime.ortrun import run, session

    inputs = ctx.pipeline.inputs
    dims = all_dims(inputs)
    if not dims or any(s.dtype == "bfloat16" for s in inputs.values()):
        return None  # nothing dynamic; bfloat16 feeds are float32 arrays ORT would refuse
    opt = {d: r[1] for d, r in dims.items()}
    sess, rng = session(path), np.random.default_rng(0)
    for end, which in ((0, "smallest"), (2, "largest")):
        sizes = {d: r[end] for d, r in dims.items()}
        if sizes == opt:
            continue
        feed = generate_feed(inputs, sizes, rng)
        try:
            with quiet(stderr=True, fds=True):  # ORT logs the failing node to stderr
                run(sess, feed)
        except Exception as exc:
            if _eager_refuses(ctx, feed):  # the model's own limit: compare names the rule
                return None
            label = ", ".join(f"{d}={v}" for d, v in sizes.items())
            held = ", ".join(f"{d}={opt[d]}" for d in sizes if sizes[d] != opt[d])
            said = first_line(exc).split(" Status Message:")[0]  # the node; then C++ paths
            return (f"wrote a model that fails at {label} (the {which} declared sizes), "
                    f"exported at {held}: {said}"), None  # what ORT said that matters
    return None


def _eager_refuses(ctx: StepContext, feed: dict[str, Any]) -> bool:
    import torch

    from qntz.runtime.torchio import call_eager

    try:
        with torch.no_grad():
            call_eager(ctx.live_model(), feed, ctx.pipeline.inputs)
    except Exception:
        return True
    return False


def _runtime_rejects(path: Path, inputs: list[str]) -> Problem | None:
    """ONNX Runtime must load the model, and every input it takes must be one the pipeline
    feeds (an exporter renames an input whose name an output took)."""
    from qntz.runtime.ortrun import session

    try:
        names = [i.name for i in session(path).get_inputs()]
    except Exception as exc:
        return f"wrote a model ONNX Runtime rejects: {first_line(exc)}", exc
    unknown = [n for n in names if n not in inputs]
    if unknown:
        return (f"named the model's input '{unknown[0]}', which is not in `inputs` "
                f"({', '.join(inputs)})"), None
    return None


def _hint(exporter: str, fallback: str | None = None, problem: str = "") -> str:
    import re

    held = re.search(r"exported at ([\w=, ]*\w):", f"{problem} {fallback or ''}")
    if held and "wrote a model that fails at" in problem:  # a size of the capture example
        others = "" if fallback else "`exporter: auto` (it then exports the eager model), "
        return (f"the graph holds a size of the capture example: use {others}`capture: "
                "{uses: export}`, or narrow `dynamic` to the sizes it runs at")
    if held:  # the TorchScript exporter's model held a size; the other exporter failed
        dims = [d.split("=")[0] for d in held.group(1).split(", ")]
        fixed = ", ".join(f"{d}: [N, N, N]" for d in dims)
        return (f"the TorchScript export holds {held.group(1)} (Python code that loops over "
                f"{' and '.join(dims)}, as a detector loops over its images, is unrolled) and "
                f"dynamo cannot export it: give {'it' if len(dims) == 1 else 'them'} the one "
                f"size you deploy (`dynamic: {{{fixed}}}`)")

    wrote = re.search(r"dynamo exporter wrote opset (\d+)", fallback or "")
    if wrote:  # the dynamo exporter's model was fine but for its opset
        return (f"set `opset: {wrote.group(1)}`, the opset the dynamo exporter writes for this "
                "model; -v shows the exporters' full messages")
    other = "torchscript" if exporter == "dynamo" else "dynamo"
    return (f"try another opset or `exporter: {other}`; run preflight to find the operator, "
            "and -v for the exporter's full message")


def _pick_source(ctx: StepContext) -> Any:
    for what in ("exported_program", "torchscript", "eager", "model"):
        found = [a for a in ctx.inputs.values() if what in a.provides]
        if found:
            return found[-1]
    return ctx.input_providing("model")


def _export(ctx: StepContext, source: Any, exporter: str, path: Path) -> None:
    import torch

    from qntz.core.inputs import capture_example
    from qntz.runtime.onnx_files import external_data_threshold
    from qntz.runtime.torchio import dynamic_shapes, export_call, output_names, to_torch

    inputs = ctx.pipeline.inputs
    if source is None:  # the fallback: the eager model itself
        model: Any = ctx.live_model()
    elif "exported_program" in source.provides:
        ctx.live_model()  # imports the modules whose types the program's outputs name
        model = torch.export.load(str(source.file("model.pt2")))
    elif "torchscript" in source.provides:
        model = torch.jit.load(str(source.file("model.pt")))
    else:
        model = ctx.live_model()
    example = capture_example(inputs)
    with torch.no_grad():
        runnable = model.module() if hasattr(model, "graph_signature") else model
        args, kwargs = to_torch(example, inputs, runnable)
        found = output_names(runnable(*args, **kwargs), inputs)
    names = ctx.params["output_names"] or (source and _names_from(source, len(found))) or found
    args, kwargs, order = export_call(example, inputs, model)
    common = {"opset_version": ctx.params["opset"], "input_names": order,
              "output_names": names, "kwargs": kwargs}
    dynamic = ctx.params["dynamic"]
    if exporter == "torchscript":
        axes = {n: s.dynamic_axes for n, s in inputs.items() if s.dynamic_axes} if dynamic else None
        torch.onnx.export(without_defaults(model, args, kwargs), args, str(path), dynamo=False,
                          dynamic_axes=axes, **common)
    else:
        is_program = hasattr(model, "graph_signature")
        shapes = dynamic_shapes(inputs, model) if dynamic and not is_program else None
        torch.onnx.export(model, args, str(path), dynamo=True, dynamic_shapes=shapes,
                          external_data=_weight_bytes(model) > external_data_threshold(),
                          verbose=False, **common)


def _weight_bytes(model: Any) -> int:
    """The bytes of a model's weights, buffers and constants: whether its ONNX file will be
    past the external-data threshold, known before exporting it."""
    import torch

    if hasattr(model, "graph_signature"):  # an ExportedProgram
        tensors = [*model.state_dict.values(), *model.constants.values()]
    elif isinstance(model, torch.nn.Module):
        tensors = list(model.state_dict(keep_vars=True).values())
    else:
        return 0
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def without_defaults(model: Any, args: tuple, kwargs: dict) -> Any:
    """The same module (its very attributes) whose forward declares no default it is not
    given.

    The TorchScript exporter appends the defaults of forward's parameters that were not
    passed to the call it traces, so a `scale: float = 1.0` became an ONNX input named
    `onnx::Cast_1` (diffusers' ControlNet: `conditioning_scale`). Left out, the trace bakes
    the default in, as eager computes it."""
    import inspect

    import torch

    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return model
    kind = type(model)
    signature = inspect.signature(kind.forward)
    first, *rest = signature.parameters.values()
    kept = [p for i, p in enumerate(rest)
            if p.default is p.empty or i < len(args) or p.name in kwargs]

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return kind.forward(self, *args, **kwargs)

    forward.__signature__ = signature.replace(parameters=[first, *kept])  # type: ignore
    view = type(kind.__name__, (kind,), {"forward": forward, "__module__": kind.__module__,
                                         "__qualname__": kind.__qualname__})
    bound = object.__new__(view)
    bound.__dict__ = model.__dict__
    return bound


def _names_from(source: Any, count: int) -> list[str] | None:
    """The eager model's output names, as the capture step recorded them (a traced model
    returns a plain tuple where eager returned a dict or a ModelOutput)."""
    names = source.summary.get("output_names")
    return names if names and len(names) == count else None


def describe_onnx(s: dict[str, Any]) -> str:
    """Opset, node count (and before simplification) and size of an ONNX step's model."""
    if "nodes" not in s:
        return Step.describe(s)
    extra = f" (was {s['nodes_before']})" if "nodes_before" in s else ""
    return (f"opset {s.get('opset')}, {plural(s['nodes'], 'node')}{extra}, "
            f"{s['bytes'] / 1024:.0f} KiB")
