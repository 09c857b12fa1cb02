"""Verified precision: read the model that was written and compare it with the request."""

from __future__ import annotations

from collections import Counter
from typing import Any

FLOAT, FLOAT16, BFLOAT16 = 1, 10, 16


class PrecisionMismatch(Exception):
    """The written model is not what was asked for; the message says what is off."""


# Every integer op ONNX Runtime's quantization tools write, with the float op it replaces:
# dynamic (IntegerOps), QOperator (QLinear*), and the fusions ORT applies to them.
INTEGER_OPS = {
    "MatMulInteger": "MatMul", "DynamicQuantizeMatMul": "MatMul",
    "MatMulIntegerToFloat": "MatMul", "QLinearMatMul": "MatMul", "QGemm": "Gemm",
    "ConvInteger": "Conv", "QLinearConv": "Conv", "DynamicQuantizeLSTM": "LSTM",
    "QAttention": "Attention", "QEmbedLayerNormalization": "EmbedLayerNormalization",
}
# Ops whose Q/DQ form ONNX Runtime runs with integer kernels on CPU; others fed by
# DequantizeLinear (an LSTM, say) compute in float on dequantized values.
QDQ_INTEGER = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def check_int8(model: Any, mode: str, intended: list[str]) -> dict[str, Any]:
    """Every intended node must now compute in int8; returns coverage for the summary."""
    if mode == "dynamic":
        return _check_dynamic(model, intended)
    producers = {o: n for n in model.graph.node for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    quantized, missed = [], []
    for name in intended:
        node = by_name.get(name)
        if node is None:
            continue
        fed_by_dq = [producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                     for i in node.input[:2]]
        integer = fed_by_dq and all(fed_by_dq) and node.op_type in QDQ_INTEGER
        (quantized if integer else missed).append(name)
    counts = Counter(n.op_type for n in model.graph.node)
    if not quantized:
        raise PrecisionMismatch(
            f"no node was quantized ({counts['QuantizeLinear']} QuantizeLinear, "
            f"{counts['DequantizeLinear']} DequantizeLinear nodes; {len(intended)} intended"
            f"{_float_kinds(by_name, missed)})")
    return {"quantized_nodes": len(quantized), "float_nodes": missed,
            "qdq_pairs": counts["QuantizeLinear"]}


def half_graph(model: Any) -> str | None:
    """What makes a graph float16/bfloat16 rather than float32 (its weights, its inputs), or
    None: ONNX Runtime calibrates and quantizes float32 tensors only, so INT8 of a float16
    graph quantizes nothing."""
    wide = {FLOAT16: "float16", BFLOAT16: "bfloat16"}
    weights = Counter(t.data_type for t in model.graph.initializer)
    halves = sum(weights[k] for k in wide)
    if halves and halves >= weights[FLOAT]:
        kind = wide[max(wide, key=lambda k: weights[k])]
        return f"{halves} of its {sum(weights.values())} weights are {kind}"
    inputs = [(i.name, wide[t]) for i in model.graph.input
              if (t := i.type.tensor_type.elem_type) in wide]
    if inputs and not weights[FLOAT]:
        return f"its input {inputs[0][0]} is {inputs[0][1]}"
    return None


def _float_kinds(by_name: dict[str, Any], names: list[str]) -> str:
    kinds = sorted({by_name[n].op_type for n in names if n in by_name} - set(QDQ_INTEGER))
    return f"; {', '.join(kinds)} fed by DequantizeLinear still compute in float" if kinds \
        else ""


def _check_dynamic(model: Any, intended: list[str]) -> dict[str, Any]:
    """A node is quantized when a float node of that name is gone and an integer op stands
    in its place (ORT names it `<name>_quant`, or fuses it under a new name)."""
    written = Counter(n.op_type for n in model.graph.node if n.op_type in INTEGER_OPS)
    float_names = {n.name for n in model.graph.node if n.op_type not in INTEGER_OPS}
    still_float = [n for n in intended if n in float_names]
    if not written:
        raise PrecisionMismatch(f"no integer op was written ({len(intended)} intended; "
                                f"looked for {', '.join(sorted(INTEGER_OPS))})")
    if intended and len(still_float) == len(intended):
        raise PrecisionMismatch(f"all {len(intended)} intended nodes are still float")
    return {"quantized_nodes": len(intended) - len(still_float) if intended
            else sum(written.values()),
            "float_nodes": still_float, "integer_ops": dict(sorted(written.items()))}


def check_half(model: Any, precision: str, keep_io_types: bool) -> dict[str, Any]:
    """Weights in float16 / bfloat16 (but those feeding kept ops), and the I/O types asked."""
    half = FLOAT16 if precision == "fp16" else BFLOAT16
    name = "float16" if precision == "fp16" else "bfloat16"
    kinds = Counter(i.data_type for i in model.graph.initializer)
    if kinds[half] == 0 and (kinds[FLOAT] or not model.graph.initializer):
        raise PrecisionMismatch(f"no {name} weights ({kinds[FLOAT]} float32 weights)")
    io_types = {v.name: v.type.tensor_type.elem_type
                for v in [*model.graph.input, *model.graph.output]}
    wrong = [n for n, t in io_types.items()
             if t in (FLOAT, half) and (t == FLOAT) != keep_io_types]
    if wrong:
        want = "float32" if keep_io_types else name
        raise PrecisionMismatch(f"inputs/outputs {', '.join(wrong)} are not {want}")
    return {"half_weights": kinds[half], "float32_weights": kinds[FLOAT],
            "casts": sum(1 for n in model.graph.node if n.op_type == "Cast")}
