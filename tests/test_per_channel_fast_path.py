"""qntz's all-channels-at-once weight quantization (it stands in for ONNX Runtime's
per-channel Python loop while a dynamic quantization runs) writes the same bytes as ONNX
Runtime's own loop, on awkward channels too, and is removed afterwards (issue 19)."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qntz.quantize import ort_tools


def _model(path) -> None:
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(16, 24)).astype(np.float32),
               rng.normal(size=(24, 16)).astype(np.float32),
               rng.normal(size=(16, 8)).astype(np.float32)]
    weights[0][:, 3] = 0  # an all-zero channel
    weights[1][:, 5] = np.abs(weights[1][:, 5])  # all positive
    weights[2][:, 7] = -np.abs(weights[2][:, 7]) * 1e-30  # tiny
    nodes, inits, prev = [], [], "x"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"y{i}"], name=f"mm{i}"))
        prev = f"y{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["b", 16])], [helper.make_tensor_value_info(
            prev, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("symmetric", [None, False, True])
@pytest.mark.parametrize("reduce_range", [False, True])
@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_the_fast_path_writes_onnx_runtimes_bytes(tmp_path, monkeypatch, weight_type,
                                                  reduce_range, symmetric):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer

    source = tmp_path / "m.onnx"
    _model(source)
    extra = {} if symmetric is None else {"WeightSymmetric": symmetric}
    options = {"per_channel": True, "weight_type": getattr(QuantType, weight_type),
               "reduce_range": reduce_range, "extra_options": extra}
    quantize_dynamic(str(source), str(tmp_path / "ort.onnx"), **options)
    taken = []
    original = ort_tools._per_channel_at_once

    def spy(*args, **kwargs):
        found = original(*args, **kwargs)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(ort_tools, "_per_channel_at_once", spy)
    with ort_tools._vectorized_per_channel():
        quantize_dynamic(str(source), str(tmp_path / "fast.onnx"), **options)
    assert any(taken), "the fast path was never taken"
    assert _digest(tmp_path / "ort.onnx") == _digest(tmp_path / "fast.onnx")
    assert "quantize_weight_per_channel_impl" not in vars(ONNXQuantizer)
