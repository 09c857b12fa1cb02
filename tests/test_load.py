"""load: weights (weights_only), TorchScript and ONNX sources, and what changes the key."""

from __future__ import annotations

import json

import torch

from conftest import pipeline_text
from zoo.clean import SmallCNN

STEPS = """
capture: {uses: trace}
onnx: {}
simplify: {backend: onnxslim}
compare: {needs: [capture, simplify]}
"""


def with_weights(text: str, path: str, strict: str = "") -> str:
    return text.replace("factory: models.clean:SmallCNN",
                        f"factory: models.clean:SmallCNN\n  weights: {path}{strict}")


def test_weights_are_loaded_and_enter_the_key(ws):
    torch.manual_seed(7)
    torch.save(SmallCNN().state_dict(), ws.root / "w.pt")
    ws.pipeline(with_weights(pipeline_text("models.clean:SmallCNN", STEPS), "w.pt"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    traced = torch.jit.load(str(ws.root / "out" / "t" / "capture" / "model.pt"))
    expected = torch.load(ws.root / "w.pt", weights_only=True)["head.weight"]
    assert torch.equal(traced.state_dict()["head.weight"], expected)
    torch.manual_seed(8)
    torch.save(SmallCNN().state_dict(), ws.root / "w.pt")
    states = {s["id"]: s for s in json.loads(ws.qntz("status", "pipeline.yaml", "--json").out)[
        "steps"]}
    assert states["load"]["reason"] == "source changed: w.pt"


def test_weights_that_do_not_fit_fail_clearly(ws):
    torch.save({"head.weight": torch.zeros(3, 3)}, ws.root / "w.pt")
    ws.pipeline(with_weights(pipeline_text("models.clean:SmallCNN", STEPS), "w.pt"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1 and "do not fit the model" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_pickled_objects_are_refused(ws):
    torch.save({"state": object()}, ws.root / "w.pt")
    ws.pipeline(with_weights(pipeline_text("models.clean:SmallCNN", STEPS), "w.pt"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 2 and "cannot load weights" in result.err


def test_torchscript_source(ws):
    scripted = torch.jit.script(SmallCNN().eval())
    scripted.save(str(ws.root / "model.ts"))
    ws.pipeline("""
    qntz: 1
    name: t
    model: {torchscript: model.ts}
    inputs:
      x: {shape: [batch, 3, 16, 16], dynamic: {batch: [1, 2, 4]}}
    steps:
      onnx: {}
      compare: {needs: [onnx]}
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    report = json.loads((ws.root / "out" / "t" / "compare" / "report.json").read_text())
    assert report["reference"]["runs"] == "PyTorch eager"
    assert report["candidates"][0]["status"] == "pass"


def test_dynamo_exporter_from_the_live_model(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN",
                              "onnx: {exporter: dynamo, opset: 18}\ncompare: {needs: [onnx]}"))
    assert ws.qntz("run", "pipeline.yaml").code == 0
    lock = json.loads((ws.root / "pipeline.lock.json").read_text())
    assert lock["steps"]["onnx"]["params"]["exporter"] == "dynamo"


def test_default_written_explicitly_hashes_the_same(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}\nonnx: {}"))
    assert ws.qntz("run", "pipeline.yaml").code == 0
    ws.pipeline(pipeline_text("models.clean:SmallCNN",
                              "capture: {uses: trace, check_trace: true}\nonnx: {opset: 17}"))
    states = json.loads(ws.qntz("status", "pipeline.yaml", "--json").out)["steps"]
    assert {s["state"] for s in states} == {"cached"}


def test_device_cuda_without_a_gpu_is_one_line(ws):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("this machine has a CUDA device")
    text = pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}")
    path = ws.pipeline(text.replace("factory: models.clean:SmallCNN",
                                    "factory: models.clean:SmallCNN\n  device: cuda"))
    done = ws.qntz("run", path)
    assert done.code == 2
    assert done.err.count("error:") == 1 and "sees no CUDA device" in done.err
    assert "device: cpu" in done.err
