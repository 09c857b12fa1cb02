"""Issue 20's faults, each reproduced in plain torch (tests/zoo/detection.py): preflight that
poisons the model it tests, `auto` refusing what ONNX exports, None outputs, float16 and
INT8, factory errors, train mode, the valid-size hint, ONNX files that hold a capture
size, and what `qntz init` guesses for classifiers, detectors, masks and float16 weights."""

from __future__ import annotations

import json

import yaml

IMAGE = "{shape: [1, 3, 16, 16]}"
VECTOR = "{shape: [batch, 16], dynamic: {batch: [1, 2, 4]}, range: [-1.0, 1.0]}"


def pipeline(factory: str, x: str, steps: str, name: str = "t") -> str:
    return (f"qntz: 1\nname: {name}\nmodel: {{factory: models.detection:{factory}}}\n"
            f"inputs:\n  x: {x}\nsteps:\n" + "".join(f"  {line.strip()}\n"
                                                 for line in steps.strip().splitlines()))


def summaries(result) -> dict:
    return {s["id"]: s.get("summary", {}) for s in json.loads(result.out)["steps"]}


PLAIN = """
preflight: {}
capture: {uses: auto}
onnx: {opset: 18}
compare: {needs: [capture, onnx], iterations: 0, samples: 1}
"""


def test_preflight_does_not_poison_a_model_that_caches_on_forward(ws):
    """Ultralytics' Detect caches anchors on its first forward: preflight ran eager under
    inference_mode on the same module, and export and ONNX then failed on it."""
    ws.pipeline(pipeline("CachesOnForward", IMAGE, PLAIN))
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    report = json.loads((ws.root / "out/t/preflight/report.json").read_text())
    assert report["verdicts"]["export"] == "ok" and report["verdicts"]["onnx"] == "ok"
    assert report["recommendation"] == "export"
    compare = json.loads((ws.root / "out/t/compare/report.json").read_text())
    assert compare["passed"] and {c["id"] for c in compare["candidates"]} == {"capture", "onnx"}


def test_auto_hands_the_eager_model_to_onnx_when_no_capture_works(ws):
    """A custom autograd.Function through NumPy, with a `symbolic`: trace, script and
    export fail, ONNX of the eager model works; the plain pipeline reaches ONNX."""
    ws.pipeline(pipeline("CustomFunction", VECTOR, PLAIN))
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    steps = summaries(result)
    verdicts = steps["preflight"]["verdicts"]
    assert [verdicts[m] for m in ("trace", "script", "export", "onnx")] == [
        "fails", "fails", "fails", "ok"]
    assert steps["capture"]["method"] == "eager"
    assert steps["onnx"]["exporter"] == "torchscript"
    human = ws.qntz("run", "pipeline.yaml")  # cached: the lines say what happened
    assert "exports the eager model (no TorchScript or ExportedProgram artifact)" in human.out
    assert not list((ws.root / "out/t/capture").glob("model.pt*"))
    compare = json.loads((ws.root / "out/t/compare/report.json").read_text())
    assert [c["id"] for c in compare["candidates"]] == ["onnx"]  # no capture candidate
    assert compare["passed"]


def test_an_eager_capture_is_exported_again_when_the_model_changes(ws):
    """The onnx step's key follows the capture's files: with no artifact, they must still
    name the model, or an edited model would be served its old ONNX."""
    ws.pipeline(pipeline("CustomFunction", VECTOR, PLAIN))
    assert ws.qntz("run", "pipeline.yaml").code == 0
    source = ws.root / "models/detection.py"
    source.write_text(source.read_text().replace("nn.Linear(16, 8)", "nn.Linear(16, 6)", 1))
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    states = {s["id"]: s["state"] for s in json.loads(result.out)["steps"]}
    assert states["onnx"] != "cached", states
    assert summaries(result)["onnx"]["outputs"]  # exported again, at the new width


def test_a_none_output_is_named_and_left_out_of_preflight(ws):
    ws.pipeline(pipeline("NoneOutput", VECTOR, "preflight: {}\ncapture: {uses: auto}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    assert "TypeError" not in result.err
    report = json.loads((ws.root / "out/t/preflight/report.json").read_text())
    found = [f for f in report["findings"] if f["rule"] == "none-output"]
    assert found and "output_1" in found[0]["message"]
    assert report["verdicts"]["export"] == "ok"
    assert "none-output" in (ws.root / "out/t/preflight/report.md").read_text()


def test_a_none_output_is_left_out_of_compare_too(ws):
    ws.pipeline(pipeline("NoneOutput", VECTOR, "capture: {uses: export}\nonnx: {opset: 18}\n"
                         "compare: {needs: [capture, onnx]}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    report = json.loads((ws.root / "out/t/compare/report.json").read_text())
    assert {c["status"] for c in report["candidates"]} == {"pass"}
    assert [o["name"] for o in report["candidates"][0]["outputs"]] == ["output_0"]


def test_int8_of_a_float16_model_says_it_needs_float32(ws):
    x = "{shape: [batch, 3, 16, 16], dtype: float16, dynamic: {batch: [1, 2, 4]}}"
    ws.pipeline(pipeline("half_model", x, """
        capture: {uses: trace}
        onnx: {opset: 17}
        int8: {uses: quantize, precision: int8}"""))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "INT8 calibration needs a float32 graph" in result.err
    assert "float16" in result.err and "precision: fp16" in result.err
    assert "model.float()" in result.err and "op_types" not in result.err


def test_a_factory_error_without_kwargs_names_the_line_not_kwargs(ws):
    ws.pipeline(pipeline("reads_a_config", IMAGE, "capture: {uses: trace}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "KeyError: 'backbone'" in result.err and "kwargs" not in result.err
    line = next(i for i, text in enumerate(
        (ws.root / "models/detection.py").read_text().splitlines(), 1)
        if 'config["backbone"]' in text)
    assert f"models/detection.py:{line}" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_wrong_kwarg_still_points_at_kwargs(ws):
    ws.pipeline(pipeline("SmallConv", IMAGE, "capture: {uses: trace}")
                .replace("SmallConv}", "SmallConv, kwargs: {width: 3}}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "TypeError" in result.err and "check `kwargs`" in result.err


def test_a_model_in_train_mode_is_said_to_be_switched_to_eval(ws):
    ws.pipeline(pipeline("train_mode_model", IMAGE, "capture: {uses: trace}"))
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    assert summaries(result)["load"]["was_training"] == ["BatchNorm2d", "Dropout"]
    human = ws.qntz("run", "pipeline.yaml")
    assert "train() mode: switched to eval(), which changes its BatchNorm2d, Dropout" in \
        human.out
    ws.pipeline(pipeline("SmallConv", IMAGE, "capture: {uses: trace}"))  # eval() changes nothing
    assert "was_training" not in summaries(ws.qntz("run", "pipeline.yaml", "--json"))["load"]


def test_the_valid_size_hint_names_the_dims_the_model_refused(ws):
    x = ("{shape: [batch, 3, height, width], dynamic: {batch: [1, 2, 4], height: [16, 32, 41],"
         " width: [16, 32, 41]}}")
    ws.pipeline(pipeline("DivisibleBy4", x, """
        capture: {uses: trace}
        compare: {needs: [capture], iterations: 0, samples: 1}"""))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "need to be divisible by 4" in result.err
    assert "multiple_of: {height: 4, width: 4}" in result.err
    assert "batch: N" not in result.err


ENCODER = "{shape: [batch, seq, 32], dynamic: {batch: [1, 2, 4], seq: [4, 8, 16]}}"


def test_an_onnx_that_holds_the_capture_size_falls_back_to_the_eager_model(ws):
    """nn.TransformerEncoder traced, then exported: the ONNX loads and fails at batch=1,
    seq=4 (a Reshape baked by the trace). `exporter: auto` exports the eager model."""
    ws.pipeline(pipeline("Encoder", ENCODER, """
        capture: {uses: trace}
        onnx: {opset: 17}
        compare: {needs: [capture, onnx], iterations: 0, samples: 1}"""))
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    onnx = summaries(result)["onnx"]
    assert "fails at batch=1, seq=4" in onnx["fallback"]
    assert onnx["exporter"] == "dynamo"
    compare = json.loads((ws.root / "out/t/compare/report.json").read_text())
    assert compare["passed"]


def test_a_fixed_exporter_that_holds_the_capture_size_fails_in_one_line(ws):
    ws.pipeline(pipeline("Encoder", ENCODER,
                         "onnx: {opset: 17, exporter: torchscript, needs: [load]}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1 and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "fails at batch=1, seq=4 (the smallest declared sizes)" in result.err
    assert "Reshape" in result.err and "`exporter: auto`" in result.err


# --- qntz init ---------------------------------------------------------------------------

def _init(ws, factory: str) -> dict:
    result = ws.qntz("init", f"models.detection:{factory}", "-o", "p.yaml", "--force")
    assert result.code == 0, result.err
    assert ws.qntz("validate", "p.yaml").code == 0
    return yaml.safe_load((ws.root / "p.yaml").read_text())


def test_init_sizes_a_classifier_224_a_yolo_640_and_a_declared_size_first(ws):
    assert _init(ws, "TinyClassifier")["inputs"]["x"]["shape"] == ["batch", 3, 224, 224]
    assert _init(ws, "TinyDetector")["inputs"]["x"]["shape"] == ["batch", 3, 640, 640]
    assert _init(ws, "TimmClassifier")["inputs"]["x"]["shape"] == ["batch", 3, 96, 96]


def test_init_writes_an_attention_mask_as_zeros_and_ones(ws):
    inputs = _init(ws, "WrappedEncoder")["inputs"]
    assert inputs["input_ids"]["range"] == [0, 999]
    mask = inputs["attention_mask"]
    assert mask["range"] == [0, 1] and mask["role"] == "mask" and mask["dtype"] == "int64"


def test_init_guesses_float16_for_a_float16_model_and_leaves_int8_out(ws):
    spec = _init(ws, "half_classifier")
    assert spec["inputs"]["x"]["dtype"] == "float16"
    assert "int8" not in spec["steps"]
    assert "INT8 calibration needs a" in (ws.root / "p.yaml").read_text()
