"""Named datasets of the `data` section: generated, .npy/.npz files, image folders, callables.

A dataset is a list of feeds (input name -> batch array), each checked against `inputs`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError
from qntz.core.inputs import InputSpec, generate_feed, opt_sizes
from qntz.core.model_source import display_path, source_digests, split_factory
from qntz.core.yamlfile import is_folder, is_regular_file

if TYPE_CHECKING:
    import numpy as np

    from qntz.core.hashing import FileDigests
    from qntz.core.spec import Pipeline

Feed = dict[str, "np.ndarray"]
DEFAULT_SAMPLES = 16


class DataError(PipelineError):
    """A dataset that does not fit the model's inputs: exit 2, naming the data entry."""


def dataset_spec(pipeline: Pipeline, name: str | None, where: str) -> dict[str, Any]:
    if name is None:
        return {"from": "generate"}
    if name not in pipeline.data:
        from qntz.core.wording import did_you_mean
        raise PipelineError(f"no dataset '{name}'{did_you_mean(name, list(pipeline.data))}",
                            where=where, hint="define it under `data:` or fix the name")
    return pipeline.data[name]


def check_spec(pipeline: Pipeline, name: str) -> None:
    """Checks that need no loading: files exist, one input for single-array sources."""
    spec, where = pipeline.data[name], pipeline.where("data", name)
    kind = spec["from"]
    if kind in ("npz", "npy", "images"):
        if "path" not in spec:
            raise DataError(f"data '{name}': `from: {kind}` needs a `path`", where=where,
                            hint="add path: relative/to/pipeline")
        _check_path(pipeline, name, kind)
    if "input" in spec and spec["input"] not in pipeline.inputs:
        from qntz.core.wording import did_you_mean
        raise DataError(f"data '{name}': no input '{spec['input']}'"
                        f"{did_you_mean(spec['input'], list(pipeline.inputs))}",
                        where=pipeline.where("data", name, "input"),
                        hint="name one of: " + ", ".join(pipeline.inputs))
    if kind == "callable" and "function" not in spec:
        raise DataError(f"data '{name}': `from: callable` needs `function: module:attr`",
                        where=where, hint="e.g. function: data.calib:batches")


def _check_path(pipeline: Pipeline, name: str, kind: str) -> None:
    """Only regular files are read (a folder of them for images): a FIFO or a device such as
    /dev/zero would block or never end."""
    path = pipeline.root / pipeline.data[name]["path"]
    found = is_folder(path) if kind == "images" else is_regular_file(path)
    if not found:
        what = "a folder of images" if kind == "images" else "a regular file"
        raise DataError(f"data '{name}': {path} not found or not {what}",
                        where=pipeline.where("data", name, "path"),
                        hint=f"point `path` at {what} (relative to the pipeline file)")


def data_digest(pipeline: Pipeline, name: str | None, digests: FileDigests) -> dict[str, Any]:
    """What identifies a dataset's content: its settings and the digests of its files."""
    if name is None:
        return {"from": "generate"}
    spec = pipeline.data[name]
    files: dict[str, str] = {}
    if spec["from"] in ("npz", "npy", "images"):
        path = pipeline.root / spec["path"]
        if spec["from"] == "images":
            from qntz.core.images import image_files
            paths = image_files(path, pipeline.where("data", name, "path"))
        else:
            paths = [path]
        files = {display_path(p, pipeline.root): digests.of(p) for p in paths}
    elif spec["from"] == "callable":
        module, _ = split_factory(spec["function"])
        files = source_digests(module, pipeline.root, digests)
    return {"spec": spec, "files": files}


def load_dataset(pipeline: Pipeline, name: str | None, limit: int | None = None) -> list[Feed]:
    """The dataset's batches (at most `limit`, else its `samples`, else all), checked."""
    spec = dataset_spec(pipeline, name, pipeline.where("data", name) if name else "")
    label = f"data '{name}'" if name else "generated data"
    where = pipeline.where("data", name) if name else str(pipeline.path)
    count = limit or spec.get("samples") or (
        DEFAULT_SAMPLES if spec["from"] == "generate" else 1 << 30)
    try:
        feeds = list(_take(_source(pipeline, spec, count), count))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{label} could not be read: {type(exc).__name__}: {exc}", where=where,
                        hint="check the file or function behind it") from exc
    if not feeds:
        raise DataError(f"{label} is empty", where=where, hint="give it at least one sample")
    return [_checked(feed, pipeline.inputs, label, where, i) for i, feed in enumerate(feeds)]


def _take(items: Iterable[Feed], count: int) -> Iterable[Feed]:
    for index, item in enumerate(items):
        if index >= count:
            return
        yield item


def _source(pipeline: Pipeline, spec: dict[str, Any], count: int) -> Iterable[Feed]:
    import numpy as np
    inputs, kind = pipeline.inputs, spec["from"]
    if kind == "generate":
        rng = np.random.default_rng(2000)
        sizes = opt_sizes(inputs)
        return (generate_feed(inputs, sizes, rng) for _ in range(count))
    if kind == "callable":
        from qntz.core.model_source import import_factory
        function = import_factory(spec["function"], pipeline.root, str(pipeline.path))
        return (_as_feed(item, inputs) for item in function())
    path = pipeline.root / spec["path"]
    if kind == "npz":
        with np.load(path) as archive:
            arrays = {k: archive[k] for k in archive.files}
        if len(inputs) == 1 and len(arrays) == 1:
            arrays = {next(iter(inputs)): next(iter(arrays.values()))}
        missing = [n for n in inputs if n not in arrays]
        if missing:
            raise DataError(f"{path.name} has no array for input '{missing[0]}' "
                            f"(it has {', '.join(arrays)})", where=str(path),
                            hint="save one array per input name: np.savez(path, x=...)")
        return _batches(arrays, spec, inputs)
    target = _single_input(spec, inputs, path)
    if kind == "npy":
        return _batches({target: np.load(path)}, spec, inputs)
    from qntz.core.images import load_images
    return _batches({target: load_images(path, spec)}, spec, inputs)


def _single_input(spec: dict[str, Any], inputs: dict[str, InputSpec], path: Path) -> str:
    if "input" in spec:
        return spec["input"]
    if len(inputs) != 1:
        raise DataError(f"{path.name} feeds one input, the model has {len(inputs)}",
                        where=str(path), hint="add `input: NAME` to the data entry")
    return next(iter(inputs))


def _batches(arrays: dict[str, np.ndarray], spec: dict[str, Any],
             inputs: dict[str, InputSpec]) -> Iterable[Feed]:
    """Split arrays stacked along the first axis into batches of `batch` (default: opt)."""
    first = inputs[next(iter(arrays))]
    default = opt_sizes(inputs).get(first.shape[0], first.shape[0]) if first.shape else 1
    batch = spec.get("batch", default if isinstance(default, int) else 1)
    total = min(len(a) for a in arrays.values())
    for start in range(0, total, batch):
        yield {n: a[start:start + batch] for n, a in arrays.items()}


def _as_feed(item: Any, inputs: dict[str, InputSpec]) -> Feed:
    import numpy as np
    if isinstance(item, dict):
        return {k: np.asarray(v) for k, v in item.items()}
    if isinstance(item, (tuple, list)):
        return {n: np.asarray(v) for n, v in zip(inputs, item)}
    return {next(iter(inputs)): np.asarray(item)}


def _checked(feed: Feed, inputs: dict[str, InputSpec], label: str, where: str,
             index: int) -> Feed:
    import numpy as np
    out: Feed = {}
    for name, spec in inputs.items():
        if name not in feed:
            raise DataError(f"{label}, batch {index}: no value for input '{name}'", where=where,
                            hint=f"yield a dict with the keys {', '.join(inputs)}")
        out[name] = _fit(np.asarray(feed[name]), spec, f"{label}, batch {index}", where)
    return out


def _fit(array: np.ndarray, spec: InputSpec, label: str, where: str) -> np.ndarray:
    import numpy as np
    want = np.dtype("float32" if spec.dtype == "bfloat16" else spec.dtype)
    if array.dtype != want:
        same_family = (np.issubdtype(array.dtype, np.floating) and np.issubdtype(want, np.floating)
                       ) or (np.issubdtype(array.dtype, np.integer)
                             and np.issubdtype(want, np.integer))
        if not same_family:
            raise DataError(f"{label}: input '{spec.name}' is {array.dtype}, the model takes "
                            f"{spec.dtype}", where=where, hint=f"store it as {spec.dtype}")
        array = array.astype(want)
    if array.ndim != len(spec.shape):
        raise DataError(f"{label}: input '{spec.name}' has shape {list(array.shape)}, "
                        f"expected {len(spec.shape)} dims {list(spec.shape)}", where=where,
                        hint="match the `inputs` shape")
    for axis, (got, dim) in enumerate(zip(array.shape, spec.shape)):
        low, high = (spec.dims[dim][0], spec.dims[dim][2]) if isinstance(dim, str) else (dim, dim)
        if not low <= got <= high:
            raise DataError(f"{label}: input '{spec.name}' axis {axis} is {got}, expected "
                            f"{dim if isinstance(dim, int) else f'{dim} in [{low}, {high}]'}",
                            where=where, hint="match the `inputs` shape and dynamic ranges")
    return array
