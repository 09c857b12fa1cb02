"""The Python API: what a notebook or a CI script calls, and what the CLI is built on."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO, pipeline_text


def test_api_run_matches_the_cli(tmp_path):
    folders = [tmp_path / "api", tmp_path / "cli"]
    for folder in folders:
        shutil.copytree(REPO / "pipelines", folder / "pipelines",
                        ignore=shutil.ignore_patterns("__pycache__", "*.lock.json"))
        (folder / ".qntz").mkdir()
    script = "import qntz; r = qntz.run('pipelines/quickstart.yaml'); print(r.ok)"
    api = subprocess.run([sys.executable, "-c", script], cwd=folders[0], capture_output=True,
                         text=True, timeout=600)
    assert api.stdout.strip() == "True", api.stderr
    cli = subprocess.run([sys.executable, "-m", "qntz", "run", "pipelines/quickstart.yaml"],
                         cwd=folders[1], capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    locks = [(f / "pipelines" / "quickstart.lock.json").read_text() for f in folders]
    assert locks[0] == locks[1]


def test_typed_results_and_errors(ws):
    import qntz

    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}\nonnx: {}"))
    result = qntz.run("pipeline.yaml")
    assert result and result.steps["onnx"].state == "ran"
    model = result.steps["onnx"].files["model.onnx"]
    assert model == ws.root / "out" / "t" / "onnx" / "model.onnx" and model.is_file()
    assert result.lock == ws.root / "pipeline.lock.json"
    again = qntz.run(qntz.load_pipeline("pipeline.yaml"), steps=["capture"])
    assert [s.state for s in again.steps.values()] == ["cached", "cached"]
    assert qntz.status("pipeline.yaml")["onnx"].state == "cached"

    with pytest.raises(qntz.PipelineError) as bad:
        qntz.load_pipeline("missing.yaml")
    assert bad.value.where.endswith("missing.yaml") and bad.value.hint
    with pytest.raises(qntz.PipelineError) as unknown:
        qntz.run("pipeline.yaml", steps=["onx"])
    assert "did you mean 'onnx'" in str(unknown.value)

    ws.pipeline(pipeline_text("models.hazards:NoOnnxOperator", "capture: {uses: trace}\nonnx: {}",
                              shape="[batch, 4, 4]"), "broken.yaml")
    failed = qntz.run("broken.yaml")
    assert not failed and failed.steps["onnx"].state == "failed"
    error = failed.failures()[0]
    assert isinstance(error, qntz.StepFailed) and "step 'onnx'" in error.where and error.hint


def test_a_run_leaves_the_callers_process_as_it_was(ws):
    """A notebook's temp folder, environment, streams, loggers, torch RNG and thread count
    survive a run that captures, exports, quantizes and compares (timed on one thread)."""
    import logging
    import os
    import tempfile

    import torch

    import qntz

    torch.manual_seed(1234)
    logging.getLogger("onnx").setLevel(logging.INFO)
    threads = torch.get_num_threads()
    before = (dict(os.environ), tempfile.tempdir, sys.stdout, sys.stderr,
              torch.random.get_rng_state(), logging.getLogger("onnx").level)
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}\nonnx: {}\n"
                              "int8: {uses: quantize}\ncompare: {needs: [onnx, int8]}"))
    assert qntz.run("pipeline.yaml")
    after = (dict(os.environ), tempfile.tempdir, sys.stdout, sys.stderr,
             torch.random.get_rng_state(), logging.getLogger("onnx").level)
    assert after[:4] == before[:4] and after[5] == before[5]
    assert torch.equal(after[4], before[4]), "the run reseeded the caller's torch RNG"
    assert torch.get_num_threads() == threads
