"""The step API as a plugin author meets it: kinds written from `qntz/core/step.py` alone,
registered in-process with `registry.override`, run through the real CLI.

Each uses one part of the API: `consumes`/`provides` (its ONNX output is compared like any
candidate), the summary's control keys (`volatile`, `figures`, `warnings`, `failed`/`fix`)
and `report_section` (drawn escaped; a hook that raises costs its section, not the page).
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from conftest import pipeline_text
from qntz.core import registry
from qntz.core.step import Section, Step, StepContext, Table

STEPS = """
capture: {uses: trace}
onnx: {opset: 17}
copied: {uses: copy-onnx, label: "<b>bold</b>"}
compare: {needs: [capture, copied], samples: 1, iterations: 0}
"""


class CopyOnnx(Step):
    kind = "copy-onnx"
    api_version = 1
    version = 1
    help = "the ONNX model, copied unchanged"
    params = {"label": {"type": "string", "default": "copy"}}
    consumes = ("onnx",)
    provides = ("onnx",)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        source = ctx.input_providing("onnx")
        names = [n for n in source.files() if n.startswith("model.onnx")]
        for name in names:
            shutil.copyfile(source.file(name), ctx.out / name)
        (ctx.out / "copied_at.json").write_text(json.dumps({"at": time.time()}))
        return {"label": ctx.params["label"], "files": names, "volatile": ["copied_at.json"],
                "figures": {"files": len(names)}, "warnings": ["copied without a check"]}

    @classmethod
    def report_section(cls, artifact: Any) -> Section:
        return Section(title="copy <i>of</i> the model",
                       facts=[("label", artifact.summary["label"])],
                       tables=[Table(["file"], [[n] for n in artifact.summary["files"]],
                                     caption="what was copied")],
                       notes=["<script>alert(1)</script>"])


class RefusesOnnx(CopyOnnx):
    kind = "refuses-onnx"

    def run(self, ctx: StepContext) -> dict[str, Any]:
        return {"failed": "the model has 3 outputs, this kind takes 1",
                "fix": "export one output"}


class BrokenSection(CopyOnnx):
    kind = "broken-section"

    @classmethod
    def report_section(cls, artifact: Any) -> Section:
        raise KeyError("nodes")


PLUGINS = {k.kind: k for k in (CopyOnnx, RefusesOnnx, BrokenSection)}


def steps_by_id(out: str) -> dict[str, Any]:
    return {s["id"]: s for s in json.loads(out)["steps"]}


def test_plugin_output_is_compared_cached_and_drawn_escaped(ws) -> None:
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    with registry.override(steps=PLUGINS):
        first = ws.qntz("run", "pipeline.yaml", "--json")
        assert first.code == 0, first.err
        steps = steps_by_id(first.out)
        assert steps["copied"]["state"] == "ran"
        candidates = steps["compare"]["summary"]["candidates"]
        assert {c["id"]: c["status"] for c in candidates} == {"capture": "pass",
                                                               "copied": "pass"}
        lock = json.loads((ws.root / "pipeline.lock.json").read_text())
        assert lock["steps"]["copied"]["figures"] == {"files": 1}

        again = ws.qntz("run", "pipeline.yaml", "--json")
        assert {s["state"] for s in steps_by_id(again.out).values()} == {"cached"}
        shown = ws.qntz("run", "pipeline.yaml")
        assert "1 warning: copied without a check" in shown.out + shown.err
        forced = steps_by_id(ws.qntz("run", "pipeline.yaml", "--step", "copied", "--force",
                                     "--json").out)
        assert forced["copied"]["state"] == "ran"  # a volatile file left the digest alone:
        assert ws.qntz("status", "pipeline.yaml", "--check").code == 0  # compare stays fresh

        assert ws.qntz("report", "pipeline.yaml").code == 0
    page = (ws.root / "out" / "t" / "report.html").read_text()
    assert "copy &lt;i&gt;of&lt;/i&gt; the model" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "what was copied" in page and "model.onnx" in page


def test_plugin_run_that_finds_the_conversion_wrong_fails_with_its_fix(ws) -> None:
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS.replace("copy-onnx",
                                                                     "refuses-onnx")))
    with registry.override(steps=PLUGINS):
        for _ in range(2):  # built, then from the cache: the same failure, the same line
            result = ws.qntz("run", "pipeline.yaml")
            assert result.code == 1
            assert "this kind takes 1" in result.err and "export one output" in result.err
            assert "Traceback" not in result.err


def test_a_plugin_section_that_raises_costs_only_its_section(ws) -> None:
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS.replace("copy-onnx",
                                                                     "broken-section")))
    with registry.override(steps=PLUGINS):
        assert ws.qntz("run", "pipeline.yaml").code == 0
        assert ws.qntz("report", "pipeline.yaml").code == 0
    page = (ws.root / "out" / "t" / "report.html").read_text()
    assert "broken-section.report_section raised KeyError" in page
    assert "Verdict" in page  # the rest of the page is drawn
