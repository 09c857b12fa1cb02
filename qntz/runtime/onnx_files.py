"""ONNX files of any size: one model file and, past a threshold, one data file beside it.

Protobuf cannot serialize a message past 2 GB, so a larger ONNX model keeps its tensors in
external data. Every ONNX file qntz writes goes through `save_onnx`, which picks the layout
from the model's size: under the threshold a single `model.onnx`; over it `model.onnx`
(the graph) plus `model.onnx.data` (every tensor of 1 KiB or more, one file, its `location`
relative), side by side in the same folder. ONNX Runtime sessions, onnxsim and
TensorRT's parser built from the path find the data file beside the model; qntz reads a
model with its data through `load_onnx` rather than `onnx.load`, which refuses the hard
links the cache lays `out/` out with. The cache keeps every file of a step's output
folder, so the pair travels together.

The threshold is one process-wide setting, `QNTZ_EXTERNAL_DATA_THRESHOLD` (bytes; default
1.8e9, just under protobuf's 2 GB). Tests set it low to exercise the external-data path on
small models. A threshold other than the default enters the keys of the kinds that write
ONNX (`threshold_key`), since it changes the files they write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

THRESHOLD_VARIABLE = "QNTZ_EXTERNAL_DATA_THRESHOLD"
DEFAULT_THRESHOLD = 1_800_000_000  # bytes: under protobuf's 2 GB with room for the graph
TENSOR_THRESHOLD = 1024  # tensors smaller than this stay inside the model file


def external_data_threshold() -> int:
    """The model size in bytes past which ONNX is written with external data."""
    from qntz.core.errors import QntzError

    text = os.environ.get(THRESHOLD_VARIABLE, "").strip()
    if not text:
        return DEFAULT_THRESHOLD
    try:
        value = int(float(text))
    except ValueError:
        value = -1
    if value < 0:
        raise QntzError(f"{THRESHOLD_VARIABLE}={text!r} is not a size in bytes",
                        hint="set it to a number of bytes, e.g. 1.8e9, or unset it")
    return value


def threshold_key() -> dict[str, Any]:
    """What an ONNX-writing kind adds to its `key_extras`: nothing at the default threshold
    (keys stay as they were), the threshold itself otherwise."""
    threshold = external_data_threshold()
    return {} if threshold == DEFAULT_THRESHOLD else {"external_data_threshold": threshold}


def data_file(path: Path) -> Path:
    """Where the external data of the model at `path` lives: `<name>.data` beside it."""
    return path.with_name(path.name + ".data")


def tensor_bytes(model: Any) -> int:
    """The bytes of a model's tensors (initializers, and constants held in attributes): a
    cheap estimate of its serialized size, which `ByteSize()` cannot give past 2 GB."""
    from onnx.external_data_helper import _get_all_tensors

    total = 0
    for tensor in _get_all_tensors(model):
        if tensor.data_location == tensor.EXTERNAL:  # not loaded: its recorded length
            info = {e.key: e.value for e in tensor.external_data}
            total += int(info.get("length", 0))
        else:
            total += tensor.ByteSize()
    return total


def is_large(model: Any, threshold: int | None = None) -> bool:
    """True when `model` is to be written with external data."""
    limit = external_data_threshold() if threshold is None else threshold
    return tensor_bytes(model) > limit


def save_onnx(model: Any, path: Path, threshold: int | None = None, keep: bool = False) -> bool:
    """Write `model` to `path`, with its tensors in `<name>.data` beside it when the model is
    over `threshold` (default: `external_data_threshold()`); True when it used external data.

    A stale data file at that place is removed first (onnx appends to one it finds). Writing
    external data moves the tensors out of `model`: pass `keep=True` to read them back in
    and go on using it."""
    import onnx

    path = Path(path)
    target = data_file(path)
    target.unlink(missing_ok=True)
    if not is_large(model, threshold):
        onnx.save_model(model, str(path))
        return False
    from onnx.external_data_helper import _get_all_tensors, set_external_data

    # what onnx.save_model(save_as_external_data=True) does, without its refusal when a
    # file of the data file's name exists in the current folder (it checks there)
    for tensor in _get_all_tensors(model):
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= TENSOR_THRESHOLD:
            set_external_data(tensor, target.name)
    onnx.save_model(model, str(path))  # writes each tensor marked external into `target`
    if keep:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return True


def infer_shapes(model: Any, with_data: bool = True) -> Any:
    """onnx's shape inference on a model of any size: a copy with the inferred types.

    It serializes the model, which protobuf refuses past 2 GB, and reads only small
    constants (shapes, axes), so above the threshold the large tensors' data is set aside
    while it runs, then put back (into the copy too, unless `with_data` is False)."""
    from onnx import shape_inference
    from onnx.external_data_helper import _get_all_tensors

    if not is_large(model):
        return shape_inference.infer_shapes(model)
    held: list[bytes | None] = []
    for tensor in _get_all_tensors(model):
        large = tensor.HasField("raw_data") and len(tensor.raw_data) >= TENSOR_THRESHOLD
        held.append(tensor.raw_data if large else None)
        if large:
            tensor.ClearField("raw_data")
    try:
        inferred = shape_inference.infer_shapes(model)
    finally:
        _restore(model, held)
    if with_data:  # the same tensors, in the same order: inference only adds value_info
        _restore(inferred, held)
    return inferred


def _restore(model: Any, held: list[bytes | None]) -> None:
    from onnx.external_data_helper import _get_all_tensors

    for tensor, data in zip(_get_all_tensors(model), held):
        if data is not None:
            tensor.raw_data = data


def load_onnx(path: Path) -> Any:
    """`onnx.load(path)` with its external data read by qntz.

    onnx refuses to read a data file with more than one hard link ("a potential hardlink
    attack"), and the cache lays a step's files out in `out/` as hard links of the entry's,
    so onnx.load fails on a cached model with external data (ONNX Runtime's sessions,
    onnxsim and TensorRT's parser read it). The same guard against a planted file is kept
    here: a data file must lie in the model's folder and be no symbolic link."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    folder = path.resolve().parent
    handles: dict[Path, Any] = {}
    try:
        for tensor in _get_all_tensors(model):
            if tensor.data_location != tensor.EXTERNAL:
                continue
            info = {e.key: e.value for e in tensor.external_data}
            file = folder / info.get("location", "")
            if file.is_symlink() or file.resolve().parent != folder or not file.is_file():
                raise ValueError(f"the data of tensor '{tensor.name}' of {path} is not in a "
                                 f"file beside it ({info.get('location')!r})")
            if file not in handles:
                handles[file] = file.open("rb")
            handle = handles[file]
            handle.seek(int(info.get("offset", 0)))
            length = int(info["length"]) if "length" in info else -1
            tensor.raw_data = handle.read(length)
            if length >= 0 and len(tensor.raw_data) != length:
                raise ValueError(f"{file} ends before the data of tensor '{tensor.name}'")
            del tensor.external_data[:]
            tensor.data_location = tensor.DEFAULT
    finally:
        for handle in handles.values():
            handle.close()
    return model


# how every external tensor's `location` entry starts in the file: a StringStringEntryProto
# whose field 1 (tag 0x0a) is the 8-byte key "location"
LOCATION_MARK = b"\x0a\x08location"


def external_files(path: Path) -> list[Path]:
    """The external data files the model at `path` refers to (none for a single file).

    A file without the bytes every `location` entry is written as has none: found so with
    one scan of the file instead of a parse of the whole model (500 MB of weights at GPT-2's
    124M); a file holding those bytes (a data reference, or weights that happen to) is parsed."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    if not _may_refer_to_data(Path(path)):
        return []
    model = onnx.load(str(path), load_external_data=False)
    found = {dict((e.key, e.value) for e in t.external_data).get("location", "")
             for t in _get_all_tensors(model) if t.data_location == t.EXTERNAL}
    return [path.parent / name for name in sorted(found) if name]


def _may_refer_to_data(path: Path) -> bool:
    import mmap

    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            return False
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return view.find(LOCATION_MARK) >= 0


def stored_bytes(path: Path) -> int:
    """The bytes of the model at `path` on disk, its external data files included."""
    path = Path(path)
    return path.stat().st_size + sum(f.stat().st_size for f in external_files(path)
                                     if f.is_file())


def install_onnx(source: Path, target: Path, threshold: int | None = None) -> bool:
    """The model a third-party tool wrote at `source` (with any external data, in whatever
    layout it chose), rewritten to `target` in `save_onnx`'s layout; `source` and its data
    files are left as they were unless `source` is `target`. True when it used external
    data.

    A single file under the threshold is copied as it is (or left in place), byte for byte."""

    source, target = Path(source), Path(target)
    limit = external_data_threshold() if threshold is None else threshold
    files = external_files(source)
    if not files and source.stat().st_size <= limit:
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
        data_file(target).unlink(missing_ok=True)
        return False
    model = load_onnx(source)  # tensors in memory: the old data files may go
    if source.resolve() == target.resolve():
        for old in files:
            old.unlink(missing_ok=True)
    return save_onnx(model, target, limit)


@contextlib.contextmanager
def session_source(model: Any) -> Iterator[bytes | str]:
    """What to build an ONNX Runtime session from, inside this block, for an in-memory
    model: its bytes, or, for a model too large to hand over serialized, the path it was
    written to (with its data file) in a temporary folder (`tempfile`'s, which qntz's scratch
    points into its cache). `model` stays usable either way."""
    if not is_large(model):
        yield model.SerializeToString()
        return
    with tempfile.TemporaryDirectory(prefix="probe-") as folder:
        path = Path(folder) / "probe.onnx"
        save_onnx(model, path, keep=True)
        yield str(path)


def remove_onnx(path: Path) -> None:
    """A model file and its data file, removed."""
    Path(path).unlink(missing_ok=True)
    data_file(Path(path)).unlink(missing_ok=True)
