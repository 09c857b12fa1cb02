"""Recipes and the ONNX Runtime quantization calls behind the `quantize` step."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qntz.core.quiet import quiet

CONV_LIKE = ("Conv", "ConvTranspose")
MATMUL_LIKE = ("MatMul", "Gemm")
TENSORRT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
DYNAMIC_OPS = ("MatMul", "Conv", "Attention", "LSTM")  # what ONNX Runtime quantizes dynamically
# ONNX Runtime quantizes LSTM only dynamically (DynamicQuantizeLSTM), and has no int8 GRU/RNN
DYNAMIC_ONLY = ("LSTM",)
NO_INT8_KERNEL = ("GRU", "RNN")
ATTENTION_LIKE = ("Softmax", "Attention", "MultiHeadAttention")
EDGE_MIN_REST = 3  # weighted nodes left quantized for edge nodes to stay float


@dataclass
class Recipe:
    """What will be quantized and how; recorded in the step's summary."""

    mode: str  # static | dynamic
    per_channel: bool
    activations: str  # uint8 | int8
    symmetric: bool
    quantize_bias: bool
    op_types: list[str] | None
    nodes: list[str] | None
    exclude_nodes: list[str] = field(default_factory=list)
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_nodes(model: Any, op_types: tuple[str, ...]) -> list[str]:
    """Nodes of `op_types` with a constant weight: the ones whose quantization pays."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in op_types and len(n.input) > 1 and n.input[1] in constants]


def edge_nodes(model: Any) -> list[str]:
    """Weighted nodes reading a graph input, when at least EDGE_MIN_REST other weighted
    nodes remain to be quantized.

    The first layer reads raw data: a normalized image's 8-bit steps do not fall on the
    int8 grid of its range, so quantizing that input costs most of the accuracy lost, while
    the layer itself is small (EfficientNet-Lite0 on real photographs: held-out top-1
    agreement 90% -> 95%, mean cosine 0.992 -> 0.9975, for about 2% of the speed-up)."""
    weighted = weight_nodes(model, (*CONV_LIKE, *MATMUL_LIKE))
    if len(weighted) < EDGE_MIN_REST + 1:
        return []
    inputs = {i.name for i in model.graph.input}
    by_name = {n.name: n for n in model.graph.node}
    return [n for n in weighted if by_name[n].input[0] in inputs]


def looks_like_transformer(model: Any) -> bool:
    ops = {n.op_type for n in model.graph.node}
    normalizes = bool(ops & {"LayerNormalization", "SkipLayerNormalization"}) or (
        "ReduceMean" in ops and bool(ops & {"Sqrt", "Pow"}))
    weighted = len(weight_nodes(model, MATMUL_LIKE)) >= max(1, len(weight_nodes(model, CONV_LIKE)))
    return bool(ops & set(ATTENTION_LIKE)) and normalizes and weighted


def recurrent_note(model: Any) -> str:
    """Why recurrent layers of the graph are (not) quantized, for the recipe's `why`."""
    ops = {n.op_type for n in model.graph.node}
    kept = sorted(ops & set(NO_INT8_KERNEL))
    if not kept:
        return ""
    return (f"; {', '.join(kept)} stay float: ONNX Runtime has no int8 {'/'.join(kept)} kernel "
            "(only LSTM has one, DynamicQuantizeLSTM)")


def choose_recipe(model: Any, params: dict[str, Any]) -> Recipe:
    """`recipe: auto` picks by target and graph; explicit settings always win."""
    target, asked = params["target"], params["recipe"]
    recurrent = bool(weight_nodes(model, DYNAMIC_ONLY)) and (
        not params["op_types"] or bool(set(params["op_types"]) & set(DYNAMIC_ONLY)))
    if asked == "static" and params["op_types"] and set(params["op_types"]) & set(DYNAMIC_ONLY):
        raise ValueError("ONNX Runtime quantizes LSTM only dynamically: a Q/DQ LSTM computes "
                         "in float on dequantized values")
    if target == "tensorrt":
        if asked == "dynamic":
            raise ValueError("TensorRT needs static (Q/DQ) quantization, not dynamic")
        recipe = Recipe("static", params["per_channel"], "int8", True, False,
                        list(TENSORRT_OPS), None,
                        why="TensorRT: symmetric int8 Q/DQ on weighted ops, bias not quantized")
    elif asked == "dynamic" or (asked == "auto" and looks_like_transformer(model)):
        recipe = Recipe("dynamic", params["per_channel"], "uint8", False, False, None,
                        weight_nodes(model, DYNAMIC_OPS),
                        why="transformer graph: int8 MatMul weights, activations quantized "
                        "at run time; normalization and softmax stay float"
                        if asked == "auto" else "dynamic requested")
    elif asked == "auto" and recurrent:
        recipe = Recipe("dynamic", params["per_channel"], "uint8", False, False, None,
                        weight_nodes(model, DYNAMIC_OPS),
                        why="recurrent graph: LSTM as DynamicQuantizeLSTM (int8 weights, "
                        "activations quantized at run time) and int8 MatMul weights; ONNX "
                        "Runtime quantizes LSTM only dynamically")
    else:
        recipe = Recipe("static", params["per_channel"], "uint8", False, True, None, None,
                        why="static Q/DQ, uint8 activations and int8 weights (fast on x86 CPUs)"
                        if asked == "auto" else "static requested")
    recipe.why += recurrent_note(model)
    if params["op_types"]:
        recipe.op_types, recipe.nodes = list(params["op_types"]), None
    if params["nodes"]:
        recipe.nodes = list(params["nodes"])
    if params["exclude_op_types"]:
        excluded = set(params["exclude_op_types"])
        recipe.exclude_nodes += [n.name for n in model.graph.node if n.op_type in excluded]
    recipe.exclude_nodes += list(params["exclude_nodes"])
    edges = [n for n in edge_nodes(model) if n not in recipe.exclude_nodes]
    if recipe.mode == "static" and target == "onnxruntime" and params["float_edges"] and \
            not params["nodes"] and edges:
        recipe.exclude_nodes += edges
        recipe.why += "; the layer reading the input float (float_edges)"
    return recipe


def gemm_to_matmul(model: Any) -> int:
    """Gemm with a constant weight → MatMul (+ Add), in place, as the exporters write many
    Linear layers: the dynamic recipe picks MatMul weights, and the attention fusions look
    for MatMul + Add. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    from qntz.quantize.exported_graph import drop_unused

    weights = {i.name: i for i in model.graph.initializer}
    nodes, changed = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or node.input[1] not in weights or attrs.get("transA") or \
                attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            nodes.append(node)
            continue
        name = node.name or f"gemm_{changed}"
        weight = numpy_helper.to_array(weights[node.input[1]])
        weight = np.ascontiguousarray(weight.T if attrs.get("transB") else weight)
        model.graph.initializer.append(numpy_helper.from_array(weight, f"{name}_weight"))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{name}_product" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], f"{name}_weight"],
                                      [product], name=name))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                          name=f"{name}_bias"))
        changed += 1
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        drop_unused(model)  # the transposed weights replaced the originals
    return changed


def untie_weights(model: Any) -> int:
    """Give each weight or bias of a weighted op its own initializer, in place; returns how
    many were copied. Exporters share one initializer between equal constants (zero biases, the
    all-ones weights of fresh BatchNorms: timm's LeViT), and ONNX Runtime's quantizer then
    writes one name as int32 (a bias) and as int8 (a weight), a model it cannot load."""
    import onnx

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    copies = 0
    for node in graph.node:
        if node.op_type not in (*CONV_LIKE, *MATMUL_LIKE):
            continue
        for slot in (1, 2):
            name = node.input[slot] if len(node.input) > slot else ""
            if name in initializers and readers[name] > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}_for_{node.name}_{slot}"
                graph.initializer.append(copy)
                node.input[slot], readers[name] = copy.name, readers[name] - 1
                copies += 1
    return copies


def preprocess(source: Path, target: Path, scratch: Path,
               inspect: Callable[[Any], None] | None = None) -> str:
    """ORT's pre-processing; symbolic shape inference fails on many BERT-style graphs.

    ORT's own symbolic shape inference saves the partial model into the current folder when
    it fails, so qntz runs that inference itself (same class, without the save) and hands
    ORT the result. Where that class has changed, the pre-processing runs in a child process
    whose current folder is `scratch` (changing this process's folder would move every other
    step running in it). `inspect` is called with the source model once it is read (the
    caller's checks, without a parse of their own)."""
    import onnx

    from qntz.runtime.onnx_files import (
        data_file,
        external_data_threshold,
        external_files,
        install_onnx,
        save_onnx,
        stored_bytes,
    )

    if external_files(source):  # ORT's tools read it with onnx.load, which refuses a data
        install_onnx(source, scratch / "source.onnx")  # file hard-linked as the cache's are
        source = scratch / "source.onnx"
    model = onnx.load(str(source))
    if inspect is not None:
        inspect(model)
    try:
        shaped = _symbolic_shapes(model)
    except AttributeError:  # another ONNX Runtime: the isolated, slower way
        return _preprocess_apart(source, target, scratch)
    del model  # `shaped` is a copy
    from onnxruntime.quantization.shape_inference import quant_pre_process

    start = source
    if shaped is not None:  # as a file: handed a ModelProto, ORT loses its initializers
        start = scratch / "shaped.onnx"
        # save_onnx's own rule (external data past the threshold) decides ORT's layout too;
        # `stored_bytes` would parse the whole file again only to list its data files
        large = save_onnx(shaped, start)
    else:
        large = stored_bytes(start) > external_data_threshold()
    with quiet(""):  # ONNX Runtime's quantization tools log to the root logger at length
        quant_pre_process(str(start), str(target), skip_symbolic_shape=True,
                          save_as_external_data=large, all_tensors_to_one_file=True,
                          external_data_location=data_file(target).name)
    install_onnx(target, target)  # ORT's layout (data file, tensor threshold) made qntz's
    return ("shape inference and optimization" if shaped is not None else
            "ONNX shape inference and optimization (symbolic shape inference failed)")


def _symbolic_shapes(model: Any) -> Any:
    """ORT's SymbolicShapeInference.infer_shapes without its save into the current folder:
    the model with inferred shapes, or None where inference stays incomplete."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inference = SymbolicShapeInference(2**31 - 1, False, False, 0)
    try:
        with quiet(""):
            inference._preprocess(model)
            complete = False
            while inference.run_:
                complete = inference._infer_impl()
            inference._update_output_from_vi()
    except AttributeError:
        raise
    except Exception:
        return None
    return inference.out_mp_ if complete else None


def _preprocess_apart(source: Path, target: Path, scratch: Path) -> str:
    if _preprocess(source, target, scratch, skip_symbolic_shape=False) is None:
        return "shape inference and optimization"
    error = _preprocess(source, target, scratch, skip_symbolic_shape=True)
    if error is not None:
        raise RuntimeError(f"ONNX Runtime's quantization pre-processing failed: {error}")
    return "ONNX shape inference and optimization (symbolic shape inference failed)"


PREPROCESS = ("import sys\n"
              "from onnxruntime.quantization.shape_inference import quant_pre_process\n"
              "quant_pre_process(sys.argv[1], sys.argv[2], skip_symbolic_shape=sys.argv[3] == '1')")


def _preprocess(source: Path, target: Path, scratch: Path,
                skip_symbolic_shape: bool) -> str | None:
    """None when it worked, else the last line ONNX Runtime wrote about why not."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", PREPROCESS, str(source.resolve()), str(target.resolve()),
         "1" if skip_symbolic_shape else "0"],
        cwd=scratch, env={**os.environ, "TMPDIR": str(scratch.resolve())},
        capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


class FeedReader:
    """ORT's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], names: set[str]):
        self._feeds = iter([{k: v for k, v in f.items() if k in names} for f in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the protocol; one pass is all qntz asks for
        pass


def quantize_int8(source: Path, target: Path, recipe: Recipe, params: dict[str, Any],
                  feeds: list[dict[str, np.ndarray]], calibration: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from qntz.runtime.onnx_files import external_data_threshold

    common = {"op_types_to_quantize": recipe.op_types, "nodes_to_quantize": recipe.nodes,
              "nodes_to_exclude": recipe.exclude_nodes or None,
              "per_channel": recipe.per_channel, "weight_type": QuantType.QInt8,
              "reduce_range": params["reduce_range"] and params["target"] == "onnxruntime",
              # past the threshold ORT writes `<target>.data` beside the target
              "use_external_data_format": _written_bytes(source) > external_data_threshold()}
    with quiet(""):
        if recipe.mode == "dynamic":
            with _vectorized_per_channel():
                quantize_dynamic(str(source), str(target), **common)
            return
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[params["method"]]
        extra = {"ActivationSymmetric": recipe.symmetric, "WeightSymmetric": True,
                 "QuantizeBias": recipe.quantize_bias, "CalibPercentile": params["percentile"]}
        names = _input_names(source)
        quantize_static(
            str(source), str(target),
            FeedReader(feeds, names) if not calibration.is_file() else None,
            quant_format=QuantFormat.QDQ, calibrate_method=method,
            activation_type=QuantType.QUInt8 if recipe.activations == "uint8" else QuantType.QInt8,
            extra_options=extra, calibration_cache_path=str(calibration), **common)


_PATCH_LOCK = threading.Lock()
_PATCH_USERS = [0]


@contextlib.contextmanager
def _vectorized_per_channel() -> Iterator[None]:
    """ONNX Runtime's dynamic quantizer, with its per-channel weight quantization computed
    for all channels at once instead of one Python call per channel (GPT-2's 124M: ~100k
    calls, most of the step's quantization time). The same arithmetic on the same float32
    and float64 values, so the same bytes (tests compare both ways); any case outside the
    plain one (overrides, a minimum range, another weight type) takes ONNX Runtime's own
    path. Installed on ONNXQuantizer while a quantization runs, for every thread's calls."""
    try:
        from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    except ImportError:  # another ONNX Runtime layout: its own path
        yield
        return
    with _PATCH_LOCK:
        if _PATCH_USERS[0] == 0:
            original = ONNXQuantizer.quantize_weight_per_channel_impl

            def patched(self: Any, weight_name: str, weight_qType: int, channel_axis: int,
                        reduce_range: bool = True, keep_float_weight: bool = False) -> Any:
                done = _per_channel_at_once(self, weight_name, weight_qType, channel_axis,
                                            reduce_range, keep_float_weight)
                return done if done is not None else original(
                    self, weight_name, weight_qType, channel_axis, reduce_range,
                    keep_float_weight)

            patched.qntz_original = original  # type: ignore[attr-defined]
            patched.qntz_own = "quantize_weight_per_channel_impl" in vars(  # type: ignore
                ONNXQuantizer)
            ONNXQuantizer.quantize_weight_per_channel_impl = patched
        _PATCH_USERS[0] += 1
    try:
        yield
    finally:
        with _PATCH_LOCK:
            _PATCH_USERS[0] -= 1
            if _PATCH_USERS[0] == 0:
                current = ONNXQuantizer.quantize_weight_per_channel_impl
                if current.qntz_own:
                    ONNXQuantizer.quantize_weight_per_channel_impl = current.qntz_original
                else:  # inherited, as it was
                    del ONNXQuantizer.quantize_weight_per_channel_impl


def _per_channel_at_once(quantizer: Any, weight_name: str, weight_qtype: int,
                         channel_axis: int, reduce_range: bool, keep_float_weight: bool
                         ) -> tuple[str, str, str] | None:
    """BaseQuantizer.quantize_weight_per_channel_impl (ONNX Runtime 1.2x-1.3x) for int8 and
    uint8 weights of float32, without overrides or a minimum range, all channels in one
    array operation; None for anything else (ONNX Runtime's loop then handles it)."""
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnxruntime.quantization.quant_utils import (
        TENSOR_NAME_QUANT_SUFFIX,
        find_by_name,
        get_qmin_qmax_for_qType,
        normalize_axis,
        tensor_proto_to_array,
    )

    if weight_qtype not in (TensorProto.INT8, TensorProto.UINT8) or keep_float_weight or \
            quantizer.min_real_range is not None or \
            quantizer.tensor_quant_overrides.get_per_channel_overrides(weight_name) is not None:
        return None
    initializer = find_by_name(weight_name, quantizer.model.initializer())
    if initializer is None or initializer.data_type != TensorProto.FLOAT:
        return None
    weights = tensor_proto_to_array(initializer)
    valid, axis = normalize_axis(channel_axis, weights.ndim)
    if not valid or weights.dtype != np.float32 or weights.size == 0:
        return None
    symmetric = quantizer.is_weight_symmetric(weight_qtype)
    reduce_range = quantizer.reduce_range and reduce_range
    qmin, qmax = get_qmin_qmax_for_qType(weight_qtype, reduce_range, symmetric=symmetric)
    if qmin > 0 or qmax < 0:
        return None
    others = tuple(a for a in range(weights.ndim) if a != axis)
    # compute_data_quant_params + compute_scale_zp, per channel
    rmin = np.minimum(weights.min(axis=others), np.float32(0))
    rmax = np.maximum(weights.max(axis=others), np.float32(0))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, +absmax
    scale64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / (
        np.float64(qmax) - np.float64(qmin))
    tiny = scale64 < np.finfo(np.float32).tiny
    if symmetric:
        zero = np.full(scale64.shape, np.round((qmin + qmax) / np.array(2.0, dtype=np.float64)))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            zero = np.round(qmin - rmin / scale64)
    zero_point = np.where(tiny, 0, zero).astype(qmin.dtype)
    scale = np.where(tiny, np.float32(1.0), scale64.astype(np.float32)).astype(np.float32)
    # quantize_nparray, per channel
    shape = [1] * weights.ndim
    shape[axis] = -1
    low, high = get_qmin_qmax_for_qType(weight_qtype, reduce_range=False, symmetric=False)
    quantized = np.asarray((weights / scale.reshape(shape)).round() + zero_point.reshape(shape))
    np.clip(quantized, low, high, out=quantized)
    quantized = quantized.astype(onnx.helper.tensor_dtype_to_np_dtype(weight_qtype))

    q_name = weight_name + TENSOR_NAME_QUANT_SUFFIX
    zp_name, scale_name = weight_name + "_zero_point", weight_name + "_scale"
    count = [initializer.dims[axis]]
    quantizer.model.initializer_extend([
        onnx.helper.make_tensor(scale_name, initializer.data_type, count, scale.tolist()),
        onnx.helper.make_tensor(zp_name, weight_qtype, count, zero_point.tolist())])
    quantizer.model.initializer_extend([numpy_helper.from_array(
        quantized.reshape(initializer.dims), q_name)])
    return q_name, zp_name, scale_name


def _written_bytes(path: Path) -> int:
    """`stored_bytes` of a model file, without parsing a large single file whose folder
    holds nothing its external data could be (as qntz writes them: `save_onnx` keeps the
    data in `<name>.data` beside the model and removes a stale one first); a small file, a
    data file, or any other candidate file goes the parsing way."""
    from qntz.runtime.onnx_files import data_file, stored_bytes

    path = Path(path)
    size = path.stat().st_size
    if size < 64 << 20 or data_file(path).exists() or _may_be_external(path):
        return stored_bytes(path)
    return size


def _may_be_external(path: Path) -> bool:
    """Whether any other file of the folder could be the model's data (a layout qntz does
    not write): then only a parse tells."""
    return any(p.is_file() and p != path and not p.name.endswith(".onnx")
               and p.suffix not in (".json", ".lock") for p in path.parent.iterdir())


def convert_fp16(source: Path, target: Path, params: dict[str, Any]) -> list[str]:
    """Float16 everywhere but the kept ops; inputs and outputs stay float32 by default."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from qntz.runtime.onnx_files import infer_shapes, is_large, load_onnx, save_onnx

    model = load_onnx(source)
    large = is_large(model)
    if large:  # the converter's own shape inference serializes the model: past 2 GB it fails
        model = infer_shapes(model)
    blocked = sorted(set(params["exclude_op_types"]))
    with quiet(""):
        converted = convert_float_to_float16(
            model, keep_io_types=params["keep_io_types"], disable_shape_infer=large,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(blocked)),
            node_block_list=list(params["exclude_nodes"]) or None)
    save_onnx(converted, target)
    return blocked


def retype_bf16(path: Path) -> None:
    """Turn a float16 model into bfloat16: weights rounded to nearest even, types and Casts.

    ONNX Runtime's converter knows float16 only; bfloat16 keeps float32's exponent range,
    which is why TensorRT users ask for it.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    from qntz.runtime.onnx_files import save_onnx

    model = onnx.load(str(path))

    def convert(tensor: Any) -> None:
        bits = numpy_helper.to_array(tensor).astype(np.float32).view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        tensor.ClearField("int32_data")
        tensor.data_type = TensorProto.BFLOAT16
        tensor.raw_data = rounded.tobytes()

    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT16:
            convert(tensor)
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.BFLOAT16
            if attribute.type == onnx.AttributeProto.TENSOR and \
                    attribute.t.data_type == TensorProto.FLOAT16:
                convert(attribute.t)
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.BFLOAT16
    save_onnx(model, path)


def _input_names(path: Path) -> set[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {i.name for i in model.graph.input}

