"""Sizes a model refuses: `multiple_of` says which sizes a dynamic dim accepts, every
generated size honours it, and without it the model's refusal is one line, not a traceback."""

from __future__ import annotations

UNET = """
import torch
from torch import nn


class TinyUNet(nn.Module):
    \"\"\"Halves height and width twice, then doubles them back and adds the skips.\"\"\"

    def __init__(self):
        super().__init__()
        self.down1 = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.up1 = nn.ConvTranspose2d(4, 1, 2, stride=2)

    def forward(self, x):
        d1 = torch.relu(self.down1(x))
        u2 = torch.relu(self.up2(torch.relu(self.down2(d1)))) + d1
        return self.up1(u2) + x
"""
PIPELINE = """
qntz: 1
name: unet
model: {factory: unet:TinyUNet}
inputs:
  x:
    shape: [1, 1, size, size]
    dynamic: {size: [8, 16, 32]}RULE
steps:
  preflight: {}
  capture: {uses: auto}
  onnx: {}
  compare: {needs: [capture, onnx], iterations: 0, samples: 1}
"""


def test_a_size_the_model_refuses_is_one_line_naming_input_size_and_rule(ws):
    ws.write("unet.py", UNET)
    ws.pipeline(PIPELINE.replace("RULE", ""))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert "the model itself fails on x [1, 1, 21, 21]" in result.err
    assert "multiple_of: {size: N}" in result.err


def test_multiple_of_keeps_every_generated_size_valid(ws):
    ws.write("unet.py", UNET)
    ws.pipeline(PIPELINE.replace("RULE", "\n    multiple_of: {size: 4}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err


def test_a_range_that_breaks_its_own_rule_is_refused(ws):
    ws.write("unet.py", UNET)
    ws.pipeline(PIPELINE.replace("RULE", "\n    multiple_of: {size: 3}"))
    result = ws.qntz("validate", "pipeline.yaml")
    assert result.code == 2
    assert "must be a multiple of 3, but its range [8, 16, 32] has 8" in result.err


SPACE_TO_DEPTH = """
import torch


class SpaceToDepth(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, x):
        b, c, h, w = x.shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return self.conv(y.reshape(b, c * 4, h // 2, w // 2))
"""


def test_multiple_of_reaches_torch_export(ws):
    """A reshape by h // 2 exports only with the size declared a multiple: preflight
    reported a false export-dynamic-dim error (timm's ViT with dynamic_img_size, SegFormer)
    and chose another method."""
    ws.write("unet.py", SPACE_TO_DEPTH.replace("SpaceToDepth", "TinyUNet"))
    ws.pipeline(PIPELINE.replace("RULE", "\n    multiple_of: {size: 4}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    assert "captured with export" in result.out
    assert "export ok" in result.out
