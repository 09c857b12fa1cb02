"""On a machine with an NVIDIA GPU (issue 21): a model that lives on CUDA, inputs placed on
its device, the reference computed there with TF32 off, parameters on two devices refused.
Every test here skips, with the reason, where torch sees no CUDA device (CI)."""

from __future__ import annotations

import json

import pytest

from conftest import pipeline_text

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs an NVIDIA GPU (CUDA torch)")]

STEPS = ("capture: {uses: trace}\nonnx: {}\nint8: {uses: quantize}\n"
         "compare: {needs: [capture, onnx, int8]}")
ON_CUDA = """\
import torch

from models.clean import SmallCNN


def on_cuda():
    return SmallCNN().cuda().eval()


def split():
    model = SmallCNN().eval()
    model.head.cuda()
    return model
"""


def test_device_cuda_moves_the_model_and_every_candidate_is_verified(ws):
    text = pipeline_text("models.clean:SmallCNN", STEPS)
    path = ws.pipeline(text.replace("factory: models.clean:SmallCNN",
                                    "factory: models.clean:SmallCNN\n  device: cuda"))
    done = ws.qntz("run", path)
    assert done.code == 0, done.err
    report = json.loads((ws.root / "out" / "t" / "compare" / "report.json").read_text())
    assert "cuda" in report["reference"]["runs"]
    assert {c["status"] for c in report["candidates"]} == {"pass"}


def test_a_factory_that_returns_a_cuda_model_runs_there(ws):
    ws.write("models/gpu.py", ON_CUDA)
    done = ws.qntz("run", ws.pipeline(pipeline_text("models.gpu:on_cuda", STEPS)))
    assert done.code == 0, done.err
    load = json.loads((ws.root / "out" / "t" / "load" / "model.json").read_text())
    assert load["device"].startswith("cuda")


def test_parameters_on_two_devices_are_a_preflight_error_naming_both(ws):
    ws.write("models/gpu.py", ON_CUDA)
    path = ws.pipeline(pipeline_text("models.gpu:split", "preflight: {}\ncapture: {uses: auto}"))
    done = ws.qntz("run", path)
    assert done.code != 0
    assert "multi-device" in done.err or "devices" in done.err
    assert "head." in done.err and "conv." in done.err
