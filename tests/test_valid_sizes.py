"""Sizes a model refuses: `multiple_of` says which sizes a dynamic dim accepts, every
generated size honours it, and without it the model's refusal is one line, not a traceback."""

from __future__ import annotations

from conftest import pipeline_text

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


def test_a_dynamic_dim_whose_opt_is_one_is_captured_at_two():
    """torch.export specializes an example dim of size 1: a batch written [1, 1, 2] was
    captured at 1, so preflight reported a false export-dynamic-dim and `auto` fell back to
    tracing (GPT-2 at 124M: TorchScript's ONNX with its tied weights written twice)."""
    from qntz.core.inputs import capture_example, capture_sizes, parse_inputs

    inputs = parse_inputs({"x": {"shape": ["batch", "seq"], "dtype": "int64",
                                 "dynamic": {"batch": [1, 1, 2], "seq": [1, 1, 1]}},
                           "y": {"shape": ["n"], "dynamic": {"n": [1, 3, 8]}}},
                          lambda *parts: "inputs")
    assert capture_sizes(inputs) == {"batch": 2, "seq": 1, "n": 3}
    assert capture_example(inputs)["x"].shape == (2, 1)


def test_a_batch_from_one_exports_with_its_dim_dynamic(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "preflight: {}\ncapture: {uses: auto}",
                              dynamic="{batch: [1, 1, 4]}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    assert "export-dynamic-dim" not in result.out and "captured with export" in result.out


def test_a_dim_given_one_size_is_static_for_the_exporters(ws):
    """`dynamic: {batch: [N, N, N]}` (the fix qntz gives for a loop over the batch) is one
    size: torch.export refuses a Dim with min = max, so it must not get one."""
    text = pipeline_text("models.clean:MLP", "capture: {uses: export}\nonnx: {}\n"
                         "compare: {needs: [capture, onnx], iterations: 0}",
                         shape="[batch, 32]", dynamic="{batch: [2, 2, 2]}")
    done = ws.qntz("run", ws.pipeline(text))
    assert done.code == 0, done.err
