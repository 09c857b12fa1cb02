"""Divergence localization: which layer of a candidate ONNX model starts to disagree with
its float source, named by the PyTorch module that produced it.

Both models run once on the same feed with every float intermediate tensor exposed (ONNX
Runtime's `qdq_loss_debug`, graph optimizations off). Tensors are matched by name: a Q/DQ
model keeps the float names and is compared after its QuantizeLinear/DequantizeLinear pair
(what the next layer sees); a QOperator model's `X_quantized` tensors are dequantized with
their `X_scale`/`X_zero_point` and stand for `X`. Tensors still unmatched fall back to node
names, then to the position of each node in the graph (op types aligned), so a candidate
whose names were rewritten is still compared; a candidate tensor is used at most once.

Ranking rule. Each matched tensor gets a relative RMS error, ||c - f|| / max(||f||, ||c||)
(the float norm when the two agree; bounded by 2, so an all-zero float tensor cannot
dominate), and a cosine. An unmatched tensor inherits the worst error among its producer's
inputs. A layer's *added error* is the error of its output minus the worst error of its
inputs; layers rank by it, largest first, ties in graph order. So the layer where the
divergence starts outranks the later layers that merely carry it. Where the candidate fused
layers (Conv + Relu in Q/DQ or QOperator form), the source nodes whose outputs vanished are
ranked as one chain, named by its first node (`Conv+Relu` at `blocks.0.conv1`).
"""

from __future__ import annotations

import ast
import copy
import math
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import onnx

_PLUMBING = frozenset({"QuantizeLinear", "DequantizeLinear", "Cast", "Identity"})
_FOLDABLE = frozenset({"Relu", "Clip"})  # activations ONNX Runtime's quantizer folds away
_INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger", "QGemm", "QAttention",
                          "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})
_QUANTIZED = "_quantized"  # ONNX Runtime's name for the integer form of a tensor
_DEQUANTIZED = "_DequantizeLinear_Output"


@dataclass(frozen=True)
class LayerError:
    """One source layer (or a chain the candidate fused into one) and the error it adds.

    `error`, `input_error` and `added_error` are relative RMS errors (see the module doc);
    `weight_error` is that of the layer's dequantized weights, None when not quantized.
    """

    module: str  # dotted PyTorch module path, "" when the exporter recorded none
    module_class: str  # e.g. "torch.nn.modules.conv.Conv2d" (dynamo exports only)
    node: str  # source ONNX node name (first node of a fused chain)
    op: str  # source op type(s): "Conv", or "Conv+Relu" for a fused chain
    candidate_op: str  # op type of the candidate node that produced the tensor
    precision: str  # what the candidate ran: "int8", "per-channel int8", "fp16" or "fp32"
    tensor: str  # source tensor compared
    cosine: float
    error: float
    input_error: float
    added_error: float
    weight_error: float | None = None

    @property
    def label(self) -> str:
        return self.module or self.node

    @property
    def op_label(self) -> str:
        """The op, or `Relu → Sigmoid` when the candidate computes something else."""
        ran = self.candidate_op.removeprefix("QLinear")
        return self.op if ran in self.op.split("+") else f"{self.op} → {self.candidate_op}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Localization:
    """Layers ranked by added error; truthy when none adds more than `threshold`."""

    layers: tuple[LayerError, ...]
    matched: int  # float tensors of the source matched in the candidate
    total: int  # float tensors of the source
    threshold: float

    @property
    def flagged(self) -> tuple[LayerError, ...]:
        return tuple(layer for layer in self.layers if layer.added_error > self.threshold)

    def __bool__(self) -> bool:
        return not self.flagged

    def summary(self) -> str:
        """One line: the layer that adds the most error, or that none adds much."""
        if self.flagged:
            top = self.flagged[0]
            return (f"largest error added at `{top.label}` ({top.op_label}, {top.precision}): "
                    f"cosine {top.cosine:.2f}")
        lowest = min((layer.cosine for layer in self.layers), default=1.0)
        return (f"no layer adds more than {self.threshold:g} relative error "
                f"(lowest cosine {lowest:.4f}, {self.matched}/{self.total} tensors matched)")

    def to_dict(self) -> dict[str, object]:
        return {"summary": self.summary(), "matched": self.matched, "total": self.total,
                "threshold": self.threshold, "layers": [lay.to_dict() for lay in self.layers]}


def localize(source: str | Path, candidate: str | Path, feed: Mapping[str, np.ndarray], *,
             threshold: float = 0.05, workdir: str | Path | None = None) -> Localization:
    """Rank the layers of `candidate` by the error each adds relative to the float `source`.

    `feed` is one input (name → array), typically the one that failed compare. Temporary
    models go to a folder under `workdir` (default: `tempfile`'s, which qntz's scratch
    points into its cache) and are removed. Models past the external-data threshold
    (`qntz.runtime.onnx_files`) are written there with their data files.
    """
    from onnxruntime.quantization.qdq_loss_debug import create_weight_matching

    from qntz.runtime.onnx_files import load_onnx, save_onnx

    src, cand = load_onnx(Path(source)), load_onnx(Path(candidate))
    with tempfile.TemporaryDirectory(prefix="localize-", dir=workdir) as folder:
        work = Path(folder)
        src_path, cand_path = work / "source.onnx", work / "candidate.onnx"
        save_onnx(src, src_path, keep=True)
        save_onnx(cand, cand_path, keep=True)
        save_onnx(_with_dequantized_views(cand), work / "view.onnx")
        src_acts = _activations(src_path, _feed_for(src, feed))
        cand_acts = _activations(work / "view.onnx", _feed_for(cand, feed))
        weights = create_weight_matching(str(src_path), str(cand_path))
    views = _candidate_views(cand_acts)
    mapping = _match(src.graph, cand.graph, src_acts, views)
    figures = {s: _figures(src_acts[s], views[c]) for s, c in mapping.items()}
    layers = _rank(src.graph, cand.graph, mapping, figures, views, weights)
    return Localization(layers, len(mapping), len(src_acts), threshold)


def module_path(node: onnx.NodeProto) -> str:
    """Dotted PyTorch module path of an exported node ("" when unknown).

    The dynamo exporter records `pkg.torch.onnx.name_scopes` (['', 'blocks', 'blocks.5',
    'blocks.5.conv_dw', 'conv2d_7']); the TorchScript exporter names nodes by scope
    (`/blocks/blocks.5/conv_dw/Conv`). The last element is the op itself in both.
    """
    scopes = _metadata(node).get("pkg.torch.onnx.name_scopes")
    if scopes:
        return _join_scopes(_literal_list(scopes)[:-1])
    if node.name.startswith("/"):
        return _join_scopes(node.name.split("/")[1:-1])
    return ""


def _join_scopes(segments: list[str]) -> str:
    # Scopes come as full paths ('blocks', 'blocks.5'), TorchScript's 'layer.3' under
    # 'encoder', or bare names; a segment that extends the path replaces it.
    path = ""
    for segment in filter(None, segments):
        path = segment if not path or segment.startswith(path + ".") else f"{path}.{segment}"
    return path


def _module_class(node: onnx.NodeProto) -> str:
    hierarchy = _literal_list(_metadata(node).get("pkg.torch.onnx.class_hierarchy", "[]"))
    return hierarchy[-2] if len(hierarchy) > 1 else ""


def _metadata(node: onnx.NodeProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in node.metadata_props}


def _literal_list(text: str) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(item) for item in value] if isinstance(value, list) else []


def _feed_for(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feed restricted to the model's inputs, cast to float16 where the model wants it."""
    initializers = {init.name for init in model.graph.initializer}
    wanted = [inp for inp in model.graph.input if inp.name not in initializers]
    missing = [inp.name for inp in wanted if inp.name not in feed]
    if missing:
        raise ValueError(f"the feed lacks model inputs {missing}; it has {sorted(feed)}")
    fp16 = onnx.TensorProto.FLOAT16
    return {inp.name: np.asarray(feed[inp.name]).astype(np.float16)
            if inp.type.tensor_type.elem_type == fp16 else np.asarray(feed[inp.name])
            for inp in wanted}


def _with_dequantized_views(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy where each QOperator `X_quantized` is also dequantized, as `X` + DQ suffix."""
    view = copy.deepcopy(model)
    initializers = {init.name for init in view.graph.initializer}
    outputs = {out for node in view.graph.node for out in node.output}
    for node in list(view.graph.node):
        for out in node.output:
            base = out.removesuffix(_QUANTIZED)
            scale, zero = base + "_scale", base + "_zero_point"
            if base == out or base + _DEQUANTIZED in outputs or \
                    not {scale, zero} <= initializers:
                continue
            view.graph.node.append(onnx.helper.make_node(
                "DequantizeLinear", [out, scale, zero], [base + _DEQUANTIZED],
                name=f"{base}_localize_view"))
    return view


def _activations(model_path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float tensor of the model on one feed, flattened (name → array)."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        modify_model_output_intermediate_tensors,
    )

    from qntz.runtime.onnx_files import data_file

    exposed = model_path.with_name(model_path.stem + "-exposed.onnx")
    # external data in, external data out (ORT names that data file itself)
    modify_model_output_intermediate_tensors(
        str(model_path), str(exposed), save_as_external_data=data_file(model_path).is_file())
    return {name: values[0] for name, values in collect_activations(str(exposed), [feed]).items()}


def _candidate_views(acts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Candidate tensors by float name, as their consumers see them (after Q/DQ)."""
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

    views = dict(acts)
    for name, value in acts.items():  # QOperator views (and Q/DQ outputs, same values)
        if name.endswith(_DEQUANTIZED):
            views[name.removesuffix(_DEQUANTIZED)] = value
    pairs = create_activation_matching({name: [value] for name, value in acts.items()})
    views.update({name: pair["post_qdq"][0] for name, pair in pairs.items()})
    return views


def _match(src: onnx.GraphProto, cand: onnx.GraphProto, src_acts: dict[str, np.ndarray],
           views: dict[str, np.ndarray]) -> dict[str, str]:
    """Source tensor → candidate tensor name: by name, folded activations, then by node."""
    mapping = {name: name for name in src_acts if _same_size(src_acts[name], views.get(name))}
    _fold_activations(src, mapping)
    claimed = set(mapping.values())
    for s_node, c_node in _paired_nodes(src, cand):
        for s_out, c_out in zip(s_node.output, c_node.output):
            if s_out in src_acts and s_out not in mapping and c_out not in claimed \
                    and _same_size(src_acts[s_out], views.get(c_out)):
                mapping[s_out] = c_out
                claimed.add(c_out)
    return mapping


def _same_size(ref: np.ndarray, got: np.ndarray | None) -> bool:
    return got is not None and got.size == ref.size


def _fold_activations(src: onnx.GraphProto, mapping: dict[str, str]) -> None:
    # A QOperator quantizer drops Relu/Clip and keeps its input's name for the (clipped)
    # result: the candidate's value of the input is really the activation's output.
    consumers = _consumers(src)
    for node in src.node:
        if node.op_type in _FOLDABLE and node.output[0] not in mapping \
                and node.input[0] in mapping and len(consumers[node.input[0]]) == 1:
            mapping[node.output[0]] = mapping.pop(node.input[0])


def _paired_nodes(src: onnx.GraphProto,
                  cand: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """Source/candidate node pairs: same name (QOperator adds `_quant`), then position."""
    by_name = {node.name: node for node in cand.node if node.name}
    pairs = [(node, by_name.get(node.name) or by_name[node.name + "_quant"])
             for node in src.node if node.name in by_name or node.name + "_quant" in by_name]
    a = [node for node in src.node if node.op_type not in _PLUMBING]
    b = [node for node in cand.node if node.op_type not in _PLUMBING]
    ops = SequenceMatcher(None, [_base_op(n) for n in a], [_base_op(n) for n in b],
                          autojunk=False)
    for tag, i1, i2, j1, j2 in ops.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs.extend(zip(a[i1:i2], b[j1:j2]))
    return pairs


def _base_op(node: onnx.NodeProto) -> str:
    return node.op_type.removeprefix("QLinear")


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _figures(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(cosine, relative RMS error) of `got` against the float `ref`."""
    f, c = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    if not np.isfinite(c).all():
        return 0.0, 2.0
    nf, nc = float(np.linalg.norm(f)), float(np.linalg.norm(c))
    if max(nf, nc) == 0.0:
        return 1.0, 0.0
    cosine = float(f @ c) / (nf * nc) if nf and nc else 0.0
    return cosine, float(np.linalg.norm(c - f)) / max(nf, nc)


def _tensor_errors(graph: onnx.GraphProto,
                   figures: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Error of every tensor: measured where matched, else inherited from the inputs."""
    errors = {name: error for name, (_, error) in figures.items()}
    for node in graph.node:  # ONNX keeps nodes in topological order
        inherited = max((errors.get(name, 0.0) for name in node.input if name), default=0.0)
        for out in node.output:
            errors.setdefault(out, inherited)
    return errors


def _rank(src: onnx.GraphProto, cand: onnx.GraphProto, mapping: dict[str, str],
          figures: dict[str, tuple[float, float]], views: dict[str, np.ndarray],
          weights: dict[str, dict[str, np.ndarray]]) -> tuple[LayerError, ...]:
    errors = _tensor_errors(src, figures)
    initializers = {init.name for init in src.initializer}
    producers = {out: node for node in cand.node for out in node.output}
    layers = []
    for chain in _chains(src, figures, initializers):
        tensor = max((o for o in chain[-1].output if o in figures), key=lambda o: figures[o][1])
        cosine, error = figures[tensor]
        inputs = [name for name in chain[0].input if name and name not in initializers]
        input_error = max((errors.get(name, 0.0) for name in inputs), default=0.0)
        ran = _candidate_producer(mapping[tensor], producers)
        layers.append(LayerError(
            module=module_path(chain[0]), module_class=_module_class(chain[0]),
            node=chain[0].name, op="+".join(node.op_type for node in chain),
            candidate_op=ran.op_type if ran else "",
            precision=_precision(ran, cand, producers, views[mapping[tensor]]),
            tensor=tensor, cosine=cosine, error=error, input_error=input_error,
            added_error=error - input_error, weight_error=_weight_error(chain, weights)))
    return tuple(sorted(layers, key=lambda layer: -layer.added_error))  # stable: graph order


def _chains(src: onnx.GraphProto, figures: dict[str, tuple[float, float]],
            initializers: set[str]) -> list[list[onnx.NodeProto]]:
    """Each node with a matched output, preceded by the unmatched single-use producers
    the candidate fused into it."""
    producers = {out: node for node in src.node for out in node.output}
    consumers = _consumers(src)
    chains = []
    for node in src.node:
        if not any(out in figures for out in node.output):
            continue
        chain = [node]
        while True:
            inputs = [name for name in chain[0].input if name and name not in initializers]
            before = producers.get(inputs[0]) if len(inputs) == 1 else None
            if before is None or inputs[0] in figures or len(consumers[inputs[0]]) != 1 \
                    or any(out in figures for out in before.output) or len(chain) > 3:
                break
            chain.insert(0, before)
        chains.append(chain)
    return chains


def _candidate_producer(name: str, producers: dict[str, onnx.NodeProto]) -> onnx.NodeProto | None:
    """The candidate node that computed `name`, looking through Q/DQ and casts."""
    node = producers.get(name) or producers.get(name + _QUANTIZED)
    for _ in range(4):
        if node is None or node.op_type not in _PLUMBING:
            break
        node = producers.get(node.input[0])
    return node


def _precision(node: onnx.NodeProto | None, cand: onnx.GraphProto,
               producers: dict[str, onnx.NodeProto], value: np.ndarray) -> str:
    if node is not None and (node.op_type.startswith("QLinear") or node.op_type in _INTEGER_OPS):
        return "int8"
    feeders = [producers.get(name) for name in node.input] if node is not None else []
    dqs = [dq for dq in feeders if dq is not None and dq.op_type == "DequantizeLinear"]
    if dqs:
        sizes = {init.name: math.prod(init.dims) for init in cand.initializer}
        return "per-channel int8" if any(sizes.get(dq.input[1], 1) > 1 for dq in dqs) else "int8"
    return "fp16" if value.dtype == np.float16 else "fp32"


def _weight_error(chain: list[onnx.NodeProto],
                  weights: dict[str, dict[str, np.ndarray]]) -> float | None:
    found = [weights[name] for node in chain for name in node.input if name in weights]
    if not found:
        return None
    return max(_figures(w["float"], w["dequantized"])[1] for w in found)
