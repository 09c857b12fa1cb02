"""`exporter: auto` falls back to the TorchScript exporter when the dynamo exporter cannot
write what was asked, and says so; an explicit exporter never falls back."""

from __future__ import annotations

import json

import onnx

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


SCRIPT_ONLY = """
import torch
from torch import nn


class ScriptOnlyFrac(nn.Module):
    '''timm-style `torch.jit.is_scripting()` branch: scripted, the module uses torch.frac,
    which the TorchScript exporter cannot write; eager computes the same as fmod(y, 1).'''

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if torch.jit.is_scripting():
            return torch.frac(y)
        return torch.fmod(y, 1.0)
"""


def test_a_captured_script_module_that_will_not_export_falls_back_to_eager(ws):
    """smp's SegFormer: scripted, its graph does not export (rank unknown at a split);
    `torch.onnx.export` of the eager module works. auto takes that route and says so."""
    ws.write("frac.py", SCRIPT_ONLY)
    ws.pipeline(PIPELINE.replace("se:SqueezeExcite", "frac:ScriptOnlyFrac")
                .replace("{uses: export}", "{uses: script}").replace("EXPORTER", "")
                .replace("needs: [onnx]", "needs: [capture, onnx]"))
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    onnx = {s["id"]: s for s in json.loads(result.out)["steps"]}["onnx"]["summary"]
    assert onnx["exporter"] == "torchscript"
    assert "aten::frac" in onnx["fallback"]
    assert onnx["fallback"].endswith("on the captured TorchScript module")


SE_FRAC = SE_BLOCK.replace("return y * torch.sigmoid", "return torch.frac(y) * torch.sigmoid")


def test_when_both_exporters_fail_the_fix_names_the_opset_dynamo_writes(ws):
    """diffusers' UNet1DModel: the dynamo exporter writes opset 18 for opset 17, and the
    TorchScript exporter cannot export the model; `opset: 18` is the fix that works."""
    ws.write("se.py", SE_FRAC)
    ws.pipeline(PIPELINE.replace("EXPORTER", ""))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1 and "Traceback" not in result.err
    assert "aten::frac" in result.err and "dynamo exporter wrote opset 18" in result.err
    assert "fix: set `opset: 18`" in result.err
    ws.pipeline(PIPELINE.replace("EXPORTER", "").replace("opset: 17", "opset: 18"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err


GATED = """
import torch


class GatedLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 16)

    def forward(self, x, scale: float = 1.0):
        a, b = self.lin(x).chunk(2, dim=-1)
        return a * torch.sigmoid(b) * scale
"""
GATED_PIPELINE = """qntz: 1
name: gated
model: {factory: gated:GatedLinear}
inputs:
  x: {shape: [batch, 8], dynamic: {batch: [1, 2, 4]}, range: [-1.0, 1.0]}
steps:
"""


def test_a_defaulted_parameter_is_not_an_onnx_input(ws):
    """The TorchScript exporter passes forward's unpassed defaults along: `scale: float =
    1.0` became an input `onnx::Cast_1` (diffusers' ControlNet: `conditioning_scale`)."""
    ws.write("gated.py", GATED)
    ws.pipeline(GATED_PIPELINE + "  onnx: {opset: 18, exporter: torchscript}\n"
                "  compare: {needs: [onnx]}\n")
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    model = onnx.load(str(ws.root / "out" / "gated" / "onnx" / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["x"]


def test_preflight_and_onnx_agree_when_dynamo_writes_a_split_onnxruntime_rejects(ws):
    """dynamo writes Split's opset-18 `num_outputs` at opset 17; both preflight's check and
    the onnx step fall back to the TorchScript exporter, and the run passes."""
    ws.write("gated.py", GATED)
    ws.pipeline(GATED_PIPELINE + "  preflight: {}\n  capture: {uses: auto}\n"
                "  onnx: {opset: 17}\n  compare: {needs: [capture, onnx]}\n")
    result = ws.qntz("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    steps = {s["id"]: s for s in json.loads(result.out)["steps"]}
    assert "num_outputs" in steps["onnx"]["summary"]["fallback"]


SPECTRUM = """
import torch


class Spectrum(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 8)

    def forward(self, x):
        return torch.fft.rfft(self.lin(x)).abs()
"""


def test_the_exporters_c_level_dump_stays_off_the_terminal(ws):
    """The TorchScript exporter writes its whole IR graph to file descriptor 1 when it
    fails; the terminal gets qntz's one line, and its progress lines still."""
    ws.write("spectrum.py", SPECTRUM)
    ws.pipeline("qntz: 1\nname: s\nmodel: {factory: spectrum:Spectrum}\ninputs:\n"
                "  x: {shape: [batch, 16], dynamic: {batch: [1, 2, 4]}}\n"
                "steps:\n  onnx: {opset: 17, exporter: torchscript}\n")
    result = ws.qntz_subprocess("run", "pipeline.yaml")
    assert result.code == 1
    assert "Torch IR graph" not in result.out + result.err
    assert "aten::fft_rfft" in result.err and "✓ load" in result.out
