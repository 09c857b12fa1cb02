"""Transformer fusions for ONNX Runtime before dynamic INT8, each kept only when verified.

Integer MatMuls are only half of a transformer's time on the CPU; the rest goes to the float
ops around them (masks, softmax, transposes, layer norms). onnxscript's rewriter fuses those
into ONNX Runtime's Attention, SkipLayerNormalization and BiasGelu. An Attention whose mask is
a plain 0/1 padding mask is rewired to take it as `mask_index`, so that quantization turns it
into QAttention (which has no input for an additive bias); any other Attention is split back
into its projection MatMul and a MultiHeadAttention that keeps the bias. What the exporters
write in the way of those patterns is undone first (`exported_graph`). Every fused graph
is run against the unfused one on the calibration data, with padding added to the masks, and
dropped when it disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qntz.core.quiet import quiet
from qntz.quantize.exported_graph import (
    SHAPE_ONLY,
    bias_second,
    drop_unused,
    probe_shapes,
    unflatten_linears,
    unguard_softmax,
)

MS_DOMAIN = "com.microsoft"
AGREEMENT = 0.9999  # cosine per row between the fused and the unfused float model
PLAIN_CHECKS = 8  # calibration feeds the fused graph is checked on as they are


@dataclass
class Fusion:
    """What was fused, and what was tried and given up; recorded in the step's summary."""

    used: bool = False
    applied: dict[str, int] = field(default_factory=dict)
    attention: str = "not fused"
    residual: str = "unchanged"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"used": self.used, "applied": self.applied, "attention": self.attention,
                "residual": self.residual, "notes": self.notes}


def fuse_for_onnxruntime(source: Path, target: Path, feeds: list[dict[str, np.ndarray]],
                         dynamic: dict[str, dict[int, str]], model: Any = None) -> Fusion:
    """Write the fused model to `target` when a fusion applied and held up (`used`).

    `dynamic` names the dynamic axes of each input (input → axis → dim name); `model` is
    `source` as already read, with its tensors (changed here), else the file is read."""
    import onnx

    from qntz.runtime.onnx_files import remove_onnx, save_onnx

    result = Fusion()
    if model is None:
        model = onnx.load(str(source))
    prepared = {"linear_without_flatten": unflatten_linears(model),
                "bias_added_second": bias_second(model),
                "softmax_nan_guard_removed": unguard_softmax(model),
                "no_op_reshape_removed": probe_shapes(model, feeds, dynamic)}
    try:
        fused, result.applied = _onnxscript_fusions(model)
    except Exception as exc:  # the rewriter meets graphs it was not written for
        result.notes.append(f"onnxscript fusions failed: {type(exc).__name__}: {exc}")
        return result
    if result.applied:
        result.applied.update({k: v for k, v in prepared.items() if v})
    if "attention" not in result.applied and any(n.op_type == "Softmax" for n in model.graph.node):
        result.notes.append("no Attention fusion matched; simplified graphs often do not, so "
                            "quantize the exported model (needs: [<onnx step>]) for the fastest "
                            "result")
    if not result.applied:
        return result
    checks, reference, kept = _reference(source, _verification_feeds(fused, feeds))
    for label, variant in _attention_variants(fused):
        residual = _prefer_sum_residuals(variant)
        save_onnx(variant, target)  # the session reads the file: the model is written once
        agreed = _agrees(target, reference, checks)
        if agreed is not None:
            _remember_outputs(target, agreed, feeds, kept)
            result.used, result.attention, result.residual = True, label, residual
            return result
        result.notes.append(f"attention as {label} changed the float outputs; not used")
    remove_onnx(target)
    return result


def _remember_outputs(target: Path, agreed: tuple[Any, list[list[np.ndarray]]],
                      feeds: list[dict[str, np.ndarray]], kept: list[int]) -> None:
    """The fused model's first output on every calibration feed, for the step's agreement
    measure (`agreement.outputs`), which would otherwise build a session of the same file
    and run it again: the plain feeds among the checks are reused, the rest are run on the
    session the check built."""
    from qntz.quantize.agreement import remember
    from qntz.runtime.ortrun import run

    sess, got = agreed
    plain = {index: outs[0] for index, outs in zip(kept, got) if index < PLAIN_CHECKS}
    try:
        firsts = [plain[i] if i in plain else run(sess, feed)[0] for i, feed in enumerate(feeds)]
    except Exception:  # measured later the usual way, with the error where it belongs
        return
    remember(target, feeds, firsts)


def _onnxscript_fusions(model: Any) -> tuple[Any, dict[str, int]]:
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    with quiet("", "onnxscript"):
        fused, counts = optimize_for_ort(ir.from_proto(model))
    return ir.to_proto(fused), {k: int(v) for k, v in counts.items() if v}


def _attention_variants(model: Any) -> list[tuple[str, Any]]:
    """Ways to hand the fused Attention nodes to quantization, fastest first."""
    import onnx

    attention = [n for n in model.graph.node if n.op_type == "Attention"]
    if not attention:
        multi_head = any(n.op_type == "MultiHeadAttention" for n in model.graph.node)
        return [("MultiHeadAttention, float" if multi_head else "not fused", model)]
    _fold_packed_weights(model)
    attention = [n for n in model.graph.node if n.op_type == "Attention"]
    variants = []
    mask = _padding_mask(model, attention)
    if mask is not None and not any(_attribute(n, "scale") for n in attention):
        rewired = onnx.ModelProto()
        rewired.CopyFrom(model)
        _use_mask_index(rewired, mask)
        variants.append(("Attention (QAttention once quantized)", rewired))
    unpacked = onnx.ModelProto()
    unpacked.CopyFrom(model)
    if _unpack_attention(unpacked):
        variants.append(("MultiHeadAttention after an int8 QKV MatMul", unpacked))
    return variants


def _fold_packed_weights(model: Any) -> None:
    """QKV weights and biases concatenated at run time become initializers; equal
    qkv_hidden_sizes (which QAttention does not take) are dropped."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for number, node in enumerate(n for n in model.graph.node if n.op_type == "Attention"):
        for index in (1, 2):
            concat = producers.get(node.input[index]) if len(node.input) > index else None
            if concat is None or concat.op_type != "Concat" or not all(
                    i in initializers for i in concat.input):
                continue
            parts = [numpy_helper.to_array(initializers[i]) for i in concat.input]
            folded = numpy_helper.from_array(np.concatenate(
                parts, axis=_attribute(concat, "axis")), f"attention_{number}_packed_{index}")
            model.graph.initializer.append(folded)
            node.input[index] = folded.name
        sizes = _attribute(node, "qkv_hidden_sizes")
        if sizes and len(set(sizes)) == 1:
            node.attribute.remove(next(a for a in node.attribute if a.name == "qkv_hidden_sizes"))
    drop_unused(model)


def _padding_mask(model: Any, attention: list[Any]) -> str | None:
    """The one 2-D integer graph input every Attention's additive bias is computed from."""
    integer_inputs = {i.name for i in model.graph.input
                      if i.type.tensor_type.elem_type in (6, 7, 9)  # int32, int64, bool
                      and len(i.type.tensor_type.shape.dim) == 2}
    producers = {o: n for n in model.graph.node for o in n.output}
    found = set()
    for node in attention:
        if len(node.input) < 6 or not node.input[5] or any(node.input[3:5]):
            return None
        found |= _ancestor_inputs(node.input[5], producers) & integer_inputs
    return found.pop() if len(found) == 1 else None


def _ancestor_inputs(name: str, producers: dict[str, Any]) -> set[str]:
    """Graph inputs whose values reach `name`."""
    seen, stack, inputs = set(), [name], set()
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        node = producers.get(value)
        if node is None:
            inputs.add(value)
        elif node.op_type not in SHAPE_ONLY:
            stack.extend(i for i in node.input if i)
    return inputs


def _use_mask_index(model: Any, mask: str) -> None:
    from onnx import TensorProto, helper

    index = f"{mask}_mask_index"
    model.graph.node.insert(0, helper.make_node("Cast", [mask], [index], to=TensorProto.INT32,
                                                name=f"{mask}_to_int32"))
    for node in model.graph.node:
        if node.op_type == "Attention":
            node.input[3], node.input[5] = index, ""
            while node.input[-1] == "":
                node.input.pop()
    drop_unused(model)


def _unpack_attention(model: Any) -> bool:
    """Attention(x, W, b, bias) → MultiHeadAttention(Split(x @ W), b, bias)."""
    from onnx import helper, numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Attention":
            nodes.append(node)
            continue
        if _attribute(node, "unidirectional") or _attribute(node, "qkv_hidden_sizes") or any(
                node.input[3:5]) or len(node.output) > 1:
            return False
        weight = initializers.get(node.input[1])
        if weight is None or weight.dims[-1] % 3:
            return False
        base = node.output[0]
        projected, q, k, v, sizes = (f"{base}_{s}" for s in ("qkv", "q", "k", "v", "sizes"))
        model.graph.initializer.append(
            numpy_helper.from_array(np.full(3, weight.dims[-1] // 3, np.int64), sizes))
        keep = {a.name: helper.get_attribute_value(a) for a in node.attribute
                if a.name in ("num_heads", "scale", "mask_filter_value")}
        bias = node.input[5] if len(node.input) > 5 else ""
        nodes += [helper.make_node("MatMul", node.input[:2], [projected], name=f"{base}_qkv"),
                  helper.make_node("Split", [projected, sizes], [q, k, v], axis=-1,
                                   name=f"{base}_split"),
                  helper.make_node("MultiHeadAttention", [q, k, v, node.input[2], "", bias],
                                   list(node.output), domain=MS_DOMAIN,
                                   name=f"{base}_attention", **keep)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return True


def _prefer_sum_residuals(model: Any) -> str:
    """ONNX Runtime fuses a residual Add and LayerNormalization into SkipLayerNormalization;
    its CPU kernel is slower than LayerNormalization after a Sum (6-47x in ONNX Runtime
    1.32 at hidden sizes 64-1280: `benchmarks/skip_layernorm.py` measures it), so the
    residuals are written as Sum, which it leaves alone. A fixed rule, not a measurement
    at build time: the same key must give the same graph on every machine, under any
    load."""
    from onnx import helper

    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    skips = [n for n in model.graph.node if n.op_type == "SkipLayerNormalization"
             and not read.intersection(n.output[1:3])]
    if not skips:
        return "unchanged"
    rewritten = {n.output[0] for n in skips}
    nodes = []
    for node in model.graph.node:
        if node.output[0] not in rewritten:
            nodes.append(node)
            continue
        summed = [i for i in (*node.input[:2], *node.input[4:5]) if i]
        total = node.output[3] if len(node.output) > 3 and node.output[3] else \
            f"{node.output[0]}_sum"
        epsilon = _attribute(node, "epsilon")
        nodes += [helper.make_node("Sum", summed, [total], name=f"{node.output[0]}_sum"),
                  helper.make_node("LayerNormalization", [total, *node.input[2:4]],
                                   [node.output[0]], axis=-1, name=f"{node.output[0]}_norm",
                                   epsilon=1e-12 if epsilon is None else epsilon)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return "Sum + LayerNormalization (ONNX Runtime's CPU SkipLayerNormalization is slower)"


def _verification_feeds(model: Any, feeds: list[dict[str, np.ndarray]]
                        ) -> list[dict[str, np.ndarray]]:
    """The calibration feeds, plus copies where each 0/1 mask input has its tail zeroed on
    odd rows and one row masked entirely: generated data usually has no padding, and padding
    is where a rewritten mask or a removed softmax guard goes wrong."""
    integer = {i.name for i in model.graph.input if i.type.tensor_type.elem_type in (6, 7)}
    checks = [dict(f) for f in feeds[:PLAIN_CHECKS]]  # first: `_remember_outputs` counts on it
    for feed in feeds[:4]:
        for name, values in feed.items():
            if name not in integer or values.ndim != 2 or values.shape[1] < 2 or \
                    not np.isin(values, (0, 1)).all():
                continue
            padded = values.copy()
            padded[1::2, values.shape[1] // 2:] = 0
            padded[:, 0] = 1
            checks.append({**feed, name: padded})
            if len(values) > 1:
                padded = padded.copy()
                padded[0] = 0
                checks.append({**feed, name: padded})
    return checks


def _reference(source: Path, feeds: list[dict[str, np.ndarray]]
               ) -> tuple[list[dict[str, np.ndarray]], list[list[np.ndarray]], list[int]]:
    """The unfused model's outputs on the feeds it accepts (an added padding row can be out
    of range for an input that only looked like a mask), and the indices of those feeds."""
    from qntz.runtime.ortrun import run, session

    sess = session(source)
    kept, outputs, indices = [], [], []
    for index, feed in enumerate(feeds):
        try:
            outputs.append(run(sess, feed))
        except Exception:
            continue
        kept.append(feed)
        indices.append(index)
    del sess
    return kept, outputs, indices


def _agrees(candidate: Path, reference: list[list[np.ndarray]],
            feeds: list[dict[str, np.ndarray]]) -> tuple[Any, list[list[np.ndarray]]] | None:
    """The candidate's session and outputs when every output equals the unfused model's up
    to float rounding, row by row (rows the unfused model itself gives NaN or infinity for
    are not compared); None when one does not."""
    from qntz.runtime.metrics import row_cosines
    from qntz.runtime.ortrun import run, session

    try:
        sess = session(candidate)
        got = [run(sess, feed) for feed in feeds]
    except Exception:
        return None
    for outs, wants in zip(got, reference):
        for out, want in zip(outs, wants):
            if out.shape != want.shape:
                return None
            rows = max(len(want), 1) if want.ndim else 1
            a, b = out.reshape(rows, -1), want.reshape(rows, -1)
            finite = np.isfinite(b).all(1)
            a, b = a[finite], b[finite]
            if not np.isfinite(a).all():
                return None
            if a.size and (np.abs(a - b).max() > 1e-3 * max(np.abs(b).max(), 1e-6) or
                           row_cosines(a, b).min() < AGREEMENT):
                return None
    return sess, got


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    found = [a for a in node.attribute if a.name == name]
    return helper.get_attribute_value(found[0]) if found else None
