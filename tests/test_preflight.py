"""preflight: each hazard flagged with its rule, methods and line; verdicts that hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import pipeline_text

ZOO = Path(__file__).parent / "zoo"
IMAGE = ("[batch, 3, 16, 16]", "{batch: [1, 2, 4]}")
VECTOR = ("[batch, 16]", "{batch: [1, 2, 4]}")
SEQUENCE = ("[batch, seq, 32]", "{batch: [1, 2, 4], seq: [4, 8, 16]}")
MATRIX = ("[batch, 4, 4]", "{batch: [1, 2, 4]}")


def line_of(text: str, module: str = "hazards.py") -> int:
    lines = (ZOO / module).read_text().splitlines()
    return next(i for i, ln in enumerate(lines, 1) if text in ln)


# model, input shape, {rule: (methods, line marker)}, verdicts
CASES = {
    "DataDependentIf": (IMAGE, {"data-dependent-control-flow": (["trace", "export"],
                                                                "if x.sum() > 0:")},
                        {"trace": "fails", "script": "ok", "export": "fails"}),
    "BakedBatch": (IMAGE, {"trace-frozen-shape": (["trace"], "y.reshape(int(")},
                   {"trace": "fails", "script": "ok", "export": "fails"}),
    "NumpyCall": (VECTOR, {"numpy-round-trip": (["trace", "script", "export"], "np.tanh")},
                  {"trace": "fails", "script": "fails", "export": "fails"}),
    "ItemScale": (VECTOR, {"tensor-to-python": (["trace"], "peak = x.abs().max()")},
                  {"trace": "fails", "script": "ok", "export": "risky"}),
    "MathOnTensor": (VECTOR, {"python-math": (["trace", "export"], "x * math.exp(")},
                     {"trace": "fails", "script": "ok"}),
    "DeviceLiteral": (VECTOR, {"trace-device-constant": (["trace"], 'device="cpu"')},
                      {"trace": "risky", "script": "ok", "export": "ok"}),
    "NumpyOutput": (VECTOR, {"non-tensor-output": (["trace", "script", "export"], None)}, {}),
    "TwoDevices": (VECTOR, {"multi-device": (["trace", "script", "export"], None)}, {}),
    "GeneratorSum": (VECTOR, {"script-unsupported": (["script"], "sum(layer(x)")},
                     {"trace": "ok", "script": "fails", "export": "ok"}),
    "TolistLoop": (VECTOR, {"tensor-to-python": (["trace"], "x.mean(dim=0).tolist()")},
                   {"trace": "fails", "export": "risky"}),
    "MissingTypeHint": (VECTOR, {"script-unsupported": (["script"], "def forward(self, x, f")},
                        {"trace": "ok", "script": "fails", "export": "ok"}),
    "UsesGlobal": (VECTOR, {"script-unsupported": (["script"], 'return x * LOOKUP["scale"]')},
                   {"trace": "ok", "script": "fails", "export": "ok"}),
    "NoOnnxOperator": (MATRIX, {"onnx-unsupported-op": (["onnx"], "return torch.linalg.inv(")},
                       {"trace": "risky", "export": "ok", "onnx": "fails"}),
}
CLEAN = {"SmallCNN": IMAGE, "MLP": ("[batch, 32]", "{batch: [1, 2, 4]}"),
         "TinyTransformer": SEQUENCE}


def preflight(ws, factory: str, shape: tuple[str, str], extra_steps: str = "") -> dict:
    ws.pipeline(pipeline_text(factory, "preflight: {fail_on: never}\n" + extra_steps,
                              shape=shape[0], dynamic=shape[1]))
    result = ws.qntz("run", "pipeline.yaml", "--step", "preflight")
    assert result.code == 0, result.out + result.err
    return json.loads((ws.root / "out" / "t" / "preflight" / "report.json").read_text())


@pytest.mark.parametrize("name", list(CASES))
def test_hazard_is_flagged_with_rule_methods_and_line(ws, name):
    shape, rules, verdicts = CASES[name]
    report = preflight(ws, f"models.hazards:{name}", shape)
    # the error, where a method's real test turned the rest of a finding into a warning
    by_rule = {f["rule"]: f for f in sorted(report["findings"],
                                            key=lambda f: f["severity"] == "error")}
    for rule, (methods, marker) in rules.items():
        assert rule in by_rule, (rule, report["findings"])
        finding = by_rule[rule]
        assert finding["methods"] == methods
        assert finding["file"] == "models/hazards.py" and finding["fix"]
        if marker:
            assert finding["line"] == line_of(marker), finding
    for method, verdict in verdicts.items():
        assert report["verdicts"][method] == verdict, report["verdicts"]
    for finding in report["findings"]:  # a fix never offers a failing method, nor itself
        for method in ("trace", "script", "export"):
            if f"`uses: {method}`" in finding["fix"]:
                assert report["verdicts"][method] != "fails", finding
                assert method not in finding["methods"], finding


@pytest.mark.parametrize("name", list(CLEAN))
def test_clean_models_have_no_findings(ws, name):
    report = preflight(ws, f"models.clean:{name}", CLEAN[name])
    assert report["findings"] == []
    assert set(report["verdicts"].values()) == {"ok"}
    assert report["recommendation"] == "export"


TRUTH_MODELS = ["DataDependentIf", "BakedBatch", "NumpyCall", "ItemScale", "MathOnTensor",
                "DeviceLiteral", "GeneratorSum", "TolistLoop", "MissingTypeHint", "UsesGlobal"]


@pytest.mark.parametrize("name", TRUTH_MODELS)
def test_verdicts_hold_when_capturing_for_real(ws, name):
    shape = CASES[name][0]
    verdicts = preflight(ws, f"models.hazards:{name}", shape)["verdicts"]
    for method in ("trace", "script", "export"):
        ws.pipeline(pipeline_text(f"models.hazards:{name}",
                                  f"capture: {{uses: {method}}}\ncompare: {{iterations: 0}}",
                                  shape=shape[0], dynamic=shape[1]), f"{method}.yaml")
        code = ws.qntz("run", f"{method}.yaml").code
        assert (code == 0) == (verdicts[method] != "fails"), (method, verdicts, code)


def test_method_auto_picks_a_working_method(ws):
    ws.pipeline(pipeline_text("models.hazards:DataDependentIf", """
    preflight: {}
    capture: {uses: auto}
    onnx: {}
    compare: {needs: [capture, onnx]}
    """))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.out + result.err
    lock = json.loads((ws.root / "pipeline.lock.json").read_text())
    assert lock["steps"]["capture"]["outputs"].keys() >= {"model.pt"}
    assert re.search(r"capture \(auto\).*", result.out)


def test_method_auto_refuses_when_nothing_is_safe(ws):
    ws.pipeline(pipeline_text("models.hazards:NumpyCall", """
    preflight: {fail_on: never}
    capture: {uses: trace, method: auto}
    """, shape="[batch, 16]"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "no capture method gives a correct model" in result.err


def test_fail_on_error_blocks_only_the_method_in_use(ws):
    text = pipeline_text("models.hazards:DataDependentIf", """
    preflight: {}
    capture: {uses: trace}
    """)
    ws.pipeline(text)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert "data-dependent-control-flow" in result.err and "hazards.py:" in result.err
    ws.pipeline(text.replace("uses: trace", "uses: script"))
    assert ws.qntz("run", "pipeline.yaml").code == 0


def test_auto_needs_a_preflight(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: auto}"))
    result = ws.qntz("validate", "pipeline.yaml")
    assert result.code == 2 and "needs a preflight step" in result.err


def test_branch_on_a_constant_is_not_data_dependent(ws):
    report = preflight(ws, "models.hazards:ConstantGate", IMAGE)
    # (torch.export itself fails on it: it treats buffers as inputs, and says so)
    assert [f for f in report["findings"] if "trace" in f["methods"]] == [], report["findings"]
    assert report["verdicts"]["trace"] == report["verdicts"]["script"] == "ok"


def test_finding_the_real_test_contradicts_is_a_warning_that_says_so(ws):
    report = preflight(ws, "models.hazards:ItemScale", VECTOR)
    export = [f for f in report["findings"] if "export" in f["methods"]]
    assert export and all(f["severity"] == "warning" for f in export), export
    assert "agrees with eager on varied inputs" in export[0]["message"]
    ws.pipeline(pipeline_text("models.hazards:ItemScale", """
    preflight: {}
    capture: {uses: auto}
    """, shape=VECTOR[0], dynamic=VECTOR[1]), "auto.yaml")
    result = ws.qntz("run", "auto.yaml")  # fail_on judges the method auto uses: export
    assert result.code == 0, result.err


DECORATED = """
import functools

import torch


def logged(fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        return fn(self, *args, **kwargs)
    return wrapper
"""
DECORATED_MODEL = """
import torch

from deco import logged


class DictOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    @logged
    def forward(self, x):
        return {"y": self.conv(x)}
"""


def test_a_decorated_forward_is_located_at_the_model_not_the_decorator(ws):
    ws.write("deco.py", DECORATED)
    ws.write("dictout.py", DECORATED_MODEL)
    ws.pipeline(pipeline_text("dictout:DictOut", "preflight: {}"))
    assert ws.qntz("run", "pipeline.yaml").code == 0
    found = json.loads((ws.root / "out" / "t" / "preflight" / "report.json").read_text())
    found = next(f for f in found["findings"] if f["rule"] == "trace-fails")
    assert found["file"].endswith("dictout.py"), found
