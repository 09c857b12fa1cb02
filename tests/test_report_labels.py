"""The scatter plots' labels do not cover each other (issue 22: `onnx`, `simplify` and
`reference` at the origin): the boxes Chromium lays them out in, measured in the page."""

from __future__ import annotations

import json
import os
import re
from itertools import combinations
from pathlib import Path
from typing import Any

from browser import browse, find_chromium
from qntz.report.render import render

# a script of the test's own, added to a copy of the page (the report itself has none and
# its Content-Security-Policy forbids them): every label's box, as laid out
MEASURE = """<script>
const out = [];
for (const svg of document.querySelectorAll("svg[data-plot]")) {
  for (const t of svg.querySelectorAll("text")) {
    const r = t.getBoundingClientRect();
    out.push({plot: svg.dataset.plot, index: [...document.querySelectorAll("svg[data-plot]")]
              .indexOf(svg), text: t.textContent, box: [r.left, r.top, r.right, r.bottom]});
  }
}
const pre = document.createElement("pre");
pre.id = "boxes";
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def _candidate(name: str, value: float, latency: float, metric: str = "max abs error"
               ) -> dict[str, Any]:
    return {"name": name, "passed": True, "status": "pass", "metric": metric, "value": value,
            "tolerance": 1e-4 if metric == "max abs error" else 0.99, "latency_ms": latency,
            "outputs": [], "sizes": []}


def crowded_record() -> dict[str, Any]:
    """The quickstart's float candidates: errors near zero, latencies near the reference's."""
    compare = {"reference": {"name": "load", "latency_ms": 2.02}, "candidates": [
        _candidate("capture", 0.0, 2.0), _candidate("onnx", 7.5e-9, 2.01),
        _candidate("simplify", 7.5e-9, 2.01), _candidate("simplify_again", 8e-9, 2.02),
        _candidate("int8", 0.995, 0.61, "top1"), _candidate("int8_budget", 0.994, 0.6, "top1"),
        _candidate("fp16", 1.0, 0.62, "top1")]}
    points = [{"float_nodes": n, "agreement": 0.9 + n * 1e-4, "latency_ms": 1.0 + n * 1e-3}
              for n in (0, 1, 2, 3, 4)]
    quantize = {"precision": "int8", "recipe": "static", "nodes": [],
                "budget": {"max_drop": 0.01, "target": 0.99, "chosen": None, "met": False,
                           "points": points}}
    steps = [{"id": "load", "kind": "load", "state": "ran", "needs": []},
             {"id": "int8", "kind": "quantize", "state": "failed", "needs": ["load"],
              "quantize": quantize},
             {"id": "compare", "kind": "compare", "state": "ran", "needs": ["load"],
              "compare": compare}]
    return {"report": 1, "pipeline": "crowded", "steps": steps}


def _boxes(tmp_path: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    html = render(record)
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    page = tmp_path / "measured.html"
    page.write_text(html.replace("</body>", MEASURE + "</body>"))
    dom = browse(find_chromium(), page, tmp_path, "--dump-dom").stdout
    shots = Path(os.environ.get("QNTZ_TEST_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    browse(find_chromium(), page, tmp_path, f"--screenshot={shots / 'report-labels.png'}",
           "--window-size=1280,1600")
    found = re.search(r'<pre id="boxes">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _is_label(text: str, names: set[str]) -> bool:
    """A point's or a line's label (not a tick, an axis title or the legend)."""
    return text in names or text == "reference" or text.startswith(("tolerance ", "target ")) \
        or text.endswith(" ms")


def test_labels_of_a_crowded_scatter_plot_do_not_overlap(tmp_path):
    record = crowded_record()
    names = {c["name"] for c in record["steps"][2]["compare"]["candidates"]}
    boxes = [b for b in _boxes(tmp_path, record) if b["plot"] in ("accuracy-latency", "budget")
             and _is_label(b["text"], names)]
    texts = {b["text"] for b in boxes}
    assert {"capture", "onnx", "simplify", "reference", "int8", "fp16"} <= texts, texts
    assert any(b["plot"] == "budget" for b in boxes)
    clashes = [(a["text"], b["text"]) for a, b in combinations(boxes, 2)
               if a["index"] == b["index"] and _overlap(a["box"], b["box"])]
    assert not clashes, clashes
