"""Moving data between NumPy feeds and torch calls. Imports torch: use inside `run` only.

Inputs are bound to `forward` by name: an input whose name is one of forward's parameters
is passed by keyword, the others by position in the order the `inputs` section lists them.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from qntz.core.inputs import InputSpec

Call = tuple[tuple[Any, ...], dict[str, Any]]
NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def parameter_names(model: Any) -> list[str]:
    """forward's parameters that take a keyword, in order (TorchScript: from its schema)."""
    if model is None:
        return []
    spec = model.call_spec.in_spec if hasattr(model, "graph_signature") else getattr(
        model, "_in_spec", None)
    if spec is not None:  # an ExportedProgram (or its module) takes the call it was made with
        return list(spec.children()[1].context)
    forward = getattr(model, "forward", model)
    schema = getattr(forward, "schema", None)
    if schema is not None:
        return [a.name for a in schema.arguments[1:]]
    try:
        signature = inspect.signature(forward)
    except (TypeError, ValueError):
        return []
    return [p.name for p in signature.parameters.values() if p.kind in NAMED]


def to_torch(feed: dict[str, np.ndarray], inputs: dict[str, InputSpec],
             model: Any = None) -> Call:
    """(args, kwargs) for `model`: keywords for inputs named like its parameters (in the
    parameters' order), positions for the others."""
    params = parameter_names(model)
    device = model_device(model)
    args, kwargs = [], {}
    for name, spec in inputs.items():
        # a copy: a model that writes into its input must not change the caller's data
        tensor = torch.from_numpy(np.array(feed[name], copy=True))
        if spec.dtype == "bfloat16":
            tensor = tensor.to(torch.bfloat16)
        if device is not None:
            tensor = tensor.to(device)
        if name in params:
            kwargs[name] = tensor
        else:
            args.append(tensor)
    ordered = {n: kwargs[n] for n in sorted(kwargs, key=params.index)}
    return as_schema_lists(model, tuple(args), ordered)


def as_schema_lists(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    """A batch tensor passed as a list of its rows where a TorchScript forward declares
    `List[Tensor]` (torchvision's detectors take a list of images): eager Python iterates
    a batch tensor as it does a list, a scripted forward refuses anything but a list."""
    schema = getattr(getattr(model, "forward", None), "schema", None)
    if schema is None:
        return args, kwargs
    types = {a.name: a.type for a in schema.arguments[1:]}
    names = [a.name for a in schema.arguments[1:]]

    def listed(name: str | None, value: Any) -> Any:
        wanted = types.get(name) if name else None
        if isinstance(wanted, torch.ListType) and isinstance(value, torch.Tensor) and \
                isinstance(wanted.getElementType(), torch.TensorType):
            return list(value.unbind(0))
        return value

    positional = tuple(listed(names[i] if i < len(names) else None, a)
                       for i, a in enumerate(args))
    return positional, {n: listed(n, v) for n, v in kwargs.items()}


def cuda_problem(device: str) -> str | None:
    """Why `device` (cpu, cuda, cuda:N) cannot be used here; None when it can."""
    if not device.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device here"
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        return f"there are {torch.cuda.device_count()} CUDA devices here"
    return None


def model_device(model: Any) -> Any:
    """The accelerator a model's weights live on (its first parameter's or buffer's), where
    its inputs must go; None for the CPU, and for weights on `meta` (not computed on)."""
    for source in ("parameters", "buffers"):
        get = getattr(model, source, None)
        if not callable(get):
            continue
        try:
            first = next(iter(get()), None)
        except (TypeError, RuntimeError):
            first = None
        if isinstance(first, torch.Tensor):
            return None if first.device.type in ("cpu", "meta") else first.device
    return None


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for CUDA convolutions and matmuls while a reference is computed (restored
    after): a float32 reference on the GPU then holds candidates to the bar it does on the
    CPU, not one loosened by TF32's 10-bit mantissa."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def call_order(inputs: dict[str, InputSpec], model: Any) -> list[str]:
    """The input names in the order a call passes them: positions first, then keywords."""
    params = parameter_names(model)
    return [n for n in inputs if n not in params] + sorted(
        (n for n in inputs if n in params), key=params.index)


def all_keywords(call: Call, model: Any) -> dict[str, Any] | None:
    """The call with every argument named (torch.jit.trace takes either kind, not both);
    None when a positional argument has no parameter name (forward(*args))."""
    args, kwargs = call
    names = parameter_names(model)[:len(args)]  # Python fills the first parameters
    if len(names) < len(args) or set(names) & set(kwargs):
        return None
    return {**dict(zip(names, args)), **kwargs}


def trace(model: Any, call: Call, **options: Any) -> Any:
    """torch.jit.trace with the call's arguments: by keyword when any go by keyword."""
    named = all_keywords(call, model) if call[1] else None
    if named is not None:
        return torch.jit.trace(model, example_kwarg_inputs=named, **options)
    return torch.jit.trace(model, call[0], **options)


def export_call(feed: dict[str, np.ndarray], inputs: dict[str, InputSpec], model: Any
                ) -> tuple[tuple[Any, ...], dict[str, Any], list[str]]:
    """(args, kwargs, input names in call order) for torch.onnx.export of `model`.

    TorchScript takes keywords as positions in its schema's order: they are passed so when
    they follow the positional ones without a gap (the torchscript exporter refuses
    keywords for a ScriptModule)."""
    args, kwargs = to_torch(feed, inputs, model)
    names = call_order(inputs, model)
    if kwargs and isinstance(model, torch.jit.ScriptModule):
        params = parameter_names(model)
        if params[len(args):len(args) + len(kwargs)] == list(kwargs):
            return (*args, *kwargs.values()), {}, names
    return args, kwargs, names


def flatten_outputs(value: Any) -> list[np.ndarray]:
    """Tensors of a nested output (tuples, lists, dicts) in the order exporters use; `None`
    leaves are left out (and out of `output_names`)."""
    leaves = torch.utils._pytree.tree_leaves(value)
    out = []
    for leaf in leaves:
        if leaf is None:  # an optional output not computed: ONNX has no such output either
            continue
        if isinstance(leaf, torch.Tensor):
            leaf = leaf.detach()
            if leaf.dtype == torch.bfloat16:
                leaf = leaf.float()
            out.append(leaf.cpu().numpy())
        else:
            out.append(np.asarray(leaf))
    return out


def output_names(value: Any, inputs: Any = (), with_none: bool = False) -> list[str]:
    """Names of the flattened outputs: dict and ModelOutput keys, dotted for nested ones
    (`past_key_values.0.key`); `output` for a lone tensor, `output_0`, ... for a tuple. A
    key that is also an input's name (diffusers returns `sample` for a `sample` input)
    becomes `output.<key>`: ONNX names every value once. `None` leaves have no name unless
    `with_none`."""
    leaves = torch.utils._pytree.tree_leaves(value)
    paths = [p for p, leaf in zip(_leaf_paths(value), leaves) if with_none or leaf is not None]
    if len(paths) == 1 and not paths[0]:
        return ["output"]
    names = []
    for path in paths:
        parts = [str(_key(k)) for k in path]
        if not parts or isinstance(_key(path[0]), int):
            parts = [f"output_{parts[0]}" if parts else "output", *parts[1:]]
        names.append(".".join(parts))
    return _unique([f"output.{n}" if n in set(inputs) else n for n in names])


def _leaf_paths(value: Any) -> list[tuple]:
    """The key path of each leaf, in `tree_leaves` order. A library may register its
    output class without key paths (diffusers' BaseOutput): mappings and sequences are then
    walked here, and when that does not give one path per leaf the leaves go by position."""
    try:
        return [path for path, _ in torch.utils._pytree.tree_flatten_with_path(value)[0]]
    except ValueError:
        paths = list(_walk(value, ()))
        count = len(torch.utils._pytree.tree_leaves(value))
        return paths if len(paths) == count else [(i,) for i in range(count)]


def _walk(value: Any, prefix: tuple) -> Any:
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, (*prefix, key))
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            yield from _walk(item, (*prefix, index))
    else:
        yield prefix


def _key(entry: Any) -> Any:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name] - 1}")
    return out


def dynamic_shapes(inputs: dict[str, InputSpec], model: Any = None
                   ) -> tuple[dict[int, Any] | None, ...] | dict[str, Any]:
    """torch.export dynamic_shapes from the `inputs` section: one Dim per named dimension,
    `N * Dim` for a dim declared `multiple_of: {dim: N}` (a model that reshapes by it is
    exportable only so). A dict by forward's parameter names when some inputs go by
    keyword."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes: dict[str, dict[int, Any] | None] = {}
    steps = {d: n for spec in inputs.values() for d, n in spec.multiple_of.items()}
    for name, spec in inputs.items():
        axes = {}
        for axis, dim in spec.dynamic_axes.items():
            low, _, high = spec.dims[dim]
            if dim not in dims:
                step = steps.get(dim, 1)
                dims[dim] = Dim(dim, min=low, max=high) if step == 1 else \
                    step * Dim(f"{dim}_over_{step}", min=-(-low // step), max=high // step)
            axes[axis] = dims[dim]
        shapes[name] = axes or None
    params = parameter_names(model)
    if not any(n in params for n in inputs):
        return tuple(shapes.values())
    positional = [n for n in inputs if n not in params]
    named = dict(zip(positional, params))
    return {named.get(n, n): shapes[n] for n in call_order(inputs, model)}


def refused_dims(text: str, feed: dict[str, Any], inputs: dict[str, InputSpec]
                 ) -> tuple[list[str], int | None]:
    """The dynamic dims a model's refusal is about, and the multiple it asks for if it says:
    "divisible by 4" names the dims whose sizes are not; else the dims whose sizes the
    message quotes; else the first dynamic dim."""
    import re

    sizes: dict[str, int] = {}
    for name, spec in inputs.items():
        shape = getattr(feed.get(name), "shape", None)
        for axis, dim in spec.dynamic_axes.items():
            if shape is not None and axis < len(shape):
                sizes.setdefault(dim, int(shape[axis]))
    said = re.search(r"(?:divisible by|multiple of|multiples of)\s+(\d+)", text)
    step = int(said.group(1)) if said else None
    if step and step > 1:
        found = [d for d, v in sizes.items() if v % step]
    else:
        quoted = {int(n) for n in re.findall(r"\d+", text)}
        found = [d for d, v in sizes.items() if v in quoted]
        # a size that every dim shares (batch 1) says nothing when another dim is quoted too
        if len(found) > 1:
            found = [d for d in found if sizes[d] != 1] or found
    dynamic = sorted({d for spec in inputs.values() for d in spec.dims})
    return (found or dynamic[:1]), step


def call_eager(model: Any, feed: dict[str, Any], inputs: dict[str, InputSpec]) -> Any:
    """The eager model's result on `feed`; when the model itself fails, InputRejected naming
    the inputs' shapes and the rule that would exclude them."""
    args, kwargs = to_torch(feed, inputs, model)
    try:
        return model(*args, **kwargs)
    except Exception as exc:
        from qntz.core.errors import InputRejected, first_line

        shapes = ", ".join(f"{n} {list(getattr(a, 'shape', []))}" for n, a in feed.items())
        refused, step = refused_dims(str(exc), feed, inputs)
        rule = ", ".join(f"{d}: {step or 'N'}" for d in refused)
        hint = (f"declare the sizes it accepts: `multiple_of: {{{rule}}}` on the "
                f"input, or narrow `dynamic`" if refused else "check the inputs' shapes and "
                "dtypes against what the model's forward expects")
        raise InputRejected(f"the model itself fails on {shapes}: {first_line(exc)}",
                            hint=hint) from exc
