"""Verified precision: read the model that was written and compare it with the request."""

from __future__ import annotations

from collections import Counter
from typing import Any

FLOAT, FLOAT16, BFLOAT16 = 1, 10, 16


class PrecisionMismatch(Exception):
    """The written model is not what was asked for; the message says what is off."""


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
        (quantized if fed_by_dq and all(fed_by_dq) else missed).append(name)
    counts = Counter(n.op_type for n in model.graph.node)
    if not quantized:
        raise PrecisionMismatch(
            f"no node was quantized ({counts['QuantizeLinear']} QuantizeLinear, "
            f"{counts['DequantizeLinear']} DequantizeLinear nodes; {len(intended)} intended)")
    return {"quantized_nodes": len(quantized), "float_nodes": missed,
            "qdq_pairs": counts["QuantizeLinear"]}


def _check_dynamic(model: Any, intended: list[str]) -> dict[str, Any]:
    counts = Counter(n.op_type for n in model.graph.node)
    integer_ops = sum(counts[op] for op in ("MatMulInteger", "ConvInteger",
                                             "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                                             "QAttention"))
    names = {n.name for n in model.graph.node
             if n.op_type in ("MatMul", "Gemm", "Conv", "Attention")}
    still_float = [n for n in intended if n in names]
    if integer_ops == 0:
        raise PrecisionMismatch(f"no integer MatMul/Conv was written ({len(intended)} intended)")
    if intended and len(still_float) == len(intended):
        raise PrecisionMismatch(f"all {len(intended)} intended nodes are still float")
    return {"quantized_nodes": integer_ops, "float_nodes": still_float}


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
