"""compare: wrong conversions fail the run, with the candidate and its numbers named."""

from __future__ import annotations

import json

from conftest import pipeline_text

TRACE_AND_COMPARE = """
capture: {uses: trace}
onnx: {opset: 17}
compare: {needs: [capture, onnx]}
"""


def report(ws) -> dict:
    return json.loads((ws.root / "out" / "t" / "compare" / "report.json").read_text())


def test_traced_data_dependent_if_fails_compare(ws):
    ws.pipeline(pipeline_text("models.hazards:DataDependentIf", TRACE_AND_COMPARE))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "step 'compare': capture (torchscript) output 'output'" in result.err
    assert "max abs" in result.err and "low" in result.err
    rows = {c["id"]: c for c in report(ws)["candidates"]}
    assert rows["capture"]["status"] == rows["onnx"]["status"] == "fail"
    # a cached failure is still a failure
    again = ws.qntz("run", "pipeline.yaml")
    assert again.code == 1 and "cached" in again.out


def test_scripted_data_dependent_if_passes(ws):
    ws.pipeline(pipeline_text("models.hazards:DataDependentIf", """
    capture: {uses: script}
    compare: {needs: [capture]}
    """))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    assert report(ws)["candidates"][0]["status"] == "pass"


def test_baked_batch_size_fails_at_other_batch_sizes(ws):
    ws.pipeline(pipeline_text("models.hazards:BakedBatch", TRACE_AND_COMPARE))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    rows = {c["id"]: c for c in report(ws)["candidates"]}
    assert rows["capture"]["status"] in ("fail", "error")
    assert "batch=" in rows["capture"]["reason"]


def test_export_with_dict_outputs_and_tolerance_per_output(ws):
    ws.pipeline(pipeline_text("models.clean:TwoOutputs", """
    capture: {uses: export}
    onnx: {exporter: dynamo, opset: 18}
    compare:
      needs: [capture, onnx]
      outputs: {score: {atol: 0.01}}
      sizes: [{batch: 1}, {batch: 3}]
    """, shape="[batch, 32]"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    rows = {c["id"]: c for c in report(ws)["candidates"]}
    onnx_outputs = {o["name"]: o for o in rows["onnx"]["outputs"]}
    assert set(onnx_outputs) == {"logits", "score"}  # the dict's keys, carried through ONNX
    assert rows["onnx"]["status"] == "pass"
    assert {s.split()[0] for s in report(ws)["samples"]} == {"batch=1", "batch=3"}


def test_tight_tolerance_fails_and_is_reported(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", """
    capture: {uses: trace}
    onnx: {}
    compare: {needs: [capture, onnx], tolerances: {onnx: {atol: 0.0, rtol: 0.0}}}
    """))
    result = ws.qntz("run", "pipeline.yaml")
    md = (ws.root / "out" / "t" / "compare" / "report.md").read_text()
    if result.code == 0:  # bit-exact on this machine: then the row must say so
        assert report(ws)["candidates"][1]["max_abs"] == 0.0
    else:
        assert "❌ FAIL" in md and "onnx (onnx)" in result.err


def test_onnx_source_pipeline_uses_onnx_reference(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}\nonnx: {}"),
                "first.yaml")
    assert ws.qntz("run", "first.yaml").code == 0
    (ws.root / "model.onnx").write_bytes(
        (ws.root / "out" / "t" / "onnx" / "model.onnx").read_bytes())
    ws.pipeline("""
    qntz: 1
    name: from-onnx
    model: {onnx: model.onnx}
    inputs:
      x: {shape: [batch, 3, 16, 16], dynamic: {batch: [1, 2, 4]}}
    steps:
      simplify: {}
      compare: {needs: [simplify]}
    """)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    data = json.loads((ws.root / "out" / "from-onnx" / "compare" / "report.json").read_text())
    assert "ONNX" in data["reference"]["runs"]
    assert data["candidates"][0]["status"] == "pass"


def test_latency_lives_in_a_volatile_file(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", """
    capture: {uses: trace}
    onnx: {}
    compare: {needs: [capture, onnx], iterations: 3, warmup: 1}
    """))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    folder = ws.root / "out" / "t" / "compare"
    assert "latency" not in (folder / "report.json").read_text()
    timing = json.loads((folder / "latency.json").read_text())
    assert timing["reference"]["latency_ms"]["median"] > 0
    assert timing["candidates"]["onnx"]["latency_ms"]["median"] > 0
    assert "speedup" in timing["candidates"]["onnx"]
    lock = json.loads(next(ws.root.glob("**/*lock.json")).read_text())
    assert set(lock["steps"]["compare"]["outputs"]) == {"report.json"}  # the lasting ones


def test_subnormal_outputs_compare_equal_and_say_why(ws):
    ws.pipeline(pipeline_text("models.clean:Subnormal", """
    capture: {uses: export}
    onnx: {opset: 18}
    compare: {needs: [capture, onnx], iterations: 0, metric: cosine, threshold: 0.99}
    auto: {uses: compare, needs: [onnx], iterations: 0}
    """, shape="[batch, 32]"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    row = report(ws)["candidates"][1]["outputs"][0]
    assert row["cosine_min"] > 0.99  # cosine computed without underflow
    auto = json.loads((ws.root / "out" / "t" / "auto" / "report.json").read_text())
    assert auto["candidates"][0]["outputs"][0]["decided_by"].startswith("auto: ")


def test_scale_rule_passes_float_noise_and_fails_wrong_values():
    import numpy as np

    from qntz.runtime.metrics import OutputStats

    rng = np.random.default_rng(0)
    want = rng.normal(0, 50.0, size=(2, 1000))  # large values, many near zero: rtol misses
    noise = want + rng.normal(0, 50.0 * 2e-5, size=want.shape)
    stat = OutputStats("y", None, None)
    stat.add("noise", noise, want)
    assert stat and "reference RMS" in stat.decided_by
    strict = OutputStats("y", None, None, metric="allclose")
    strict.add("noise", noise, want)
    assert not strict  # a bar written out is kept
    wrong = OutputStats("y", None, None)
    wrong.add("wrong", want * 1.01, want)
    assert not wrong and "nor within" in wrong.verdict()


def test_flushed_subnormals_are_zero_on_both_sides():
    """MobileViT's first output is ~1e-42; a runtime that flushes subnormals returns 0."""
    import numpy as np

    from qntz.runtime.metrics import OutputStats

    want = np.full((2, 8), 1e-42, np.float32)
    for metric in ("cosine", "auto"):
        stat = OutputStats("tiny", None, None, metric=metric)
        stat.add("flushed", np.zeros_like(want), want)
        assert stat and stat.cosine_min == 1.0, stat.verdict()


def test_the_simplify_check_judges_like_compare():
    """UNet1D on a constant input: float32 rounding itself moves the output by 7e-4, and
    the simplified model (closer to float64 than its input) failed a plain allclose."""
    import numpy as np

    from qntz.capture.simplify import _agree

    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 64)).astype(np.float32)
    assert _agree(a, a + np.float32(5e-4), 1e-5, 1e-4)  # rounding-sized, within 1e-3 of RMS
    assert not _agree(a, a + np.float32(0.05), 1e-5, 1e-4)  # a wrong graph
    assert not _agree(a, a[:1], 1e-5, 1e-4)
    assert not _agree(a, np.full_like(a, np.nan), 1e-5, 1e-4)
