"""`load`: the model a pipeline converts — a Python factory, a TorchScript file or ONNX."""

from __future__ import annotations

import json
import os
import shutil
import weakref
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError, StepFailed, first_line
from qntz.core.model_source import (
    check_not_hidden,
    display_path,
    import_factory,
    source_digests,
    split_factory,
)
from qntz.core.process import seeded_torch
from qntz.core.schema import FACTORY_SCHEMA
from qntz.core.step import Step, StepContext
from qntz.core.workspace import inside, project_root
from qntz.core.yamlfile import is_regular_file

if TYPE_CHECKING:
    from qntz.core.hashing import FileDigests
    from qntz.core.spec import Pipeline, StepSpec

SOURCES = ("factory", "torchscript", "onnx")
# models a factory gave in train mode, with the layers that eval() changes
WAS_TRAINING: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


class Load(Step):
    kind = "load"
    version = 3  # the model's device (`device:`, or where the factory put it)
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
        "device": {"type": "string", "pattern": "^(cpu|cuda(:[0-9]+)?)$",
                   "description": "where the model runs (cpu, cuda, cuda:N): load moves it "
                   "there; without it, the model stays where the factory put it"},
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
            if name in step.params:
                where = pipeline.where(*at, name)
                path = model_file(pipeline.root, step.params[name], name, where)
                if name == "onnx":
                    external_data(path, where)
        if "factory" in step.params:
            module, _ = split_factory(step.params["factory"])
            check_not_hidden(module, pipeline.root, pipeline.where(*at, "factory"))
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
        if "onnx" in params:  # its external data is part of the model
            where = pipeline.where(*step.at, "onnx")
            for path in external_data(model_file(root, params["onnx"], "onnx", where),
                                      where).values():
                files[display_path(path, root)] = digests.of(path)
        return {"files": files}

    @classmethod
    def build_model(cls, params: dict[str, Any], pipeline: Pipeline, where: str) -> Any:
        return build_model(params, pipeline, where)

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        if "parameters" not in summary:
            return ""
        line = f"{summary.get('class')}, {summary['parameters']:,} parameters"
        if summary.get("device", "cpu") != "cpu":
            line += f" on {summary['device']}"
        if summary.get("was_training"):
            line += (f"; returned in train() mode: switched to eval(), which changes its "
                     f"{', '.join(summary['was_training'])}")
        return line

    def run(self, ctx: StepContext) -> dict[str, Any]:
        params = ctx.params
        summary: dict[str, Any] = {"source": next(s for s in SOURCES if s in params)}
        if "onnx" in params:
            _copy_onnx(ctx)
        else:
            model = ctx.live_model()
            summary["parameters"] = sum(p.numel() for p in model.parameters())
            summary["class"] = type(model).__name__
            summary["device"] = _device_of(model)
            if model in WAS_TRAINING:
                summary["was_training"] = WAS_TRAINING[model]
        summary["fingerprint"] = ctx.extras["files"]
        (ctx.out / "model.json").write_text(json.dumps({**summary, "params": params}, indent=1))
        return summary


def build_model(params: dict[str, Any], pipeline: Pipeline, where: str) -> Any:
    """The live model: imported, built, weights loaded, in eval mode. Imports torch."""
    import torch

    root = pipeline.root
    if "torchscript" in params:
        path = model_file(root, params["torchscript"], "torchscript", where)
        return _placed(_load_torchscript(path, where), params.get("device"), where)
    if "onnx" in params:
        return None
    factory = import_factory(params["factory"], root, where)
    # Without a weights file the model is its initialisation: seed it, so every build (and
    # every later session that rebuilds the reference) gives the same model.
    try:
        with seeded_torch(0):
            model = factory(**params.get("kwargs", {}))
    except Exception as exc:
        raise _factory_failed(params, factory, exc, root, where) from exc
    if not isinstance(model, torch.nn.Module):
        raise PipelineError(f"factory {params['factory']} returned {type(model).__name__}, "
                            "not a torch.nn.Module", where=where,
                            hint="point `factory` at an nn.Module class or a function making one")
    if "weights" in params:
        path = model_file(root, params["weights"], "weights", where)
        _load_weights(model, path, params.get("strict", True), where)
    changed = _train_only(model)
    if changed:
        WAS_TRAINING[model] = changed  # load's summary says so: eval() changes what it computes
    return _placed(model.eval(), params.get("device"), where)


def _placed(model: Any, device: str | None, where: str) -> Any:
    """The model on `device` (None: where the factory put it)."""
    if device is None:
        return model
    from qntz.runtime.torchio import cuda_problem

    if why := cuda_problem(device):
        import torch

        count = torch.cuda.device_count()
        raise PipelineError(f"device: {device}, but {why}", where=where,
                            hint=f"use cuda:0 … cuda:{count - 1}" if count else
                            "set `device: cpu`, or run where a GPU and a CUDA build of "
                            "torch are")
    return model.to(device)


def _device_of(model: Any) -> str:
    """The device of the model's first parameter or buffer ("cpu" when it has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return str(tensor.device)
    return "cpu"


ARGUMENT_ERRORS = ("argument", "positional", "keyword")  # TypeError about a call's arguments


def _factory_failed(params: dict[str, Any], factory: Any, exc: Exception, root: Path,
                    where: str) -> StepFailed:
    """The factory's exception in one line. A TypeError about arguments points at `kwargs`
    (when some were given, or the factory wants some); anything else happened inside the
    factory's code: the line that raised it, and where the factory is defined."""
    import inspect
    import traceback

    kwargs = params.get("kwargs") or {}
    text = str(exc)
    name = f"factory {params['factory']} raised {type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, TypeError) and any(k in text for k in ARGUMENT_ERRORS):
        if kwargs:
            return StepFailed(name, where=where,
                              hint="check `kwargs` against the factory's signature")
        if "missing" in text and "required" in text:
            return StepFailed(name, where=where, hint="give the arguments it needs in `kwargs`")
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # past build_model's own frame
    raised = f"{display_path(frames[-1].filename, root)}:{frames[-1].lineno}" if frames else None
    try:
        defined = (f"{display_path(inspect.getsourcefile(factory) or '?', root)}:"
                   f"{inspect.getsourcelines(factory)[1]}")
    except (OSError, TypeError):
        defined = params["factory"]
    return StepFailed(f"{name}" + (f" (raised at {raised})" if raised else ""), where=where,
                      hint=f"the error is in the factory's own code ({params['factory']}, "
                      f"defined at {defined}): fix it there; -v shows the traceback")


def _train_only(model: Any) -> list[str]:
    """The kinds of layer, in train mode, that compute otherwise in eval mode (dropout,
    batch norm and the like); empty when eval() changes nothing."""
    from torch import nn

    kinds = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)
    found = sorted({type(m).__name__ for m in model.modules()
                    if m.training and isinstance(m, kinds)
                    and getattr(m, "track_running_stats", True)})
    return found


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


# --- model files ---------------------------------------------------------------------------

def model_file(root: Path, value: str, name: str, where: str) -> Path:
    """The file a model source names (relative to the pipeline's folder `root`), resolved:
    a regular file, and not a link inside the project that leads out of it (its content
    would enter the cache and travel with `push`)."""
    path = root / value
    if not is_regular_file(path):
        raise PipelineError(f"{name} file not found (or not a regular file): {path}",
                            where=where,
                            hint=f"fix the path (relative to {root}) or create the file")
    project = project_root(root)
    resolved = path.resolve()
    written = Path(os.path.normpath(root.resolve() / value))
    if _within(project, written) and not _within(project, resolved):
        raise PipelineError(f"{name} file {value} is a link to {resolved}, outside the "
                            f"project {project}", where=where,
                            hint="copy the file into the project: qntz follows no link out of it")
    return resolved


def _within(base: Path, path: Path) -> bool:
    return path == base or base in path.parents


RESERVED = ("model.onnx", "model.json")  # what `load` itself writes into its entry


def external_data(path: Path, where: str) -> dict[str, Path]:
    """The external data files of the ONNX model at `path` (resolved), by the location the
    model gives: each a relative path to a regular file inside the model's folder (as the
    ONNX checker demands), so the set can be copied beside `model.onnx` unchanged."""
    found: dict[str, Path] = {}
    for location in external_locations(path):
        parts = PurePosixPath(location).parts
        target = (path.parent / location).resolve()
        if (not parts or location.startswith("/") or ".." in parts or "\\" in location
                or not _within(path.parent, target)):
            raise PipelineError(
                f"{path.name} keeps tensor data in '{location}', outside its folder",
                where=where, hint="save the model with its data beside it: onnx.save(model, "
                "path, save_as_external_data=True, location='model.onnx.data')")
        if not is_regular_file(target):
            raise PipelineError(
                f"{path.name} keeps tensor data in '{location}', which is not a file beside "
                "it", where=where, hint=f"put {location} beside {path.name}, or save the "
                "model with its data inside (onnx.save(model, path))")
        if PurePosixPath(*parts).as_posix() in RESERVED:
            raise PipelineError(
                f"{path.name} keeps tensor data in '{location}', a name `load` writes itself",
                where=where, hint="save the data under another name, e.g. model.onnx.data")
        found[location] = target
    return found


def _copy_onnx(ctx: StepContext) -> None:
    """The ONNX source into the entry, its external data files at the same relative places,
    then checked there: what the cache keeps is a model the ONNX checker accepts."""
    import onnx

    value = ctx.params["onnx"]
    where = ctx.pipeline.where(*ctx.step.at, "onnx")
    source = model_file(ctx.pipeline.root, value, "onnx", where)
    files = external_data(source, where)
    target = ctx.out / "model.onnx"
    shutil.copyfile(source, target)
    for location, path in files.items():
        copy = inside(ctx.out, ctx.out / PurePosixPath(location))
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    try:
        onnx.checker.check_model(str(target))  # by path: external data and > 2 GB work
    except Exception as exc:  # ValidationError, or protobuf's DecodeError for a torn file
        raise StepFailed(f"{value} is not a valid ONNX model: {first_line(exc)}", where=where,
                         hint="point `onnx:` at a model saved with onnx.save (check it with "
                         "onnx.checker.check_model)") from exc


# --- external data, read without onnx ------------------------------------------------------
# A cached run must not import onnx (a second of start-up), yet the key needs the external
# data files: the few fields that lead to them are read from protobuf's wire format.
# Per onnx.proto: message -> {field number: message it holds}.
_HOLDS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 23: "sparse"},
}
_EXTERNAL_DATA, _DATA_LOCATION, _EXTERNAL = 13, 14, 1  # TensorProto's fields, and EXTERNAL


def external_locations(path: Path) -> tuple[str, ...]:
    """The `location` of every tensor the ONNX file at `path` keeps outside it; () for a
    file that does not parse (the load step's checker says what is wrong with it)."""
    stat = path.stat()
    return _locations(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)


@cache
def _locations(name: str, *signature: int) -> tuple[str, ...]:
    import mmap

    try:
        with open(name, "rb") as stream:
            if not signature[0]:
                return ()
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _scan(data)
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return ()


def _scan(data: Any) -> tuple[str, ...]:
    found: set[str] = set()
    pending = [("model", 0, len(data))]
    while pending:
        kind, start, end = pending.pop()
        if kind == "tensor":
            location = _tensor_location(data, start, end)
            if location is not None:
                found.add(location)
            continue
        for number, value in _fields(data, start, end):
            held = _HOLDS[kind].get(number)
            if held is not None and isinstance(value, tuple):
                pending.append((held, *value))
    return tuple(sorted(found))


def _tensor_location(data: Any, start: int, end: int) -> str | None:
    external, location = False, None
    for number, value in _fields(data, start, end):
        if number == _DATA_LOCATION and isinstance(value, int):
            external = value == _EXTERNAL
        elif number == _EXTERNAL_DATA and isinstance(value, tuple):
            entry = dict(_fields(data, *value))  # StringStringEntryProto: 1 key, 2 value
            key, text = entry.get(1), entry.get(2)
            if isinstance(key, tuple) and data[key[0]:key[1]] == b"location":
                location = data[text[0]:text[1]].decode() if isinstance(text, tuple) else ""
    return location if external else None


def _fields(data: Any, start: int, end: int) -> Iterator[tuple[int, Any]]:
    """(field number, value) of one message: an int for a varint, (start, end) for bytes or
    a message, None for a fixed-size number. Raises ValueError on a torn message."""
    position = start
    while position < end:
        tag, position = _varint(data, position)
        wire = tag & 7
        value: Any = None
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 2:
            length, position = _varint(data, position)
            value = (position, position + length)
            position += length
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
        if position > end:
            raise ValueError("a field runs past its message")
        yield tag >> 3, value


def _varint(data: Any, position: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 70:
        byte = data[position]
        result |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return result, position
        shift += 7
    raise ValueError("a varint longer than 10 bytes")
