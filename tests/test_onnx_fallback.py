"""`exporter: auto` falls back to the TorchScript exporter when the dynamo exporter cannot
write what was asked, and says so; an explicit exporter never falls back."""

from __future__ import annotations

import json

SE_BLOCK = """
import torch
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.conv(x)
        return y * torch.sigmoid(self.fc(y.mean((2, 3))))[:, :, None, None]
"""
PIPELINE = """
qntz: 1
name: se
model: {factory: se:SqueezeExcite}
inputs:
  x: {shape: [batch, 3, 16, 16], dynamic: {batch: [1, 2, 4]}, range: [0.0, 1.0]}
steps:
  capture: {uses: export}
  onnx: {opset: 17EXPORTER}
  compare: {needs: [onnx], iterations: 0, samples: 1}
"""


def test_dynamo_writing_another_opset_falls_back_to_torchscript(ws):
    ws.write("se.py", SE_BLOCK)
    ws.pipeline(PIPELINE.replace("EXPORTER", ""))
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    onnx = {s["id"]: s for s in json.loads(result.out)["steps"]}["onnx"]["summary"]
    assert onnx["exporter"] == "torchscript" and onnx["opset"] == 17
    assert "dynamo exporter wrote opset 18" in onnx["fallback"]


def test_an_explicit_exporter_does_not_fall_back(ws):
    ws.write("se.py", SE_BLOCK)
    ws.pipeline(PIPELINE.replace("EXPORTER", ", exporter: dynamo"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "wrote opset 18, not the 17 asked for" in result.err
    assert "exporter: torchscript" in result.err and "Traceback" not in result.err
