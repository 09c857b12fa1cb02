"""Float nodes of a Q/DQ model that ONNX Runtime really runs in float.

ONNX Runtime's level-1 optimizer `WeightBiasQuantization` rewrites a Conv, ConvTranspose or
Gemm whose input is a per-tensor DequantizeLinear, whose weight is a float initializer and
whose output feeds a QuantizeLinear: it quantizes the weight per tensor to int8 so the node
fuses into an integer kernel. A node the quantizer left float (excluded, or kept float for
the accuracy budget) between two quantized neighbours is exactly that shape, so at load
time it silently gets per-tensor int8 weights, which ruins depthwise convolutions
(EfficientNet-Lite0, 16 depthwise convolutions kept float: mean cosine 0.997 with graph
optimizations off, 0.963 with them on). A per-axis DequantizeLinear of the same scale and
zero point, read by the float node alone, computes the same values and is not per-tensor,
so the optimizer leaves the node float.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WEIGHTED = ("Conv", "ConvTranspose", "Gemm")
PER_AXIS_OPSET = 13  # DequantizeLinear's `axis`


def protect_float_nodes(path: Path) -> list[str]:
    """Rewrite the model at `path` in place so its float weighted nodes stay float under
    ONNX Runtime's optimizer; returns their names."""
    import onnx

    from qntz.runtime.onnx_files import save_onnx

    model = onnx.load(str(path))
    if _opset(model) < PER_AXIS_OPSET:
        return []
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    initializers = {t.name: t for t in graph.initializer}
    protected, after = [], {}
    for node in list(graph.node):
        source = producers.get(node.input[0]) if node.op_type in WEIGHTED else None
        if source is None or source.op_type != "DequantizeLinear" or \
                not _float_initializer(initializers.get(node.input[1])):
            continue
        channels = _input_channels(node, initializers[node.input[1]])
        if channels is not None and _per_tensor(source, initializers):
            copy = _per_axis_copy(graph, source, node, channels, initializers)
            after.setdefault(source.output[0], []).append(copy)
            node.input[0] = copy.output[0]
            protected.append(node.name)
    if protected:  # each copy right after its source: the node list stays topological
        nodes = [onnx.NodeProto.FromString(m.SerializeToString()) for n in graph.node
                 for m in (n, *after.get(n.output[0] if n.output else "", []))]
        del graph.node[:]
        graph.node.extend(nodes)
        save_onnx(model, path)
    return protected


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _float_initializer(tensor: Any) -> bool:
    return tensor is not None and tensor.data_type == 1


def _per_tensor(dq: Any, initializers: dict[str, Any]) -> bool:
    scale = initializers.get(dq.input[1])
    zero = initializers.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    return scale is not None and int(np.prod(scale.dims)) == 1 and \
        (len(dq.input) < 3 or not dq.input[2] or
         (zero is not None and int(np.prod(zero.dims)) == 1))


def _input_channels(node: Any, weight: Any) -> int | None:
    """The length of the axis of the node's input that meets the weight."""
    attrs = {a.name: a for a in node.attribute}
    dims = list(weight.dims)
    if node.op_type == "Conv" and len(dims) > 1:
        return dims[1] * (attrs["group"].i if "group" in attrs else 1)
    if node.op_type == "ConvTranspose" and dims:
        return dims[0]
    if node.op_type == "Gemm" and len(dims) == 2 and not _flag(attrs, "transA"):
        return dims[1] if _flag(attrs, "transB") else dims[0]
    return None


def _flag(attrs: dict[str, Any], name: str) -> bool:
    return name in attrs and attrs[name].i == 1


def _per_axis_copy(graph: Any, dq: Any, node: Any, channels: int,
                   initializers: dict[str, Any]) -> Any:
    """A DequantizeLinear along axis 1 with `dq`'s scale and zero point repeated."""
    from onnx import helper, numpy_helper

    stem = f"{dq.output[0]}_per_axis_for_{node.name}"
    inputs = [dq.input[0]]
    for suffix, name in zip(("scale", "zero_point"), dq.input[1:3]):
        if not name:
            continue
        value = numpy_helper.to_array(initializers[name]).reshape(-1)
        graph.initializer.append(numpy_helper.from_array(
            np.repeat(value, channels), f"{stem}_{suffix}"))
        inputs.append(f"{stem}_{suffix}")
    return helper.make_node("DequantizeLinear", inputs, [stem], name=stem, axis=1)
