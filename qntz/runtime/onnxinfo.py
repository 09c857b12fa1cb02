"""Facts about an ONNX file: its inputs, outputs, operators and size. Imports onnx only."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any


def describe(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph

    def shape(value: Any) -> list[int | str]:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_param or d.dim_value for d in dims]

    initializers = {i.name for i in graph.initializer}
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                      None),
        "inputs": {v.name: shape(v) for v in graph.input if v.name not in initializers},
        "outputs": {v.name: shape(v) for v in graph.output},
        "nodes": len(graph.node),
        "ops": dict(sorted(Counter(n.op_type for n in graph.node).items())),
        "bytes": sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file()),
    }
