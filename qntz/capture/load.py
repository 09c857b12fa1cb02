"""`load`: the model a pipeline converts — a Python factory, a TorchScript file or ONNX."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError, StepFailed, first_line
from qntz.core.model_source import import_factory, source_digests, split_factory
from qntz.core.schema import FACTORY_SCHEMA
from qntz.core.step import Step, StepContext
from qntz.core.yamlfile import is_regular_file

if TYPE_CHECKING:
    from qntz.core.hashing import FileDigests
    from qntz.core.spec import Pipeline, StepSpec

SOURCES = ("factory", "torchscript", "onnx")


class Load(Step):
    kind = "load"
    version = 1
    help = "load the model: a Python factory (module:attr), a TorchScript file or an ONNX file"
    params = {
        "factory": {**FACTORY_SCHEMA,
                    "description": "module.path:attr, resolved next to the pipeline file first"},
        "kwargs": {"type": "object", "default": {}, "description": "arguments of the factory"},
        "weights": {"type": "string", "description": "state_dict file (weights_only=True)"},
        "strict": {"type": "boolean", "default": True,
                   "description": "weights must match the model's parameters exactly"},
        "torchscript": {"type": "string", "description": "a TorchScript .pt file"},
        "onnx": {"type": "string", "description": "an ONNX file to start from"},
    }
    libraries = ("torch", "numpy")

    @classmethod
    def provides_for(cls, params: dict[str, Any]) -> tuple[str, ...]:
        return ("model", "onnx") if "onnx" in params else ("model",)

    @classmethod
    def check(cls, step: StepSpec, pipeline: Pipeline) -> None:
        at = step.at
        given = [s for s in SOURCES if s in step.params]
        if len(given) != 1:
            raise PipelineError(
                f"the model needs exactly one of {', '.join(SOURCES)}, got "
                f"{', '.join(given) or 'none'}", where=pipeline.where(*at),
                hint="e.g. `factory: models.tiny:TinyCNN`")
        for name in ("weights", "torchscript", "onnx"):
            if name in step.params and not is_regular_file(pipeline.root / step.params[name]):
                raise PipelineError(
                    f"{name} file not found (or not a regular file): "
                    f"{pipeline.root / step.params[name]}", where=pipeline.where(*at, name),
                    hint=f"fix the path (relative to {pipeline.root}) or create the file")
        if "weights" in step.params and "factory" not in step.params:
            raise PipelineError("`weights` goes with `factory`", where=pipeline.where(*at),
                                hint="remove `weights` or load from a factory")

    @classmethod
    def key_extras(cls, step: StepSpec, pipeline: Pipeline, digests: FileDigests) -> dict:
        params, root = step.params, pipeline.root
        files: dict[str, str] = {}
        if "factory" in params:
            module, _ = split_factory(params["factory"])
            try:
                files.update(source_digests(module, root, digests))
            except PipelineError as exc:
                exc.where = pipeline.where(*step.at, "factory")
                raise
        for name in ("weights", "torchscript", "onnx"):
            if name in params:
                files[params[name]] = digests.of(root / params[name])
        return {"files": files}

    @classmethod
    def build_model(cls, params: dict[str, Any], pipeline: Pipeline, where: str) -> Any:
        return build_model(params, pipeline, where)

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        if "parameters" not in summary:
            return ""
        return f"{summary.get('class')}, {summary['parameters']:,} parameters"

    def run(self, ctx: StepContext) -> dict[str, Any]:
        params = ctx.params
        summary: dict[str, Any] = {"source": next(s for s in SOURCES if s in params)}
        if "onnx" in params:
            shutil.copyfile(ctx.pipeline.root / params["onnx"], ctx.out / "model.onnx")
        else:
            model = ctx.live_model()
            summary["parameters"] = sum(p.numel() for p in model.parameters())
            summary["class"] = type(model).__name__
        summary["fingerprint"] = ctx.extras["files"]
        (ctx.out / "model.json").write_text(json.dumps({**summary, "params": params}, indent=1))
        return summary


def build_model(params: dict[str, Any], pipeline: Pipeline, where: str) -> Any:
    """The live model: imported, built, weights loaded, in eval mode. Imports torch."""
    import torch

    root = pipeline.root
    if "torchscript" in params:
        return _load_torchscript(root / params["torchscript"], where)
    if "onnx" in params:
        return None
    factory = import_factory(params["factory"], root, where)
    # Without a weights file the model is its initialisation: seed it, so every build (and
    # every later session that rebuilds the reference) gives the same model.
    torch.manual_seed(0)
    try:
        model = factory(**params.get("kwargs", {}))
    except Exception as exc:
        raise StepFailed(f"factory {params['factory']} raised {type(exc).__name__}: {exc}",
                         where=where, hint="check `kwargs` against the factory's signature"
                         ) from exc
    if not isinstance(model, torch.nn.Module):
        raise PipelineError(f"factory {params['factory']} returned {type(model).__name__}, "
                            "not a torch.nn.Module", where=where,
                            hint="point `factory` at an nn.Module class or a function making one")
    if "weights" in params:
        _load_weights(model, root / params["weights"], params.get("strict", True), where)
    return model.eval()


def _load_torchscript(path: Path, where: str) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # torch raises RuntimeError, ValueError... for a file it cannot read
        raise StepFailed(f"cannot load TorchScript {path}: {first_line(exc)}", where=where,
                         hint="save it with torch.jit.save(torch.jit.script(model), path)"
                         ) from exc


def _load_weights(model: Any, path: Path, strict: bool, where: str) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PipelineError(f"cannot load weights {path}: {first_line(exc)}",
                            where=where, hint="save them with torch.save(model.state_dict(), path)"
                            ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise StepFailed(f"weights {path.name} hold a {type(state).__name__}, not a state_dict",
                         where=where, hint="save them with torch.save(model.state_dict(), path)")
    try:
        model.load_state_dict(state, strict=strict)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise StepFailed(f"weights {path.name} do not fit the model: {first}", where=where,
                         hint="use the weights saved for this model and kwargs, or strict: false"
                         ) from exc
