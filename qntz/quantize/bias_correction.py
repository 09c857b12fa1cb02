"""Bias correction of quantized convolutions: the classic fix for depthwise layers.

Rounding a depthwise kernel of nine weights per channel shifts each channel's mean output
by sum(W_q - W) * E[x]; the shifts add up through the network and move the arg-max
(Nagel et al., "Data-Free Quantization", 2019). The expected input of every quantized
Conv/Gemm is measured on the calibration data as the quantized model computes it (for a
convolution, per kernel tap, so padding and stride are exact), and the shift is taken off
that layer's int32 bias. Only the weights' error is corrected: measuring the whole output
error instead mixes in clipping at the activation and diverges when layers are corrected
together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Layer:
    """A quantized Conv/Gemm whose int32 bias can absorb its weights' rounding error."""

    node: Any  # the NodeProto in the quantized model
    error: np.ndarray  # dequantized weight minus float weight, laid out as the node uses it
    bias: str  # int32 initializer feeding the bias DequantizeLinear
    scale: str  # that DequantizeLinear's scale


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _dequantized(node: Any, tensors: dict[str, np.ndarray]) -> np.ndarray | None:
    """The weight a DequantizeLinear node yields, when all its inputs are constants."""
    if any(i and i not in tensors for i in node.input):
        return None
    value = tensors[node.input[0]].astype(np.float64)
    scale = tensors[node.input[1]].astype(np.float64)
    zero = tensors[node.input[2]].astype(np.float64) if len(node.input) > 2 and \
        node.input[2] else np.zeros_like(scale)
    if scale.ndim == 1 and value.ndim > 1:
        shape = [1] * value.ndim
        shape[_attrs(node).get("axis", 1) % value.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (value - zero) * scale


def layers(reference: Any, quantized: Any) -> list[Layer]:
    """Quantized Conv/Gemm nodes whose weight and int32 bias come through DequantizeLinear."""
    from onnx import numpy_helper

    float_weights = {i.name: i for i in reference.graph.initializer}
    float_nodes = {n.name: n for n in reference.graph.node}
    tensors = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
    producers = {o: n for n in quantized.graph.node for o in n.output}
    found = []
    for node in quantized.graph.node:
        original = float_nodes.get(node.name)
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or original is None \
                or original.input[1] not in float_weights:
            continue
        weight, bias = producers.get(node.input[1]), producers.get(node.input[2])
        if weight is None or bias is None or weight.op_type != "DequantizeLinear" or \
                bias.op_type != "DequantizeLinear" or bias.input[0] not in tensors:
            continue
        rounded = _dequantized(weight, tensors)
        if rounded is None:
            continue
        error = rounded - numpy_helper.to_array(float_weights[original.input[1]])
        found.append(Layer(node, error, bias.input[0], bias.input[1]))
    return found


def _tap_means(x: np.ndarray, node: Any, kernel: tuple[int, ...]) -> np.ndarray:
    attrs = _attrs(node)
    dims = len(kernel)
    return _taps(x, kernel, attrs.get("pads", [0] * 2 * dims), attrs.get("strides", [1] * dims),
                 attrs.get("dilations", [1] * dims))


def _taps(x: np.ndarray, kernel: tuple[int, ...], pads: list[int], strides: list[int],
          dilations: list[int]) -> np.ndarray:
    """Sum over the batch of the input each kernel tap sees, averaged over output positions:
    channels x kernel taps (the zero padding included, as the convolution sees it)."""
    dims = len(kernel)
    padded = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [
        (pads[d], pads[d + dims]) for d in range(dims)])
    outs = [(padded.shape[2 + d] - dilations[d] * (kernel[d] - 1) - 1) // strides[d] + 1
            for d in range(dims)]
    taps = np.empty((x.shape[1], *kernel))
    for tap in np.ndindex(*kernel):
        window = tuple(slice(tap[d] * dilations[d],
                             tap[d] * dilations[d] + strides[d] * (outs[d] - 1) + 1, strides[d])
                       for d in range(dims))
        taps[(slice(None), *tap)] = padded[(slice(None), slice(None), *window)].mean(
            axis=tuple(range(2, 2 + dims))).sum(0)
    return taps


def _grouped(error: np.ndarray, taps: np.ndarray, groups: int) -> np.ndarray:
    """Per output channel: the weight error of each tap times the mean input it sees."""
    out_channels, per_group = error.shape[:2]
    errors = error.reshape(groups, out_channels // groups, per_group, -1)
    return np.einsum("goct,gct->go", errors, taps.reshape(groups, per_group, -1)).reshape(-1)


def channel_shift(error: np.ndarray, x: np.ndarray, groups: int, pads: list[int],
                  strides: list[int]) -> np.ndarray:
    """Mean output shift per channel of a convolution whose weights are off by `error`, on
    input `x` (the same figure as averaging conv(x, error) over batch and positions)."""
    kernel = error.shape[2:]
    taps = _taps(x, kernel, pads, strides, [1] * len(kernel)) / len(x)
    return _grouped(error, taps, groups)


def _shift(layer: Layer, mean_input: np.ndarray) -> np.ndarray:
    """Mean output shift per output channel caused by the weights' rounding."""
    if layer.node.op_type == "Gemm":
        transposed = _attrs(layer.node).get("transB", 0)
        return layer.error @ mean_input if transposed else mean_input @ layer.error
    return _grouped(layer.error, mean_input, _attrs(layer.node).get("group", 1))


def mean_inputs(model: Any, found: list[Layer], feeds: list[dict[str, np.ndarray]]
                ) -> list[np.ndarray]:
    """What each layer's input averages to on `feeds` (per kernel tap for convolutions)."""
    import onnx
    from onnx import helper

    from qntz.runtime.onnx_files import session_source
    from qntz.runtime.ortrun import session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = list(dict.fromkeys(layer.node.input[0] for layer in found))
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in known)
    with session_source(probe) as source:
        sess = session(source)
    del probe
    inputs = {i.name for i in sess.get_inputs()}
    sums: list[np.ndarray] = [np.zeros(1)] * len(found)
    rows = 0
    for feed in feeds:
        values = dict(zip(names, sess.run(names, {k: v for k, v in feed.items() if k in inputs})))
        rows += len(next(iter(values.values())))
        for index, layer in enumerate(found):
            x = values[layer.node.input[0]]
            sums[index] = sums[index] + (x.reshape(-1, x.shape[-1]).sum(0, np.float64)
                                         if layer.node.op_type == "Gemm" else x.sum(0, np.float64))
    # the tap means are linear in the input: taken once, of the sum over all rows
    return [s / rows if layer.node.op_type == "Gemm" else
            _tap_means(s[None], layer.node, layer.error.shape[2:]) / rows
            for layer, s in zip(found, sums)]


def correct_biases(quantized: Path, reference: Path, feeds: list[dict[str, np.ndarray]]
                   ) -> dict[str, Any]:
    """Rewrite `quantized` with each quantized Conv/Gemm's bias corrected for its weights'
    rounding; returns how many layers moved and the largest shift, for the summary."""
    import onnx
    from onnx import numpy_helper

    from qntz.runtime.onnx_files import load_onnx, save_onnx

    model = onnx.load(str(quantized))
    found = layers(load_onnx(reference), model)  # with its data: the float weights are read
    if not found:
        return {"layers": 0}
    tensors = {i.name: i for i in model.graph.initializer}
    limit, largest = np.iinfo(np.int32), 0.0
    for layer, mean_input in zip(found, mean_inputs(model, found, feeds)):
        scale = numpy_helper.to_array(tensors[layer.scale]).astype(np.float64)
        bias = numpy_helper.to_array(tensors[layer.bias]).astype(np.int64)
        shift = _shift(layer, mean_input)
        largest = max(largest, float(np.abs(shift).max()))
        moved = np.clip(bias - np.round(shift / scale).astype(np.int64), limit.min, limit.max)
        tensors[layer.bias].CopyFrom(numpy_helper.from_array(moved.astype(np.int32), layer.bias))
    save_onnx(model, quantized)
    return {"layers": len(found), "largest_shift": round(largest, 6)}
