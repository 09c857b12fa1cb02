"""A step kind from another distribution: the example plugin, really installed with pip.

It is installed into a folder of its own (`pip install --target`) put on PYTHONPATH for the
CLI's processes, so the test environment's own registry stays as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, pipeline_text

PLUGIN = REPO / "examples" / "onnxruntime-optimize"
STEPS = """
capture: {uses: trace}
onnx: {opset: 17}
optimized: {uses: onnxruntime-optimize, level: extended}
compare: {needs: [capture, optimized], samples: 1, iterations: 0}
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    target = tmp_path_factory.mktemp("plugin-site")
    source = tmp_path_factory.mktemp("plugin-source") / PLUGIN.name  # pip builds in place
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)],
                   check=True, capture_output=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    return str(target)


def qntz(cwd: Path, plugin: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": plugin} if plugin else dict(os.environ)
    return subprocess.run([sys.executable, "-m", "qntz", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_plugin_kind_is_listed_and_in_the_schema(tmp_path: Path, plugin_path: str) -> None:
    listed = qntz(tmp_path, plugin_path, "steps")
    assert listed.returncode == 0, listed.stderr
    assert "onnxruntime-optimize" in listed.stdout
    schema = json.loads(qntz(tmp_path, plugin_path, "schema").stdout)
    step = schema["$defs"]["step.onnxruntime-optimize"]
    assert step["properties"]["level"]["enum"] == ["basic", "extended"]
    without = qntz(tmp_path, None, "steps")
    assert "onnxruntime-optimize" not in without.stdout


def test_pipeline_with_plugin_step_runs_and_caches(ws, plugin_path: str) -> None:
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    first = qntz(ws.root, plugin_path, "run", "pipeline.yaml", "--json")
    assert first.returncode == 0, first.stderr
    states = {s["id"]: s for s in json.loads(first.stdout)["steps"]}
    assert states["optimized"]["state"] == "ran"
    assert states["optimized"]["summary"]["nodes"] <= states["optimized"]["summary"]["nodes_before"]
    candidates = states["compare"]["summary"]["candidates"]
    assert {c["id"]: c["status"] for c in candidates} == {"capture": "pass", "optimized": "pass"}
    again = json.loads(qntz(ws.root, plugin_path, "run", "pipeline.yaml", "--json").stdout)
    assert {s["state"] for s in again["steps"]} == {"cached"}
    lock = json.loads((ws.root / "pipeline.lock.json").read_text())
    assert lock["steps"]["optimized"]["plugin"] == "qntz_ort_optimize==0.1.0"
    report = qntz(ws.root, plugin_path, "report", "pipeline.yaml", "--json")
    assert report.returncode == 0, report.stderr
    page = Path(json.loads(report.stdout)["report"]).read_text()
    assert "ONNX Runtime graph optimization" in page  # the plugin's own report_section
    assert "extended fusions need" in page


def test_pipeline_naming_a_missing_plugin_is_one_line(ws) -> None:
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    result = qntz(ws.root, None, "validate", "pipeline.yaml")
    assert result.returncode == 2
    assert "onnxruntime-optimize" in result.stderr and "Traceback" not in result.stderr
