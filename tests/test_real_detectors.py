"""What running the real detectors (torchvision's, Ultralytics' YOLO) through a plain
pipeline turned up (issue 20), each reproduced in plain torch (tests/zoo/detection.py);
the last test runs torchvision's SSDlite itself where torchvision imports."""

from __future__ import annotations

import json

import pytest
from test_detection_faults import pipeline, summaries

IMAGES = "{shape: [1, 3, 16, 16]}"
BATCH = "{shape: [batch, 3, 16, 16], dynamic: {batch: [1, 2, 4]}}"


def test_a_scripted_forward_taking_a_list_of_images_is_called_with_a_list(ws):
    """torchvision's detectors script to `forward(images: List[Tensor])`: preflight fed the
    scripted model a batch tensor and called its refusal a frozen value."""
    ws.pipeline(pipeline("ListOfImages", IMAGES, """
        preflight: {}
        capture: {uses: script}
        compare: {needs: [capture], iterations: 0, samples: 1}"""))
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    assert summaries(result)["preflight"]["verdicts"]["script"] == "ok"
    compare = json.loads((ws.root / "out/t/compare/report.json").read_text())
    assert compare["passed"]


def test_an_export_that_unrolls_a_loop_over_the_batch_says_to_fix_the_batch(ws):
    """A Python loop over the images (torchvision's transform): the TorchScript exporter's
    model holds the capture's batch, dynamo cannot export the loop. The fix is one batch
    size, not another opset or exporter."""
    ws.pipeline(pipeline("LoopsOverImages", BATCH, "onnx: {opset: 17, needs: [load]}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1 and "Traceback" not in result.err
    # in-process, dynamo's graph dump reaches the captured stderr too; the error is one line
    error = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and error[0] == result.err.strip().splitlines()[-1]
    assert "exported at batch=2" in error[0]
    assert "`dynamic: {batch: [N, N, N]}`" in error[0]
    assert "try another opset" not in error[0]


def test_a_list_of_dicts_is_named_as_what_trace_cannot_return(ws):
    ws.pipeline(pipeline("ReturnsDetections", IMAGES, "preflight: {}"))
    result = ws.qntz("run", "pipeline.yaml")
    report = json.loads((ws.root / "out/t/preflight/report.json").read_text())
    trace = next(f for f in report["findings"] if f["rule"] == "trace-fails")
    assert "a list of dicts" in trace["fix"] and "fix the line it names" not in trace["fix"]
    assert result.code == 0, result.err  # export works: auto would use it


def test_torchvision_ssdlite_preflight_scripts_it(ws):
    """The real thing: SSDlite scripts, and its scripted model agrees with eager."""
    pytest.importorskip("torchvision")
    (ws.root / "models/tv.py").write_text(
        "from torchvision.models import detection\n\n\ndef ssdlite():\n"
        "    return detection.ssdlite320_mobilenet_v3_large(weights=None, "
        "weights_backbone=None)\n")
    steps = "preflight: {methods: [script], onnx: false}"
    ws.pipeline(pipeline("ssdlite", "{shape: [1, 3, 96, 96]}", steps)
                .replace("models.detection:", "models.tv:"))
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    assert summaries(result)["preflight"]["verdicts"]["script"] == "ok"


def test_preflight_does_not_call_onnx_ok_when_the_onnx_step_fails_on_size(ws):
    """Preflight exports as the onnx step does, dynamic dims included, and runs the file at
    the declared sizes' ends: "onnx ok" beside an onnx step that fails is a contradiction."""
    ws.pipeline(pipeline("LoopsOverImages", BATCH, "preflight: {fail_on: never}\n"
                         "capture: {uses: trace}"))
    result = ws.qntz("run", "pipeline.yaml", "--step", "preflight")
    assert result.code == 0, result.err
    report = json.loads((ws.root / "out/t/preflight/report.json").read_text())
    assert report["verdicts"]["onnx"] == "fails"
    finding = next(f for f in report["findings"] if f["rule"] == "onnx-frozen-size")
    assert "batch=" in finding["message"] and "[N, N, N]" in finding["fix"]
