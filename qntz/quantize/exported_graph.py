"""Undoing what exporters and simplifiers write, so that the fusion patterns match.

Each rewrite is exact, or decided by running the model (shapes probed at two sizes); the
fused result is checked against the unfused model in `qntz.quantize.fusion` either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SHAPE_ONLY = ("Shape", "Size")  # read only the shape of their input, never its values
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow")


def bias_second(model: Any) -> int:
    """Add(bias, x) → Add(x, bias), the order the attention patterns look for."""
    constants = {i.name for i in model.graph.initializer}
    swapped = 0
    for node in model.graph.node:
        if node.op_type == "Add" and node.input[0] in constants and \
                node.input[1] not in constants:
            node.input[0], node.input[1] = node.input[1], node.input[0]
            swapped += 1
    return swapped


def unguard_softmax(model: Any) -> int:
    """Where(IsNaN(Softmax(s)), 0, Softmax(s)) → Softmax(s), as the TorchScript exporter
    guards attention. The guard only acts on a row whose keys are all masked, which the
    fused attention gives the mean of the values instead of zeros."""
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    renamed, dropped = {}, set()
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        users = readers.get(softmax.output[0], [])
        nan = [u for u in users if u.op_type == "IsNaN"]
        where = [u for u in users if u.op_type == "Where"]
        if len(users) == 2 and len(nan) == 1 and len(where) == 1 and \
                where[0].input[0] == nan[0].output[0] and where[0].input[2] == softmax.output[0]:
            renamed[where[0].output[0]] = softmax.output[0]
            dropped |= {nan[0].output[0], where[0].output[0]}
    if not renamed or renamed.keys() & {o.name for o in model.graph.output}:
        return 0
    _bypass(model, renamed, dropped)
    return len(renamed)


def probe_shapes(model: Any, feeds: list[dict[str, np.ndarray]],
                 dynamic: dict[str, dict[int, str]]) -> int:
    """Run the model at two small sizes and record every intermediate's shape (a dim that
    moves with an input dim gets its name), since exporters compute reshape targets at run
    time and the attention patterns need head counts; then drop the reshapes that kept the
    shape at both sizes. Returns the number dropped; does nothing if the probe cannot run."""
    from onnx import helper

    undeclared = [(value.name, axis) for value in model.graph.input
                  for axis, dim in enumerate(value.type.tensor_type.shape.dim)
                  if not dim.HasField("dim_value") and axis not in dynamic.get(value.name, {})]
    if undeclared:
        return 0  # a dim the pipeline does not vary would look constant to the probe
    try:
        first, second = (_intermediates(model, f) for f in _probe_feeds(feeds[0], dynamic))
    except Exception:
        return 0
    names = _dim_names(model, dynamic)
    pairs = {sizes: names.get(dim, dim) for dim, sizes in _probe_sizes(feeds[0], dynamic).items()}
    renamed, dropped = {}, set()
    for node in (n for n in model.graph.node if n.op_type == "Reshape"):
        source, result = node.input[0], node.output[0]
        if source in first and result in first and first[source].shape == \
                first[result].shape and second[source].shape == second[result].shape:
            renamed[result] = source
            dropped.add(result)
    graph_names = {v.name for v in [*model.graph.input, *model.graph.output]}
    if renamed.keys() & graph_names:
        return 0
    _fold_shape_constants(model, first, second)
    _bypass(model, renamed, dropped)
    del model.graph.value_info[:]
    for name, value in first.items():
        other = second[name]
        if name in graph_names or name in renamed or value.ndim != other.ndim:
            continue
        dims = [a if a == b else pairs.get((a, b)) for a, b in zip(value.shape, other.shape)]
        model.graph.value_info.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.dtype), dims))
    return len(renamed)


def _fold_shape_constants(model: Any, first: dict[str, np.ndarray],
                          second: dict[str, np.ndarray]) -> None:
    """Small values computed from shapes alone and equal at both probe sizes (a softmax
    scale from the head size, say) become initializers, scalars where only elementwise
    arithmetic reads them: the attention patterns look for constant scales."""
    from onnx import numpy_helper

    constants = {i.name for i in model.graph.initializer}
    varying = {i.name for i in model.graph.input} - constants
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
        if node.op_type not in SHAPE_ONLY and any(i in varying for i in node.input):
            varying.update(node.output)
    folded_names: set[str] = set()
    for node in model.graph.node:
        value = node.output[0] if len(node.output) == 1 else ""
        if node.op_type == "Constant" or value in varying or value not in first or \
                first[value].size > 16 or not np.array_equal(first[value], second[value]):
            continue
        folded = first[value]
        if folded.size == 1 and all(r.op_type in ELEMENTWISE for r in readers.get(value, [])):
            folded = folded.reshape(())
        model.graph.initializer.append(numpy_helper.from_array(folded, value))
        folded_names.add(value)
    kept = [n for n in model.graph.node if not folded_names.issuperset(o for o in n.output if o)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    drop_unused(model)


def _probe_sizes(feed: dict[str, np.ndarray], dynamic: dict[str, dict[int, str]]
                 ) -> dict[str, tuple[int, int]]:
    """Two sizes per dynamic dim, small, and different for every dim so they can be told
    apart in the intermediates."""
    actual = {dim: feed[name].shape[axis] for name, axes in dynamic.items() if name in feed
              for axis, dim in axes.items()}
    sizes = {}
    for index, (dim, size) in enumerate(sorted(actual.items())):
        small = min(size, 12 - 2 * index)
        smaller = small - 1 - index
        if smaller < 1:
            raise ValueError(f"dim {dim} is too small to probe")
        sizes[dim] = (small, smaller)
    return sizes


def _probe_feeds(feed: dict[str, np.ndarray], dynamic: dict[str, dict[int, str]]
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    sizes = _probe_sizes(feed, dynamic)
    if not sizes:
        raise ValueError("no dynamic dims")
    probes = []
    for pick in (0, 1):
        probe = {}
        for name, value in feed.items():
            index = [slice(None)] * value.ndim
            for axis, dim in dynamic.get(name, {}).items():
                index[axis] = slice(0, sizes[dim][pick])
            probe[name] = np.ascontiguousarray(value[tuple(index)])
        probes.append(probe)
    return probes[0], probes[1]


def _dim_names(model: Any, dynamic: dict[str, dict[int, str]]) -> dict[str, str]:
    """The model's own name for each pipeline dim (exporters write s0, s1 or the axis names)."""
    names = {}
    for value in model.graph.input:
        for axis, dim in dynamic.get(value.name, {}).items():
            shape = value.type.tensor_type.shape.dim
            names.setdefault(dim, shape[axis].dim_param if axis < len(shape) and
                             shape[axis].dim_param else dim)
    return names


def _intermediates(model: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from qntz.runtime.onnx_files import session_source

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        probe.graph.output.extend(helper.make_empty_tensor_value_info(o)
                                  for o in node.output if o and o not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    with session_source(probe) as source:
        sess = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    values = sess.run(None, {k: v for k, v in feed.items() if k in names})
    return {o.name: v for o, v in zip(sess.get_outputs(), values) if isinstance(v, np.ndarray)}


def unflatten_linears(model: Any) -> int:
    """Reshape(x, [-1, K]) → MatMul → Add → Reshape back, as simplifiers write a Linear over
    a 3-D input, becomes MatMul → Add on x itself: the attention patterns need it."""
    from onnx import numpy_helper

    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    if not matmuls:
        return 0
    producers = {o: n for n in model.graph.node for o in n.output}
    flattens = {producers[m.input[0]].input[1] for m in matmuls
                if m.input[0] in producers and producers[m.input[0]].op_type == "Reshape"
                and len(producers[m.input[0]].input) > 1}
    # only reshape targets are read as values: the weights' data is not converted
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
                 if i.name in flattens}
    if not constants:
        return 0
    inferred = ranks_inferred(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in [*inferred.value_info, *inferred.input, *inferred.output]
             if v.type.tensor_type.HasField("shape")}
    weights = {i.name for i in model.graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    renamed, dropped = {}, set()
    for matmul in matmuls:
        flatten = producers.get(matmul.input[0])
        following = readers.get(matmul.output[0], [])
        if flatten is None or flatten.op_type != "Reshape" or len(following) != 1 or \
                matmul.input[1] not in weights or len(readers[flatten.output[0]]) != 1:
            continue
        target = constants.get(flatten.input[1])
        add = following[0]
        restore = readers.get(add.output[0], [])
        if target is None or target.tolist()[:1] != [-1] or target.size != 2 or \
                add.op_type != "Add" or len(restore) != 1 or restore[0].op_type != "Reshape" or \
                {add.output[0], restore[0].output[0]} & outputs:
            continue
        rank = ranks.get(flatten.input[0])
        if rank is None or rank != ranks.get(restore[0].output[0]):
            continue  # the reshape back also splits or merges dimensions
        matmul.input[0] = flatten.input[0]
        renamed[restore[0].output[0]] = add.output[0]
        dropped |= {flatten.output[0], restore[0].output[0]}
    if not renamed:
        return 0
    _bypass(model, renamed, dropped)
    return len(renamed)


def ranks_inferred(model: Any) -> Any:
    """onnx's shape inference on the graph alone: a model with `model`'s graph and inferred
    types, its large tensors without their data (inference reads only small constants:
    shapes, axes), so that a model of any size costs what its graph costs rather than two
    serializations of its weights. `model` is not changed."""
    import onnx
    from onnx import shape_inference

    from qntz.runtime.onnx_files import TENSOR_THRESHOLD

    graph = model.graph
    bare = onnx.GraphProto(name=graph.name, node=graph.node, input=graph.input,
                           output=graph.output, value_info=graph.value_info)
    for tensor in graph.initializer:
        if tensor.ByteSize() >= TENSOR_THRESHOLD and tensor.HasField("raw_data"):
            bare.initializer.add(name=tensor.name, dims=tensor.dims, data_type=tensor.data_type)
        else:
            bare.initializer.add().CopyFrom(tensor)
    graph_only = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                                 functions=model.functions, graph=bare)
    return shape_inference.infer_shapes(graph_only)


def _bypass(model: Any, renamed: dict[str, str], dropped: set[str]) -> None:
    """Remove the nodes whose first output is in `dropped`; readers of a `renamed` value
    read its replacement instead."""
    kept = [n for n in model.graph.node if n.output[0] not in dropped]
    for node in kept:
        node.input[:] = [renamed.get(i, i) for i in node.input]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def drop_unused(model: Any) -> None:
    """Nodes and initializers nothing reads any more (a folded Concat, a replaced mask)."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    unused = [i for i in model.graph.initializer if i.name not in needed]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
