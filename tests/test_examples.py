"""The shipped example pipelines run and pass on this machine."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO
from qntz.tensorrt import env as tensorrt_env


def test_transformer_encoder_example(ws):
    shutil.copytree(REPO / "pipelines", ws.root / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = ws.qntz("run", "pipelines/encoder.yaml")
    assert result.code == 0, result.out + result.err
    report = json.loads((ws.root / "out" / "encoder" / "compare" / "report.json").read_text())
    assert report["passed"]
    seqs = {label.split()[0] for label in report["samples"]}
    assert {"batch=1,seq=4", "batch=8,seq=128"} <= seqs
    onnx = json.loads((ws.root / "pipelines" / "encoder.lock.json").read_text())
    assert onnx["steps"]["onnx"]["params"]["opset"] == 18


@pytest.mark.skipif(tensorrt_env.version_of("tensorrt-rtx") is None,
                    reason='TensorRT-RTX not installed (pip install "qntz[tensorrt-rtx]")')
def test_quickstart_tensorrt_example(ws):
    shutil.copytree(REPO / "pipelines", ws.root / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # its own process: Polygraphy binds one TensorRT flavour per process, on first use
    result = ws.qntz_subprocess("run", "pipelines/quickstart-tensorrt.yaml")
    assert result.code == 0, result.out + result.err
    out = ws.root / "out" / "quickstart-tensorrt"
    for step in ("engine_fp32", "engine_fp16", "engine_int8"):
        assert (out / step / "engine.plan").is_file() and (out / step / "layers.md").is_file()
    report = json.loads((out / "compare" / "report.json").read_text())
    rows = {c["id"]: c for c in report["candidates"]}
    expected = "pass" if tensorrt_env.gpus() else "not run"
    assert rows["engine_int8"]["status"] == expected
    assert json.loads((out / "engine_fp32" / "layers.json").read_text())["targets"] == [
        "8.6", "8.9"]


@pytest.mark.skipif(tensorrt_env.version_of("tensorrt-rtx") is None,
                    reason='TensorRT-RTX not installed (pip install "qntz[tensorrt-rtx]")')
def test_tensorrt_after_a_library_imported_polygraphy_first(ws):
    """MONAI imports Polygraphy's TensorRT backend, bound to full TensorRT: an engine built
    in the same process must still use TensorRT-RTX."""
    pytest.importorskip("monai.networks.utils")
    shutil.copytree(REPO / "pipelines", ws.root / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = ws.qntz("run", "pipelines/quickstart-tensorrt.yaml", "--step", "engine_fp32")
    assert result.code == 0, result.out + result.err
