"""What INT8 quantization did to each compute node, and why: quantized, fused or kept float.

Read from the graph that was quantized (`prepared`, fused when the fusions held up) and the
model written, so the record says what happened rather than what was asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qntz.quantize.precision_check import INTEGER_OPS, QDQ_INTEGER

CONTRIB = "com.microsoft"
COMPUTE = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention"})


def node_actions(prepared: Path, written: Path, recipe: Any, params: dict[str, Any],
                 kept: list[str]) -> list[dict[str, str]]:
    """One row per compute node of `prepared` (and each fused ONNX Runtime op)."""
    import onnx

    before = onnx.load(str(prepared), load_external_data=False).graph
    after = onnx.load(str(written), load_external_data=False).graph
    nodes = {n.name: n for n in after.node}
    producers = {o: n for n in after.node for o in n.output}
    rows = []
    for node in before.node:
        if node.op_type not in COMPUTE and node.domain != CONTRIB:
            continue
        action, reason = _action(node, nodes, producers, recipe, params, kept)
        rows.append({"name": node.name, "op": node.op_type, "action": action,
                     "reason": reason})
    return rows


def _action(node: Any, written: dict[str, Any], producers: dict[str, Any], recipe: Any,
            params: dict[str, Any], kept: list[str]) -> tuple[str, str]:
    excluded = _excluded(node, recipe, params, kept)
    if excluded:
        return "float", excluded
    quantized = _quantized_as(node, written, producers, recipe)
    if quantized:
        return "quantized", quantized
    if node.domain == CONTRIB:
        return "fused", f"ONNX Runtime fused op ({node.op_type}), runs in float"
    return "float", _why_float(node, recipe)


def _excluded(node: Any, recipe: Any, params: dict[str, Any], kept: list[str]) -> str:
    if node.name in kept:
        rank = kept.index(node.name) + 1
        return (f"accuracy budget: sensitivity rank {rank} of those kept float to meet "
                f"max_drop {params['max_drop']}")
    if node.op_type in params["exclude_op_types"]:
        return "exclude_op_types"
    if node.name in params["exclude_nodes"]:
        return "exclude_nodes"
    if params["nodes"] and node.name not in params["nodes"]:
        return "not in `nodes`"
    if params["op_types"] and node.op_type not in params["op_types"]:
        return "not in `op_types`"
    return ""


def _quantized_as(node: Any, written: dict[str, Any], producers: dict[str, Any],
                  recipe: Any) -> str:
    """How the node computes in int8 in the written model ("" when it does not)."""
    same = written.get(node.name)
    if same is not None and node.op_type in QDQ_INTEGER and len(same.input) > 1:
        fed = [producers.get(i) for i in same.input[:2]]
        if all(p is not None and p.op_type == "DequantizeLinear" for p in fed):
            weights = "per-channel" if recipe.per_channel else "per-tensor"
            return (f"static Q/DQ: {weights} int8 weights, {recipe.activations} "
                    "activations")
    for suffix in ("_quant", ""):
        stand_in = written.get(node.name + suffix)
        if stand_in is not None and stand_in.op_type in INTEGER_OPS:
            return f"dynamic int8 as {stand_in.op_type}"
    if same is None and recipe.mode == "dynamic" and recipe.nodes and node.name in recipe.nodes:
        return "dynamic int8 (replaced by an integer op)"
    return ""


def _why_float(node: Any, recipe: Any) -> str:
    if recipe.mode == "static" and node.op_type not in QDQ_INTEGER:
        return f"no int8 {node.op_type} kernel for Q/DQ in ONNX Runtime"
    if recipe.mode == "dynamic" and recipe.nodes is not None and node.name not in recipe.nodes:
        return "not a weighted op the dynamic recipe quantizes"
    return "left float by the quantizer"
