"""tensorrt: real engines built with TensorRT-RTX on this CPU-only machine, verified.

What needs a GPU (running an engine, the engine inspector) or full TensorRT (builder flags,
the implicit calibrator) is exercised where present and skipped with the reason elsewhere.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import pipeline_text, transformer_pipeline
from qntz.tensorrt import env as tensorrt_env

HAS_RTX = tensorrt_env.version_of("tensorrt-rtx") is not None
HAS_FULL_TRT = tensorrt_env.version_of("tensorrt") is not None
HAS_GPU = bool(tensorrt_env.gpus())

needs_rtx = pytest.mark.skipif(not HAS_RTX, reason='TensorRT-RTX not installed '
                               '(pip install "qntz[tensorrt-rtx]")')
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU that can execute "
                               "TensorRT engines; none on this machine")
needs_full_trt = pytest.mark.skipif(not HAS_FULL_TRT, reason="full TensorRT cannot be "
                                    "installed here (its PyPI packages download from a host "
                                    "this machine does not reach)")

CALIB = "data:\n  calib: {from: npz, path: calib.npz}\n"
ENGINES = """
capture: {uses: trace}
onnx: {}
fp32: {uses: tensorrt, runtime: tensorrt-rtx, needs: [onnx]}
fp16: {uses: tensorrt, runtime: tensorrt-rtx, needs: [onnx], precision: fp16}
int8q: {uses: quantize, needs: [onnx], target: tensorrt, data: calib}
int8: {uses: tensorrt, runtime: tensorrt-rtx, needs: [int8q], precision: int8}
compare: {needs: [onnx, fp32, fp16, int8], iterations: 0}
"""


def layers(ws, step: str, name: str = "t") -> dict:
    return json.loads((ws.root / "out" / name / step / "layers.json").read_text())


def setup(ws, steps: str = ENGINES, factory: str = "models.clean:SmallCNN", **kw) -> None:
    np.savez(ws.root / "calib.npz",
             x=np.random.default_rng(0).uniform(0, 1, (16, 3, 16, 16)).astype(np.float32))
    ws.pipeline(pipeline_text(factory, steps, extra=CALIB, **kw))


@needs_rtx
def test_fp32_fp16_int8_engines_are_built_and_verified(ws):
    setup(ws)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.out + result.err
    for step, want in (("fp32", "FLOAT"), ("fp16", "HALF"), ("int8", "INT8")):
        summary = layers(ws, step)
        assert (ws.root / "out" / "t" / step / "engine.plan").stat().st_size > 10_000
        assert summary["precision_coverage"] == 1.0
        assert {c["precision"] for c in summary["compute_layers"]} == {want}
        assert summary["targets"] == ["8.6"] and summary["runtime"] == "tensorrt-rtx"
        assert (ws.root / "out" / "t" / step / "layers.md").read_text().count(want) >= 1
    # fp16 from a float32 model: converted first, as a cached step of its own
    assert (ws.root / "out" / "t" / "fp16.fp16" / "model.onnx").is_file()
    assert layers(ws, "fp16")["source"] == "fp16.fp16"


@needs_rtx
@pytest.mark.skipif(HAS_GPU, reason="checks the report of a machine without a GPU")
def test_engines_are_not_run_without_gpu_and_say_so(ws):
    setup(ws)
    assert ws.qntz("run", "pipeline.yaml").code == 0
    report = json.loads((ws.root / "out" / "t" / "compare" / "report.json").read_text())
    rows = {c["id"]: c for c in report["candidates"]}
    for step in ("fp32", "fp16", "int8"):
        assert rows[step]["status"] == "not run" and rows[step]["reason"].endswith("no GPU")
    assert rows["onnx"]["status"] == "pass"
    md = (ws.root / "out" / "t" / "compare" / "report.md").read_text()
    assert "⚠️ not run" in md and "no GPU" in md
    text = (ws.root / "pipeline.yaml").read_text().replace("iterations: 0}",
                                                           "iterations: 0, require: [int8]}")
    (ws.root / "pipeline.yaml").write_text(text)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1 and "int8 (engine) not run: no GPU" in result.err


@needs_rtx
def test_dynamic_model_with_two_profiles(ws):
    ws.pipeline(transformer_pipeline("""
    engine:
      uses: tensorrt
      runtime: tensorrt-rtx
      profiles: [{x: {min: [1, 16, 32], opt: [8, 32, 32], max: [8, 64, 32]}}]
    """))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.out + result.err
    summary = layers(ws, "engine")
    assert len(summary["profiles"]) == 2
    assert summary["profiles"][0]["x"] == {"min": [1, 4, 32], "opt": [2, 8, 32],
                                           "max": [4, 16, 32]}
    assert summary["profiles"][1]["x"]["max"] == [8, 64, 32]
    assert summary["inputs"][0]["shape"] == [-1, -1, 32]


@needs_rtx
def test_asking_fp16_and_getting_float32_layers_fails(ws):
    setup(ws, """
    capture: {uses: trace}
    onnx: {}
    half: {uses: quantize, precision: fp16, exclude_op_types: [Conv]}
    engine: {uses: tensorrt, runtime: tensorrt-rtx, precision: fp16}
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "asked for a fp16 engine, got another precision" in result.err
    assert "FLOAT" in result.err and "compute layers are HALF" in result.err
    text = (ws.root / "pipeline.yaml").read_text().replace(
        "precision: fp16}", "precision: fp16, min_coverage: 0.1}")
    (ws.root / "pipeline.yaml").write_text(text)
    assert ws.qntz("run", "pipeline.yaml").code == 0
    assert 0.1 <= layers(ws, "engine")["precision_coverage"] < 1.0


@needs_rtx
def test_parse_failure_names_the_node_and_op(ws):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="ok_relu"),
         helper.make_node("MysteryOp", ["r"], ["y"], name="the_culprit", domain="custom.ops")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("custom.ops", 1)])
    onnx.save(model, ws.root / "custom.onnx")
    ws.pipeline("""
    qntz: 1
    name: t
    model: {onnx: custom.onnx}
    inputs: {x: {shape: [1, 4]}}
    steps:
      engine: {uses: tensorrt, runtime: tensorrt-rtx}
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err
    assert "node 'the_culprit' (op MysteryOp)" in lines[0] and "fix:" in lines[0]


@pytest.mark.parametrize("steps, message", [
    ("int8: {uses: tensorrt, runtime: tensorrt-rtx, precision: int8}",
     "an int8 engine needs a Q/DQ model"),
    ("q: {uses: quantize, data: calib}\n"
     "int8: {uses: tensorrt, runtime: tensorrt-rtx, precision: int8}",
     "quantized for ONNX Runtime"),
])
def test_int8_without_tensorrt_qdq_is_refused_before_running(ws, steps, message):
    setup(ws, "capture: {uses: trace}\nonnx: {}\n" + steps)
    result = ws.qntz("validate", "pipeline.yaml")
    assert result.code == 2 and message in result.err and "fix:" in result.err


@needs_rtx
def test_calibration_on_the_step_quantizes_for_tensorrt(ws):
    setup(ws, """
    capture: {uses: trace}
    onnx: {}
    engine: {uses: tensorrt, runtime: tensorrt-rtx, precision: int8, calibration: {data: calib}}
    """)
    assert ws.qntz("run", "pipeline.yaml").code == 0
    quant = json.loads((ws.root / "out" / "t" / "engine.int8" / "quantize.json").read_text())
    assert quant["recipe"]["symmetric"] and not quant["recipe"]["quantize_bias"]
    assert layers(ws, "engine")["precision_coverage"] == 1.0


@needs_rtx
def test_cache_key_follows_toolchain_not_compare_settings(ws, monkeypatch):
    setup(ws)
    assert ws.qntz("run", "pipeline.yaml").code == 0
    text = (ws.root / "pipeline.yaml").read_text().replace("iterations: 0}",
                                                           "iterations: 0, atol: 0.5}")
    (ws.root / "pipeline.yaml").write_text(text)

    def states():
        out = ws.qntz("status", "pipeline.yaml", "--json").out
        return {s["id"]: s for s in json.loads(out)["steps"]}

    now = states()
    assert {s for s, v in now.items() if v["state"] == "stale"} == {"compare"}
    real = tensorrt_env.version_of("tensorrt-rtx")
    monkeypatch.setattr(tensorrt_env, "version_of",
                        lambda flavour: "9.9.9" if flavour == "tensorrt-rtx" else None)
    later = states()
    for step in ("fp32", "fp16", "int8"):
        assert later[step]["state"] == "stale"
        assert f"runtime_version changed: {real} → 9.9.9" in later[step]["reason"]
    assert later["onnx"]["state"] == "cached"


def test_missing_runtime_names_the_extra(ws, monkeypatch):
    monkeypatch.setattr(tensorrt_env, "version_of", lambda flavour: None)
    setup(ws, "capture: {uses: trace}\nonnx: {}\nengine: {uses: tensorrt}")
    result = ws.qntz("status", "pipeline.yaml")
    assert result.code == 2
    assert 'pip install "qntz[tensorrt-rtx]"' in result.err and "full TensorRT" in result.err


@needs_rtx
@needs_gpu
def test_engine_runs_and_passes_compare_on_a_gpu(ws):  # pragma: no cover - no GPU here
    gpu = tensorrt_env.gpus()[0]["compute_capability"]
    steps = ENGINES.replace("runtime: tensorrt-rtx,", f"runtime: tensorrt-rtx, "
                            f"compute_capabilities: ['{gpu}'],")
    setup(ws, steps.replace("iterations: 0}", "iterations: 0, require: [fp32, fp16, int8], "
                            "tolerances: {fp16: {metric: top1}, int8: {metric: top1}}}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    assert isinstance(layers(ws, "fp32")["engine_inspection"], dict)


@needs_full_trt
def test_legacy_builder_flags_on_tensorrt_10(ws):  # pragma: no cover - not installable here
    if tensorrt_env.major(tensorrt_env.version_of("tensorrt")) >= 11:
        pytest.skip("TensorRT 11 removed builder precision flags")
    setup(ws, """
    capture: {uses: trace}
    onnx: {}
    engine: {uses: tensorrt, runtime: tensorrt, builder_flags: [fp16], implicit_calibration: calib}
    """)
    assert ws.qntz("run", "pipeline.yaml").code == 0
