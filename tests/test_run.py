"""The quickstart end to end, and what a re-run redoes after each kind of change."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import REPO


@pytest.fixture
def quickstart(ws):
    shutil.copytree(REPO / "pipelines", ws.root / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__", "out", "*.lock.json"))
    return ws.root / "pipelines" / "quickstart.yaml"


def status(ws, path) -> dict[str, dict]:
    result = ws.qntz("status", path, "--json")
    assert result.code == 0, result
    return {s["id"]: s for s in json.loads(result.out)["steps"]}


def ran(result_out: str) -> set[str]:
    return {line.split()[1] for line in result_out.splitlines() if line.startswith("✓")}


def test_quickstart_end_to_end(ws, quickstart):
    result = ws.qntz("run", quickstart)
    assert result.code == 0, result.out + result.err
    out = ws.root / "out" / "quickstart"
    assert (out / "simplify" / "model.onnx").is_file()
    lock_file = ws.root / "pipelines" / "quickstart.lock.json"
    lock = json.loads(lock_file.read_text())
    assert set(lock["steps"]) == {"load", "capture", "onnx", "simplify", "int8", "fp16",
                                  "compare", "check"}
    for step in lock["steps"].values():
        assert len(step["key"]) == 64 and step["outputs"]
    # keys name files relative to the pipeline: the same checkout elsewhere gets the same keys
    assert str(ws.root) not in lock_file.read_text()
    report = json.loads((out / "compare" / "report.json").read_text())
    assert report["passed"]
    assert {c["id"] for c in report["candidates"]} == {"capture", "onnx", "simplify", "int8",
                                                       "fp16"}
    assert all(c["status"] == "pass" for c in report["candidates"])
    held_out = json.loads((out / "check" / "report.json").read_text())
    rows = {c["id"]: c for c in held_out["candidates"]}
    assert rows["int8"]["top1"] >= 0.99 and rows["fp16"]["top1"] >= 0.99
    assert len(held_out["samples"]) == 64
    labels = report["samples"]
    assert any("batch=1" in s for s in labels) and any("batch=16" in s for s in labels)
    assert "| `onnx` | onnx | ✅ pass |" in (out / "compare" / "report.md").read_text()

    again = ws.qntz("run", quickstart)
    assert again.code == 0
    assert "8 cached" in again.out and not ran(again.out)
    assert json.loads(lock_file.read_text()) == lock


def test_changes_rerun_exactly_what_they_affect(ws, quickstart):
    assert ws.qntz("run", quickstart).code == 0

    quickstart.write_text(quickstart.read_text().replace("opset: 17", "opset: 18"))
    states = status(ws, quickstart)
    assert states["load"]["state"] == states["capture"]["state"] == "cached"
    assert states["onnx"]["state"] == "stale"
    assert states["onnx"]["reason"] == "params changed: opset 17 → 18"
    assert states["simplify"]["state"] == states["compare"]["state"] == "pending"
    assert states["simplify"]["reason"].startswith("may re-run: after onnx re-runs")
    assert "onnx" in states["simplify"]["reason"]
    result = ws.qntz("run", quickstart)
    assert result.code == 0
    assert ran(result.out) == {"onnx", "simplify", "int8", "fp16", "compare", "check"}

    source = ws.root / "pipelines" / "models" / "tiny_cnn.py"
    os.utime(source)  # touched, not changed: nothing re-runs
    assert all(s["state"] == "cached" for s in status(ws, quickstart).values())
    assert ran(ws.qntz("run", quickstart).out) == set()

    source.write_text(source.read_text().replace("width: int = 32", "width: int = 16"))
    states = status(ws, quickstart)
    assert states["load"]["reason"] == "source changed: models/tiny_cnn.py"
    result = ws.qntz("run", quickstart)
    assert result.code == 0
    assert ran(result.out) == set(states)


def test_step_option_runs_only_what_it_needs(ws, quickstart):
    result = ws.qntz("run", quickstart, "--step", "onnx")
    assert result.code == 0
    assert ran(result.out) == {"load", "capture", "onnx"}
    states = status(ws, quickstart)
    assert states["simplify"]["state"] == "stale"
    assert states["simplify"]["reason"] == "not in cache (never run)"
    forced = ws.qntz("run", quickstart, "--step", "onnx", "--force")
    assert ran(forced.out) == {"onnx"}  # the named steps re-run; what they need stays cached


def test_parallel_jobs_give_the_same_lock(ws, quickstart):
    # separate processes: in one process a re-imported model class gets a mangled
    # TorchScript name, which is not what two users on two machines see
    assert ws.qntz_subprocess("run", quickstart, "--jobs", "2").code == 0
    lock_path = ws.root / "pipelines" / "quickstart.lock.json"
    lock = json.loads(lock_path.read_text())
    shutil.rmtree(ws.root / ".qntz" / "cache")
    assert ws.qntz_subprocess("run", quickstart).code == 0
    again = json.loads(lock_path.read_text())
    # everything but the compare reports, whose latencies are measured anew, is reproducible
    for step in ("compare", "check"):
        assert again["steps"][step]["key"] == lock["steps"][step]["key"]
        del again["steps"][step]["outputs"], lock["steps"][step]["outputs"]
    assert again == lock


def test_dag_and_steps_commands(ws, quickstart):
    mermaid = ws.qntz("dag", quickstart, "--mermaid")
    assert mermaid.code == 0 and "capture --> onnx" in mermaid.out
    steps = ws.qntz("steps", "onnx")
    assert "opset" in steps.out and "exporter" in steps.out


def test_keep_going_runs_the_other_branches(ws):
    from conftest import pipeline_text

    steps = """
    broken: {uses: trace}
    broken_onnx: {uses: onnx, needs: [broken], opset: 18, exporter: dynamo}
    fine: {uses: script, needs: [load]}
    fine_onnx: {uses: onnx, needs: [fine]}
    """
    ws.pipeline(pipeline_text("models.hazards:NoOnnxOperator", steps, shape="[batch, 4, 4]")
                .replace("opset: 18, exporter: dynamo", "opset: 17"))
    stopped = ws.qntz("run", "pipeline.yaml")
    assert stopped.code == 1 and "fine_onnx" not in ran(stopped.out)
    going = ws.qntz("run", "pipeline.yaml", "--keep-going")
    assert going.code == 1
    assert "✗ broken_onnx" in going.out and "✗ fine_onnx" in going.out  # both hit linalg_inv
    assert going.err.count("error:") == 2


def test_cache_commands(ws, quickstart):
    assert ws.qntz("run", quickstart, "--step", "onnx").code == 0
    where = ws.qntz("cache", "dir")
    assert where.out.strip().endswith(".qntz/cache")
    cleared = ws.qntz("cache", "clear")
    assert "removed 3 cache entries" in cleared.out
    states = json.loads(ws.qntz("status", quickstart, "--json").out)["steps"]
    assert states[0]["state"] == "stale" and {s["state"] for s in states[1:]} == {"pending"}
