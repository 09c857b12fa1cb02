"""Artifacts that depend only on what their key records: no random ids, no absolute paths.

The same checkout in two folders must write the same bytes, or every downstream key differs.
The exporters record where the model's code lives (stack traces in an ExportedProgram and
in ONNX metadata, TorchScript debug files) and TorchScript archives carry a random id.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

_FILE = re.compile(r'File "([^"]+)"')


def portable_paths(text: str, root: Path) -> str:
    """`File "/abs/path.py"` in stack traces, relative to the pipeline or to the library
    folder (site-packages, the standard library) the file is in."""
    bases = sorted({str(Path(p).resolve()) for p in sys.path if p and Path(p).is_dir()},
                   key=len, reverse=True)
    home = str(root.resolve())

    def shorten(match: re.Match[str]) -> str:
        path = match.group(1)
        for base in (home, *bases):
            if path.startswith(base.rstrip("/") + "/"):
                return f'File "{path[len(base.rstrip("/")) + 1:]}"'
        return match.group(0)

    return _FILE.sub(shorten, text) if 'File "/' in text else text


def portable_program(program: Any, root: Path) -> None:
    """Stack traces of an ExportedProgram's nodes, made folder-independent in place."""
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in getattr(graph, "nodes", ()):
            trace = node.meta.get("stack_trace")
            if isinstance(trace, str):
                node.meta["stack_trace"] = portable_paths(trace, root)


def portable_onnx(path: Path, root: Path) -> bool:
    """Stack traces and doc strings in an ONNX file made folder-independent; True if changed."""
    import onnx

    model = onnx.load(str(path))
    changed = False
    for holder in _metadata_holders(model):
        if holder.doc_string:
            fixed = portable_paths(holder.doc_string, root)
            changed |= fixed != holder.doc_string
            holder.doc_string = fixed
        for prop in getattr(holder, "metadata_props", ()):
            fixed = portable_paths(prop.value, root)
            changed |= fixed != prop.value
            prop.value = fixed
    if changed:
        from qntz.runtime.onnx_files import save_onnx

        save_onnx(model, path)
    return changed


def _metadata_holders(model: Any) -> list[Any]:
    graphs = [model.graph]
    holders: list[Any] = [model]
    while graphs:
        graph = graphs.pop()
        holders += [graph, *graph.node, *graph.initializer, *graph.value_info,
                    *graph.input, *graph.output]
        for node in graph.node:
            graphs += [a.g for a in node.attribute if a.HasField("g")]
            graphs += [g for a in node.attribute for g in a.graphs]
    for function in model.functions:
        holders += [function, *function.node]
    return holders


def rewrite_archive(archive: bytes) -> bytes:
    """A torch zip archive (TorchScript `.pt`, ExportedProgram `.pt2`) without its
    TorchScript debug files (absolute paths of the model's code) and with a serialization id
    derived from the content instead of a random one.

    torch.jit.load needs no debug files: they only add source lines to error messages.
    Written with torch's own writer, so records keep the alignment torch expects.
    """
    import io

    import torch
    from torch.serialization import _get_storage_alignment, get_crc32_options

    reader = torch._C.PyTorchFileReader(io.BytesIO(archive))
    names = [n for n in reader.get_all_records()
             if not n.endswith(".debug_pkl") and n != ".data/serialization_id"]
    content = hashlib.sha256()
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out, get_crc32_options(), _get_storage_alignment())
    for name in names:
        data = reader.get_record(name)
        content.update(name.encode() + b"\0" + len(data).to_bytes(8, "little"))
        content.update(data)
        writer.write_record(name, data, len(data))
    ident = str(int(content.hexdigest()[:32], 16)).zfill(40)  # the 40 digits torch writes
    writer.write_record(".data/serialization_id", ident.encode(), len(ident))
    writer.write_end_of_file()
    return out.getvalue()
