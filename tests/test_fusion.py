"""Transformer fusions before dynamic INT8: used when they hold, dropped when they would not."""

from __future__ import annotations

import json

import onnx
import pytest

PIPELINE = """
qntz: 1
name: t
model: {{factory: models.encoders:MaskedEncoder, kwargs: {{bias: {bias}, pool: {pool}}}}}
inputs:
  tokens: {{shape: [batch, seq], dtype: int64, dynamic: {{batch: [1, 2, 4], seq: [4, 16, 32]}},
           range: [0, 100]}}
  mask: {{shape: [batch, seq], dtype: int64, range: [1, 1], constant: true}}
data:
  padded: {{from: callable, function: models.encoders:padded}}
steps:
  capture: {{uses: {capture}}}
  onnx: {{opset: {opset}}}
  int8: {{uses: quantize, data: padded{extra}}}
  compare: {{needs: [onnx, int8], data: padded, metric: cosine, threshold: 0.99}}
"""


def run(ws, bias: str = "block", extra: str = "", capture: str = "export", opset: int = 18,
        pool: bool = True) -> tuple[dict, set[str]]:
    ws.pipeline(PIPELINE.format(bias=bias, extra=extra, capture=capture, opset=opset,
                                pool=str(pool).lower()))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.out + result.err
    out = ws.root / "out" / "t" / "int8"
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    return json.loads((out / "quantize.json").read_text()), ops


@pytest.mark.parametrize("capture, opset", [("export", 18), ("trace", 17)])
def test_padding_mask_attention_becomes_qattention(ws, capture, opset):
    """Both exporters' graphs: the dynamo one as written, the TorchScript one after its
    reshape targets are probed and its softmax guards removed."""
    summary, ops = run(ws, capture=capture, opset=opset)
    fusion = summary["fusion"]
    assert fusion["used"] and fusion["attention"].startswith("Attention (QAttention")
    assert fusion["applied"]["attention"] == 2
    assert "QAttention" in ops and "Softmax" not in ops
    assert summary["accuracy"]["cosine"]["min"] > 0.99


def test_attention_bias_that_is_not_a_padding_mask_is_kept(ws):
    """Rewiring this bias to QAttention's mask input agrees on unpadded data only; the check
    on padded copies refuses it, and the bias stays with a float MultiHeadAttention."""
    summary, ops = run(ws, bias="bonus")
    fusion = summary["fusion"]
    assert fusion["used"] and fusion["attention"].startswith("MultiHeadAttention after")
    assert any("QAttention" in note and "changed the float outputs" in note
               for note in fusion["notes"])
    assert "QAttention" not in ops and "MultiHeadAttention" in ops


def test_fuse_false_quantizes_the_graph_as_exported(ws):
    summary, ops = run(ws, extra=", fuse: false")
    assert summary["fusion"] is None
    assert "Softmax" in ops and "MatMulInteger" in ops and "QAttention" not in ops


def test_boolean_mask_guard_is_kept_where_a_fully_masked_row_shows(ws):
    """The exporter guards softmax for rows with every key masked (PyTorch gives zeros);
    fused attention gives the mean of the values there. Pooled over the mask, nobody sees
    the difference and the fusion holds; token by token it shows, and it is refused."""
    pooled, _ = run(ws, bias="boolean", capture="trace", opset=17)
    assert pooled["fusion"]["used"] and pooled["fusion"]["applied"]["softmax_nan_guard_removed"]
    tokens, ops = run(ws, bias="boolean", capture="trace", opset=17, pool=False)
    assert not tokens["fusion"]["used"]
    assert any("changed the float outputs" in note for note in tokens["fusion"]["notes"])
    assert "QAttention" not in ops and "MatMulInteger" in ops


def test_an_input_that_only_looks_like_a_mask_is_not_broken(ws):
    """Padding is added to every 0/1 integer input to check the fusion; where that makes an
    input invalid (a token type the model does not have), the check does without it."""
    ws.pipeline("""
    qntz: 1
    name: t
    model: {factory: models.encoders:TypedEncoder}
    inputs:
      tokens: {shape: [batch, seq], dtype: int64, dynamic: {batch: [1, 2, 4], seq: [4, 16, 32]},
               range: [0, 100]}
      mask: {shape: [batch, seq], dtype: int64, range: [1, 1], constant: true}
      types: {shape: [batch, seq], dtype: int64, range: [0, 0], constant: true}
    data:
      typed: {from: callable, function: models.encoders:typed}
    steps:
      capture: {uses: export}
      onnx: {opset: 18}
      int8: {uses: quantize, data: typed}
      compare: {needs: [onnx, int8], data: typed, metric: cosine, threshold: 0.99}
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.out + result.err
    summary = json.loads((ws.root / "out" / "t" / "int8" / "quantize.json").read_text())
    assert summary["fusion"]["used"]
    assert summary["fusion"]["attention"].startswith("Attention (QAttention")


def test_a_fused_graph_that_cannot_be_quantized_falls_back(ws, monkeypatch):
    """Stand-in for a quantizer that meets a fused op it does not handle."""
    from qntz.quantize import ort_tools as quantization

    real = quantization.quantize_int8

    def refuse_fused(source, *args, **kwargs):
        if source.name == "fused.onnx":
            raise RuntimeError("no quantizer for this fused op")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(quantization, "quantize_int8", refuse_fused)
    summary, ops = run(ws)
    assert not summary["fusion"]["used"]
    assert "no quantizer for this fused op" in summary["fusion"]["notes"][-1]
    assert "QAttention" not in ops and "MatMulInteger" in ops
