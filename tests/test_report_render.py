"""The HTML run report, rendered from records built here and opened in real headless Chromium.

Chromium comes from the distribution's packages (`apt-get install chromium`); without it the
browser tests skip with that reason. Screenshots land in $QNTZ_TEST_ARTIFACTS when set.
"""

from __future__ import annotations

import copy
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from browser import CONSOLE, browse, find_chromium
from qntz.report.render import render

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _step(step_id: str, kind: str, state: str, seconds: float, summary: str,
          needs: list[str], **part: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": kind, "state": state, "seconds": seconds,
            "summary": summary, "needs": needs, **part}


def _output(scale: float) -> dict[str, Any]:
    return {"name": "logits", "max_abs": 20 * scale, "rms_rel": scale, "cosine": 1 - scale,
            "abs_error_quantiles": {"0.5": scale, "0.9": 4 * scale, "0.99": 9 * scale,
                                    "1": 20 * scale}}


def _candidate(name: str, value: float | None, latency: float, scale: float,
               metric: str = "top1", passed: bool | None = True, **extra: Any
               ) -> dict[str, Any]:
    sizes = [{"size": f"batch={b}", "error": scale * (1 + b / 16), "latency_ms": latency * b}
             for b in (1, 4, 16)]
    return {"name": name, "passed": passed, "metric": metric,
            "value": 20 * scale if value is None else value,  # None: the max abs error
            "tolerance": 0.99 if metric == "top1" else 1e-4, "latency_ms": latency,
            "outputs": [_output(scale)], "sizes": sizes, **extra}


def quickstart_record() -> dict[str, Any]:
    compare = {"reference": {"name": "capture", "latency_ms": 3.1}, "candidates": [
        _candidate("capture", None, 3.0, 1e-7, "max_abs"),
        _candidate("onnx", None, 1.9, 2e-7, "max_abs"),
        _candidate("simplify", None, 1.8, 2e-7, "max_abs"),
        _candidate("int8", 0.995, 0.6, 3e-3),
        _candidate("fp16", 1.0, 2.2, 4e-4)]}
    check = {"reference": {"name": "capture", "latency_ms": 3.0}, "candidates": [
        _candidate(n, v, ms, s) for n, v, ms, s in
        (("simplify", 1.0, 1.8, 2e-7), ("int8", 0.992, 0.6, 3e-3), ("fp16", 1.0, 2.2, 4e-4))]}
    steps = [
        _step("load", "load", "cached", 0.0, "TinyCNN, 1,176,746 parameters", []),
        _step("capture", "trace", "cached", 0.0, "", ["load"]),
        _step("onnx", "onnx", "ran", 0.2, "opset 17, 19 nodes, 4592 KiB", ["capture"]),
        _step("simplify", "simplify", "ran", 0.5, "opset 17, 19 nodes (was 19)", ["onnx"]),
        _step("int8", "quantize", "ran", 0.5, "int8 static: 9 nodes quantized", ["simplify"]),
        _step("fp16", "quantize", "ran", 0.0, "fp16: 18 float16 weights", ["simplify"]),
        _step("compare", "compare", "ran", 1.4, "5 pass",
              ["capture", "onnx", "simplify", "int8", "fp16"], compare=compare),
        _step("check", "compare", "ran", 0.8, "3 pass", ["simplify", "int8", "fp16"],
              compare=check)]
    return {"report": 1, "pipeline": "quickstart", "recorded_at": "2025-01-02T03:04:05Z",
            "steps": steps}


def _findings() -> list[dict[str, Any]]:
    source = ["    def forward(self, x):", "        y = self.conv(x)",
              "        if y.sum() > 0:", "            return y * 2", "        return y"]
    return [{"rule": "data-dependent-control-flow", "severity": "error",
             "methods": ["trace", "export"], "file": "hazards.py", "line": 16,
             "message": "`if` on a tensor value: tracing keeps one branch",
             "fix": "torch.where / torch.cond / script",
             "excerpt": {"start": 14, "lines": source}},
            {"rule": "numpy-call", "severity": "warning", "methods": ["trace"],
             "file": "hazards.py", "line": 30, "message": "np.clip turns the tensor into NumPy",
             "fix": "torch.clamp", "excerpt": {"start": 30, "lines": ["  x = np.clip(x, 0, 1)"]}}]


def _quantize() -> dict[str, Any]:
    nodes = [{"name": "/conv1/Conv", "op": "Conv", "action": "quantized", "reason": "recipe"},
             {"name": "/attn/MatMul", "op": "MatMul", "action": "fused",
              "reason": "into Attention"},
             {"name": "/blocks.5/conv_dw/Conv", "op": "Conv", "action": "float",
              "reason": "accuracy budget: most sensitive"}]
    points = [{"float_nodes": n, "agreement": a, "latency_ms": ms}
              for n, a, ms in ((0, 0.91, 0.50), (1, 0.96, 0.55), (2, 0.985, 0.61),
                               (4, 0.993, 0.70), (9, 1.0, 1.40))]
    return {"precision": "int8", "recipe": "static", "nodes": nodes,
            "budget": {"max_drop": 0.01, "target": 0.99, "chosen": 4, "points": points}}


def detailed_record() -> dict[str, Any]:
    divergence = {"input": "batch=16, random", "layers": [
        {"module": "blocks.5.conv_dw", "node": "/blocks.5/conv_dw/Conv", "op": "Conv",
         "error_added": 0.12, "cosine": 0.71},
        {"module": "blocks.6.act", "node": "/blocks.6/act/Relu", "op": "Relu",
         "error_added": 0.01, "cosine": 0.69}]}
    compare = {"reference": {"name": "capture", "latency_ms": 3.0}, "candidates": [
        _candidate("int8", 0.62, 0.7, 0.2, passed=False, status="fail",
                   reason="top1 0.62 < 0.99", divergence=divergence),
        {"name": "engine", "passed": None, "status": "not run", "reason": "no GPU",
         "metric": "top1", "tolerance": 0.99}]}
    tensorrt = {"precision": "int8", "runtime": "tensorrt-rtx 1.2", "engine_bytes": 2_400_000,
                "build_seconds": 12.5, "layers_by_precision": {"int8": 9, "fp32": 2, "fp16": 1},
                "not_run": [{"name": "compare/engine", "reason": "no GPU"}]}
    steps = [
        _step("preflight", "preflight", "ran", 2.1, "2 findings; use script", [],
              preflight={"recommendation": "script", "findings": _findings(),
                         "verdicts": {"trace": "risky", "script": "ok", "export": "fails"}}),
        _step("capture", "script", "ran", 0.4, "", ["preflight"]),
        _step("onnx", "onnx", "ran", 0.3, "", ["capture"]),
        _step("int8", "quantize", "ran", 4.0, "4 nodes kept float", ["onnx"],
              quantize=_quantize()),
        _step("engine", "tensorrt", "cached", 0.0, "int8 engine", ["int8"], tensorrt=tensorrt),
        _step("compare", "compare", "failed", 1.1, "int8 FAIL", ["int8", "engine"],
              compare=compare),
        _step("deploy", "export", "not run", None, "", ["compare"])]
    return {"report": 1, "pipeline": "fragile", "recorded_at": "2025-02-03T04:05:06Z",
            "steps": steps}


class Dom(HTMLParser):
    """What the tests look for in the DOM Chromium built."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.plots: list[str] = []
        self.tags: list[str] = []
        self.steps: list[str] = []
        self.external: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "svg" and values.get("data-plot"):
            self.plots.append(str(values["data-plot"]))
        if tag == "g" and values.get("data-step"):
            self.steps.append(str(values["data-step"]))
        for name in ("src", "href", "xlink:href", "action"):
            if values.get(name) and not str(values[name]).startswith("#"):
                self.external.append(str(values[name]))


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


def _open(browser: str, record: dict[str, Any], tmp_path: Path, name: str) -> Dom:
    """Render `record`, load it in Chromium, fail on any console message, keep a screenshot."""
    page = tmp_path / f"{name}.html"
    page.write_text(render(record), encoding="utf-8")
    loaded = browse(browser, page, tmp_path, "--dump-dom")
    console = [line for line in loaded.stderr.splitlines() if CONSOLE.search(line)]
    assert not console, console  # the page has no script: any message is an error or a block
    shots = Path(os.environ.get("QNTZ_TEST_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"report-{name}.png"
    browse(browser, page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    return Dom(loaded.stdout)


def test_quickstart_report_draws_dag_and_plots_per_compare(chromium: str, tmp_path: Path
                                                           ) -> None:
    record = quickstart_record()
    dom = _open(chromium, record, tmp_path, "quickstart")
    assert dom.steps == [s["id"] for s in record["steps"]]
    assert dom.plots.count("dag") == 1
    assert dom.plots.count("accuracy-latency") >= 2  # at least one per compare step
    for plot in ("error-distribution", "size-error", "size-latency"):
        assert dom.plots.count(plot) == 2, plot
    assert dom.external == [] and "script" not in dom.tags


def test_findings_quantize_tensorrt_and_divergence(chromium: str, tmp_path: Path) -> None:
    dom = _open(chromium, detailed_record(), tmp_path, "detailed")
    for plot in ("dag", "budget", "layers-by-precision", "accuracy-latency"):
        assert plot in dom.plots, plot
    html = render(detailed_record())
    assert '<span class="hit"><span class="ln">16</span>         if y.sum() &gt; 0:</span>' in html
    assert "blocks.5.conv_dw" in html and 'class="divergence"' in html
    assert 'class="not-run-rows"' in html and "no GPU" in html
    assert "Not plotted (no figure or no latency): engine" in html


def _hostile_record() -> dict[str, Any]:
    record = detailed_record()
    record["pipeline"] = HOSTILE
    record["recorded_at"] = HOSTILE
    step = record["steps"][-2]
    step["id"] = step["summary"] = HOSTILE
    step["compare"]["candidates"][0]["name"] = HOSTILE
    step["compare"]["candidates"][0]["outputs"][0]["name"] = HOSTILE
    record["steps"][0]["preflight"]["findings"][0]["excerpt"]["lines"][0] = HOSTILE
    record["steps"][0]["preflight"]["verdicts"][HOSTILE] = HOSTILE
    return record


def test_hostile_names_stay_text(chromium: str, tmp_path: Path) -> None:
    html = render(_hostile_record())
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    dom = _open(chromium, _hostile_record(), tmp_path, "hostile")
    assert "script" not in dom.tags and "img" not in dom.tags and dom.external == []
    assert HOSTILE in dom.steps


def _reversed(value: Any) -> Any:
    """The same data with every dict's keys inserted in reverse order."""
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(v) for v in value]
    return value


def test_same_record_same_bytes() -> None:
    for build in (quickstart_record, detailed_record, _hostile_record):
        first = render(build()).encode()
        assert render(build()).encode() == first
        assert render(_reversed(copy.deepcopy(build()))).encode() == first
    assert "2025-01-02T03:04:05Z" in render(quickstart_record())


def test_sparse_record_renders() -> None:
    """Only ids are required: absent, None and non-finite figures become dashes, not plots."""
    bare = {"name": "x", "value": float("nan"), "latency_ms": None,
            "outputs": [{"name": "y", "abs_error_quantiles": {"0.5": float("inf")}}],
            "sizes": [{"size": 1, "error": None}]}
    record = {"steps": [{"id": "a"}, {"id": "b", "needs": ["a", "gone"],
                                      "compare": {"candidates": [bare]},
                                      "quantize": {"budget": {"points": []}},
                                      "tensorrt": {"engine_bytes": None}}]}
    html = render(record)
    assert 'data-plot="dag"' in html and 'data-plot="accuracy-latency"' not in html
    assert "Not plotted (no figure or no latency): x" in html


def test_unknown_record_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format 2"):
        render({"report": 2, "pipeline": "x", "steps": []})
