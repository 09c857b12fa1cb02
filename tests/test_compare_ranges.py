"""compare on the range ends: constant inputs give a normalization zero variance, where a
correct runtime legitimately differs from eager; they must still catch frozen branches, and
must not drag down a lossy candidate's mean."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from conftest import pipeline_text

EXPORT = """
capture: {uses: trace}
onnx: {opset: 17}
"""
CALIB = "data:\n  calib: {from: npz, path: calib.npz}\n"


def report(ws) -> dict:
    return json.loads((ws.root / "out" / "t" / "compare" / "report.json").read_text())


def outputs(ws, candidate: str) -> dict:
    rows = {c["id"]: c for c in report(ws)["candidates"]}
    return rows[candidate]["outputs"][0]


def unet_pipeline(ws, factory: str, steps: str) -> None:
    x = np.random.default_rng(0).uniform(0, 1, (16, 3, 32, 32)).astype(np.float32)
    np.savez(ws.root / "calib.npz", x=x)
    ws.pipeline(pipeline_text(factory, EXPORT + textwrap.dedent(steps), shape="[batch, 3, 32, 32]",
                              extra=CALIB))


@pytest.mark.parametrize("factory", ["models.normalized:NormUNet",
                                     "models.normalized:monai_unet"])
def test_normalized_float_onnx_passes_on_range_ends(ws, factory):
    if factory.endswith("monai_unet"):
        pytest.importorskip("monai")
    unet_pipeline(ws, factory, "compare: {needs: [capture, onnx], iterations: 0}")
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    onnx = outputs(ws, "onnx")
    low = next(r for r in onnx["range_ends"] if r["sample"].endswith(" low"))
    # allclose, zero, scale and float64 all fail on all zeros (the failure before this
    # rule); eager float32 itself moves as far under rounding noise
    assert low["pass"] and low["rule"] == "rounding"
    assert low["max_abs"] <= 4 * low["sensitivity"]
    assert "rounding noise" in onnx["decided_by"]
    md = (ws.root / "out" / "t" / "compare" / "report.md").read_text()
    assert "## Range ends" in md and "| rounding |" in md


def test_3d_normalized_float_onnx_passes_on_the_zero_volume(ws):
    """The statistics of a normalization round with their length: eager under per-result
    noise alone moved 0.0016 where ONNX Runtime is 0.006 off on the all-zero volume."""
    pytest.importorskip("monai")
    ws.pipeline(pipeline_text("models.normalized:monai_unet_3d", EXPORT + "compare: {needs: "
                              "[onnx], iterations: 0}", shape="[batch, 1, 32, 32, 32]",
                              dynamic="{batch: [1, 1, 2]}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    low = next(r for r in outputs(ws, "onnx")["range_ends"] if r["sample"].endswith(" low"))
    assert low["pass"] and low["rule"] == "rounding"


def test_traced_branch_still_fails_on_the_low_end(ws):
    ws.pipeline(pipeline_text("models.hazards:DataDependentIf", EXPORT
                              + "compare: {needs: [capture, onnx], iterations: 0}"))
    assert ws.qntz("run", "pipeline.yaml").code == 1
    low = next(r for r in outputs(ws, "onnx")["range_ends"] if r["sample"].endswith(" low"))
    # noise keeps zeros zero, so `x.sum() > 0` takes eager's branch: eager barely moves
    assert not low["pass"] and low["rule"] is None
    assert low["sensitivity"] is not None and low["max_abs"] > 1e3 * low["sensitivity"]


def test_range_ends_stay_out_of_the_int8_mean(ws):
    unet_pipeline(ws, "models.normalized:NormUNet", """
    int8: {uses: quantize, data: calib}
    compare: {needs: [onnx, int8], iterations: 0,
              tolerances: {int8: {metric: cosine, threshold: 0.99}}}
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    int8 = outputs(ws, "int8")
    ends = int8["range_ends"]
    assert [r["sample"].split()[-1] for r in ends] == ["low", "high"]
    assert all(r["pass"] and r["rule"] in ("allclose", "rounding") for r in ends)
    assert int8["samples"] == len(report(ws)["samples"]) - len(ends)  # the random draws
    # the constant input's lower cosine is in its row, not in the figures that decide
    assert int8["cosine_min"] > min(r["cosine"] for r in ends)
    assert "range ends apart" in int8["decided_by"]


SMALL_CNN = """
from torch import nn


def net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
"""


def test_int8_range_end_passes_by_its_own_cosine(ws):
    """timm's ResNet18 and RegNetX failed here: INT8 on a constant input, far from its
    calibration data, is 5-30x the noise bar while its cosine stays above the threshold."""
    ws.write("small.py", SMALL_CNN)
    ws.pipeline(pipeline_text("small:net", EXPORT + textwrap.dedent("""
    int8: {uses: quantize}
    compare: {needs: [onnx, int8], iterations: 0,
              tolerances: {int8: {metric: cosine, threshold: 0.99}}}
    """), shape="[batch, 3, 32, 32]").replace("range: [0.0, 1.0]", "range: [-1.0, 1.0]"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    low = next(r for r in outputs(ws, "int8")["range_ends"] if r["sample"].endswith(" low"))
    assert low["pass"] and low["rule"] == "cosine" and low["cosine"] >= 0.99
    assert low["max_abs"] > 4 * low["sensitivity"]  # the noise rule alone fails it


def test_noise_reaches_normalization_statistics_and_leaves_index_arithmetic_alone():
    """Inference mode keeps composites whole: the norms are run as their kernels so their
    statistics get the noise; an upsampling is not decomposed (noise on its index
    arithmetic made MONAI's SegResNet index out of bounds at INT8's noise level)."""
    import torch

    from qntz.compare.rounding_noise import relative_noise

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 1), torch.nn.GroupNorm(4, 4),
                                torch.nn.Upsample(scale_factor=2, mode="bilinear"))
    x = torch.ones(1, 1, 16, 16)
    with torch.inference_mode():
        clean = model(x)
        with relative_noise(0.05, 0):
            noisy = model(x)
        with relative_noise(2.0 ** -24, 0):
            rounded = model(x)
    assert noisy.shape == clean.shape
    # a constant input gives the norm zero variance: its statistics' rounding is amplified
    # by 1/sqrt(eps) (per-result noise alone moves this output by about 1e-5)
    assert float((rounded - clean).abs().max()) > 1e-4


def test_noise_never_turns_an_attention_mask_at_the_dtype_minimum_into_nan():
    """(1 - mask) * finfo.min under relative noise may overflow to -inf; -inf plus its
    own noise made NaN: the rounding rule had nothing to measure on the encoder example."""
    import torch

    from qntz.compare.rounding_noise import relative_noise

    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    scores = torch.tensor([[0.5, -0.2, 0.3, 0.1]])
    with torch.inference_mode(), relative_noise(0.01, 0):
        bias = (1.0 - mask) * torch.finfo(torch.float32).min
        weights = torch.softmax(scores + bias, dim=-1)
    assert not torch.isnan(bias).any() and not torch.isnan(weights).any()
