"""quantize: INT8 and FP16 that are verified, within budget, and keyed by their data."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import pipeline_text, transformer_pipeline

CALIB = """
data:
  calib: {from: npz, path: calib.npz}
"""


def run_ok(ws, path="pipeline.yaml"):
    result = ws.qntz("run", path)
    assert result.code == 0, result.out + result.err
    return result


def summary(ws, step: str) -> dict:
    return json.loads((ws.root / "out" / "t" / step / "quantize.json").read_text())


def ops(ws, step: str) -> set[str]:
    return {n.op_type for n in onnx.load(str(ws.root / "out" / "t" / step / "model.onnx"))
            .graph.node}


def save_calib(ws, n: int = 16, shape=(3, 16, 16), dtype=np.float32, seed=0):
    data = np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(dtype)
    np.savez(ws.root / "calib.npz", x=data)


def cnn_pipeline(ws, steps: str, extra: str = CALIB):
    save_calib(ws)
    ws.pipeline(pipeline_text("models.clean:SmallCNN", steps, extra=extra))


INT8_FP16 = """
capture: {uses: trace}
onnx: {}
int8: {uses: quantize, data: calib}
fp16: {uses: quantize, needs: [onnx], precision: fp16}
compare:
  needs: [onnx, int8, fp16]
  tolerances: {int8: {metric: top1, threshold: 0.9}, fp16: {atol: 0.01, rtol: 0.01}}
"""


def test_int8_and_fp16_are_what_they_claim(ws):
    cnn_pipeline(ws, INT8_FP16)
    run_ok(ws)
    int8 = summary(ws, "int8")
    assert int8["recipe"]["mode"] == "static" and int8["coverage"]["quantized_nodes"] >= 3
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(ws, "int8")
    assert int8["calibration"] == {"data": "calib", "batches": 8, "method": "minmax"}
    fp16 = summary(ws, "fp16")
    model = onnx.load(str(ws.root / "out" / "t" / "fp16" / "model.onnx"))
    assert fp16["half_weights"] > 0 and fp16["float32_weights"] == 0
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    report = json.loads((ws.root / "out" / "t" / "compare" / "report.json").read_text())
    rows = {c["id"]: c for c in report["candidates"]}
    timing = json.loads((ws.root / "out" / "t" / "compare" / "latency.json").read_text())
    assert rows["int8"]["source"] == "onnx"
    assert "speedup_vs_source" in timing["candidates"]["int8"]
    assert rows["int8"]["top1"] is not None


def test_changing_calibration_reruns_quantize_only(ws):
    cnn_pipeline(ws, INT8_FP16)
    run_ok(ws)
    for change in ("method", "data file", "samples"):
        if change == "method":
            text = (ws.root / "pipeline.yaml").read_text().replace(
                "data: calib}", "data: calib, method: percentile}")
            (ws.root / "pipeline.yaml").write_text(text)
        elif change == "data file":
            save_calib(ws, seed=1)
        else:
            text = (ws.root / "pipeline.yaml").read_text().replace(
                "method: percentile}", "method: percentile, samples: 2}")
            (ws.root / "pipeline.yaml").write_text(text)
        states = {s["id"]: s for s in json.loads(
            ws.qntz("status", "pipeline.yaml", "--json").out)["steps"]}
        stale = {sid for sid, s in states.items() if s["state"] != "cached"}
        assert stale == {"int8", "compare"}, (change, states)
        assert states["int8"]["state"] == "stale" and states["compare"]["state"] == "pending"
        result = run_ok(ws)
        assert {ln.split()[1] for ln in result.out.splitlines() if ln.startswith("✓")} == {
            "int8", "compare"}, change


def test_precision_check_fails_when_nothing_was_quantized(ws):
    cnn_pipeline(ws, """
    capture: {uses: trace}
    onnx: {}
    int8: {uses: quantize, data: calib, op_types: [LSTM]}
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "asked for int8, got another precision: no node was quantized" in result.err


def test_fp16_check_fails_when_everything_is_kept_float32(ws):
    cnn_pipeline(ws, """
    capture: {uses: trace}
    onnx: {}
    fp16:
      uses: quantize
      precision: fp16
      exclude_op_types: [Conv, Relu, Gemm, ReduceMean, MatMul, Add, BatchNormalization]
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "asked for fp16, got another precision" in result.err


def test_accuracy_budget_keeps_sensitive_nodes_float(ws):
    cnn_pipeline(ws, """
    capture: {uses: trace}
    onnx: {}
    int8: {uses: quantize, data: calib, per_channel: false}
    """)
    run_ok(ws)
    drop = summary(ws, "int8")["accuracy"]["cosine"]["drop"]
    assert drop > 0
    text = (ws.root / "pipeline.yaml").read_text().replace(
        "per_channel: false}", f"per_channel: false, max_drop: {drop / 3:.3e}}}")
    (ws.root / "pipeline.yaml").write_text(text)
    run_ok(ws)
    within = summary(ws, "int8")
    assert within["kept_float_for_budget"], within
    assert within["accuracy"]["cosine"]["drop"] <= drop / 3 * 1.001
    assert within["coverage"]["quantized_nodes"] >= 1
    explored = within["budget_search"]
    assert explored and {"float_nodes", "top1", "cosine", "drop"} <= set(explored[0])
    chosen = len(within["kept_float_for_budget"])
    assert any(p["float_nodes"] == chosen and p["drop"] <= drop / 3 * 1.001 for p in explored)
    assert all(p["drop"] > drop / 3 for p in explored if p["float_nodes"] < chosen)


def test_impossible_budget_says_so(ws):
    cnn_pipeline(ws, """
    capture: {uses: trace}
    onnx: {}
    int8: {uses: quantize, data: calib, max_drop: 0.0, per_channel: false}
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "cannot meet max_drop 0.0" in result.err
    # measured, not assumed: FP16 itself moves the cosine on these rows
    assert "the same model in FP16 drops" in result.err
    assert "is below what FP16 keeps" in result.err and "or keep this model float" in result.err


def test_transformer_graph_gets_dynamic_matmul_recipe(ws):
    ws.pipeline(transformer_pipeline("""
    int8: {uses: quantize}
    compare: {needs: [onnx, int8], tolerances: {int8: {metric: cosine, threshold: 0.99}}}
    """))
    run_ok(ws)
    recipe = summary(ws, "int8")["recipe"]
    assert recipe["mode"] == "dynamic" and "transformer" in recipe["why"]
    kinds = ops(ws, "int8")
    assert "MatMulInteger" in kinds and not kinds & {"QuantizeLinear", "QLinearSoftmax"}
    assert summary(ws, "int8")["coverage"]["float_nodes"] == []


@pytest.mark.parametrize("data, message", [
    ("{from: npz, path: missing.npz}", "missing.npz not found"),
    ("{from: npz, path: calib.npz}", "axis 1 is 4, expected 3"),
    ("{from: npz, path: ints.npz}", "is int64, the model takes float32"),
    ("{from: images, path: empty}", "no images"),
    ("{from: callable, function: models.data_sources:broken}", "RuntimeError: sensor offline"),
    ("{from: callable, function: models.data_sources:nothing}", "is empty"),
])
def test_bad_calibration_data_is_a_one_line_error(ws, data, message):
    save_calib(ws, shape=(4, 16, 16))
    np.savez(ws.root / "ints.npz", x=np.zeros((4, 3, 16, 16), np.int64))
    (ws.root / "empty").mkdir()
    ws.write("models/data_sources.py", """
    def broken():
        raise RuntimeError("sensor offline")
        yield

    def nothing():
        return iter([])
    """)
    ws.pipeline(pipeline_text("models.clean:SmallCNN", """
    capture: {uses: trace}
    onnx: {}
    int8: {uses: quantize, data: calib}
    """, extra=f"data:\n  calib: {data}\n"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 2, result.out + result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "data 'calib'" in lines[0], result.err
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.err


def test_image_folder_and_npy_calibration(ws):
    from PIL import Image

    folder = ws.root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    np.save(ws.root / "calib.npy", rng.uniform(0, 1, (4, 3, 16, 16)).astype(np.float32))
    ws.pipeline(pipeline_text("models.clean:SmallCNN", """
    capture: {uses: trace}
    onnx: {}
    from_images: {uses: quantize, needs: [onnx], data: photos}
    from_npy: {uses: quantize, needs: [onnx], data: arrays}
    """, extra="data:\n"
          "  photos: {from: images, path: images, size: [16, 16], batch: 2,\n"
          "           mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
          "  arrays: {from: npy, path: calib.npy}\n"))
    run_ok(ws)
    assert summary(ws, "from_images")["calibration"]["batches"] == 3
    assert summary(ws, "from_npy")["calibration"]["batches"] == 2


def test_dynamic_quantizes_gemm_linear_layers(ws):
    """The TorchScript exporter writes Linear on 2-D input as Gemm, which ONNX Runtime's
    dynamic quantization skips; qntz hands it over as MatMul so every layer is int8."""
    ws.pipeline(pipeline_text("models.clean:PooledHead", """
    capture: {uses: trace}
    onnx: {opset: 17}
    int8: {uses: quantize, recipe: dynamic}
    compare: {needs: [onnx, int8], tolerances: {int8: {metric: cosine, threshold: 0.99}}}
    """, shape="[batch, 8, 32]"))
    run_ok(ws)
    exported = {n.op_type for n in onnx.load(str(ws.root / "out" / "t" / "onnx" / "model.onnx"))
                .graph.node}
    assert {"Gemm", "MatMul"} <= exported
    kinds = ops(ws, "int8")
    assert "Gemm" not in kinds and "MatMulInteger" in kinds
    assert summary(ws, "int8")["coverage"] == {"quantized_nodes": 2, "float_nodes": [],
                                               "integer_ops": {"MatMulInteger": 2}}


RECURRENT = """
capture: {uses: trace}
onnx: {}
int8: {uses: quantize, STEP}
"""


def recurrent_pipeline(ws, factory: str, step: str):
    ws.pipeline(pipeline_text(f"models.recurrent:{factory}", RECURRENT.replace("STEP", step),
                              shape="[batch, 16, 32]", dynamic="{batch: [1, 2, 4]}"))


def test_lstm_op_types_quantize_every_lstm_and_count_them(ws):
    """Two LSTM layers become two DynamicQuantizeLSTM nodes, and the check counts both."""
    recurrent_pipeline(ws, "SmallLSTM", "op_types: [LSTM]")
    run_ok(ws)
    coverage = summary(ws, "int8")["coverage"]
    assert coverage["quantized_nodes"] == 2 and coverage["float_nodes"] == []
    assert coverage["integer_ops"] == {"DynamicQuantizeLSTM": 2}
    assert "LSTM" not in ops(ws, "int8")


def test_auto_recipe_quantizes_lstm_dynamically(ws):
    recurrent_pipeline(ws, "SmallLSTM", "min_cosine: 0.99")
    run_ok(ws)
    int8 = summary(ws, "int8")
    assert int8["recipe"]["mode"] == "dynamic" and "recurrent" in int8["recipe"]["why"]
    assert int8["coverage"]["integer_ops"] == {"DynamicQuantizeLSTM": 2, "MatMulInteger": 1}


def test_gru_says_why_it_stays_float(ws):
    recurrent_pipeline(ws, "SmallGRU", "recipe: dynamic")
    run_ok(ws)
    int8 = summary(ws, "int8")
    assert "GRU stay float: ONNX Runtime has no int8 GRU kernel" in int8["recipe"]["why"]
    assert "GRU" in ops(ws, "int8")


def test_static_lstm_is_refused_with_the_fix(ws):
    recurrent_pipeline(ws, "SmallLSTM", "recipe: static, op_types: [LSTM]")
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 2, result.out + result.err
    assert "quantizes LSTM only dynamically" in result.err and "recipe: dynamic" in result.err


def test_low_calibration_agreement_fails_with_the_numbers_and_the_fix(ws):
    cnn_pipeline(ws, """
    capture: {uses: trace}
    onnx: {}
    int8: {uses: quantize, data: calib, per_channel: false, min_cosine: 0.999999}
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1, result.out + result.err
    assert "INT8 agrees too little with the float model on the calibration data" in result.err
    assert "min_cosine 0.999999" in result.err and "max_drop" in result.err
    # the budget it suggests is in the metric that failed, at the bar that failed
    assert "(max_drop: 1e-06, metric: cosine)" in result.err, result.err


DENSE = """
from torch import nn


def segmenter():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, padding=1)).eval()
"""


def test_top1_is_not_judged_on_a_dense_output(ws):
    """An arg-max over a whole segmentation map is one arbitrary pixel: no top-1 there."""
    save_calib(ws)
    ws.write("dense.py", DENSE)
    ws.pipeline(pipeline_text("dense:segmenter", "capture: {uses: trace}\nonnx: {}\n"
                              "int8: {uses: quantize, data: calib, min_top1: 0.99}", extra=CALIB))
    run_ok(ws)
    assert summary(ws, "int8")["accuracy"]["top1"]["agreement"] is None
    ws.pipeline(pipeline_text("dense:segmenter", "capture: {uses: trace}\nonnx: {}\n"
                              "int8: {uses: quantize, data: calib, max_drop: 0.01, metric: top1}",
                              extra=CALIB))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1 and "use metric: cosine" in result.err


TIED = """
import torch
from torch import nn


class Tied(nn.Module):
    \"\"\"Every class twice, by a Linear and by Mul + ReduceSum: the top two logits tie on every
    input, as a random-weight classifier's nearly do on random inputs.\"\"\"

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, 10, bias=False)

    def forward(self, x):
        f = self.features(x)
        return torch.cat([self.head(f), (f.unsqueeze(1) * self.head.weight).sum(-1)], 1)


def tied():
    return Tied().eval()
"""


def test_top1_on_generated_data_gates_only_when_written(ws):
    """timm's MobileNetV3 with random weights failed a plain pipeline here: top-1 75% at
    cosine 0.998, its near-tied logits flipping under INT8 on random inputs."""
    ws.write("tied.py", TIED)
    steps = "capture: {uses: trace}\nonnx: {}\nint8: {uses: quantize%s}"
    ws.pipeline(pipeline_text("tied:tied", steps % ""))
    run_ok(ws)
    accuracy = summary(ws, "int8")["accuracy"]
    assert accuracy["top1"]["agreement"] < 0.85 and accuracy["cosine"]["mean"] > 0.99
    ws.pipeline(pipeline_text("tied:tied", steps % ", min_top1: 0.85"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1 and "(min_top1 0.85)" in result.err, result.out + result.err


def test_a_budget_met_only_by_a_mostly_float_model_says_so(ws):
    """FragileNet per tensor: a cosine drop of 3e-5 needs most candidates float; the step
    passes and warns, with FP16's drop on the same rows beside it."""
    save_calib(ws)
    ws.pipeline(pipeline_text("models.fragile:FragileNet", """
    capture: {uses: trace}
    onnx: {}
    int8: {uses: quantize, data: calib, per_channel: false, max_drop: 3e-5}
    """, extra=CALIB))
    result = run_ok(ws)
    int8 = summary(ws, "int8")
    chosen = next(p for p in int8["budget_search"] if p["chosen"])
    assert chosen["drop"] <= 3e-5
    assert chosen["candidates_float"] > 13 // 2, int8["budget_search"]
    assert "is met only with" in int8["warnings"][0] and "FP16 drops" in int8["warnings"][0]
    assert "warning: max_drop 3e-05 is met only with" in result.out


def tied_onnx(path) -> None:
    """Gemm biases and an Add reading one initializer, as exporters write equal constants
    (timm's LeViT: fresh BatchNorm weights and zero biases under one name)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
               for name, shape in (("w1", (16, 8)), ("w2", (16, 16)), ("w3", (4, 16)))]
    shared = numpy_helper.from_array(np.full(16, 0.5, np.float32), "shared")
    nodes = [helper.make_node("Gemm", ["x", "w1", "shared"], ["a"], name="g1", transB=1),
             helper.make_node("Relu", ["a"], ["ar"], name="r1"),
             helper.make_node("Add", ["ar", "shared"], ["b"], name="add"),
             helper.make_node("Gemm", ["b", "w2", "shared"], ["c"], name="g2", transB=1),
             helper.make_node("Relu", ["c"], ["cr"], name="r2"),
             helper.make_node("Gemm", ["cr", "w3"], ["y"], name="g3", transB=1)]
    graph = helper.make_graph(
        nodes, "tied", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [*weights, shared])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


SHARED_PIPELINE = """qntz: 1
name: t
model: {onnx: tied.onnx}
inputs:
  x: {shape: [batch, 8], dynamic: {batch: [1, 2, 4]}, range: [0.0, 1.0]}
steps:
  int8: {uses: quantize}
  compare: {needs: [int8], tolerances: {int8: {metric: cosine, threshold: 0.9}}}
"""


def test_an_initializer_shared_by_a_bias_and_another_op_is_untied(ws):
    """ONNX Runtime's quantizer wrote `shared` as int32 (bias) and uint8 (Add input): a
    model it cannot load, and a traceback."""
    tied_onnx(ws.root / "tied.onnx")
    ws.pipeline(SHARED_PIPELINE)
    run_ok(ws)
    assert summary(ws, "int8")["coverage"]["quantized_nodes"] == 3


def test_a_quantized_model_onnxruntime_cannot_load_is_one_line(ws, monkeypatch):
    import qntz.quantize.ort_tools as ort_tools

    monkeypatch.setattr(ort_tools, "untie_weights", lambda path: 0)
    tied_onnx(ws.root / "tied.onnx")
    ws.pipeline(SHARED_PIPELINE)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1 and "Traceback" not in result.err
    assert "ONNX Runtime cannot load the model its quantizer wrote" in result.err
    assert "exclude_nodes" in result.err


def test_many_candidates_are_ranked_in_runs_of_neighbours():
    """A diffusion UNet had 350 candidates, one build each to rank: the step ran past 15
    minutes. Past 64, neighbours in graph order are ranked together; none is lost."""
    from qntz.quantize.budget import grouped

    units = [[f"n{i}", f"n{i}/relu"] for i in range(150)]
    runs = grouped(units)
    assert len(runs) <= 64
    assert [name for run in runs for name in run] == [n for unit in units for n in unit]
    assert grouped(units[:60]) == units[:60]
