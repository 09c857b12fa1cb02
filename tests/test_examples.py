"""The shipped example pipelines run and pass on this machine."""

from __future__ import annotations

import json
import shutil

from conftest import REPO


def test_transformer_encoder_example(ws):
    shutil.copytree(REPO / "pipelines", ws.root / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = ws.qntz("run", "pipelines/encoder.yaml")
    assert result.code == 0, result.out + result.err
    report = json.loads((ws.root / "out" / "encoder" / "compare" / "report.json").read_text())
    assert report["passed"]
    seqs = {label.split()[0] for label in report["samples"]}
    assert {"batch=1,seq=4", "batch=8,seq=128"} <= seqs
    onnx = json.loads((ws.root / "out" / "encoder" / "qntz.lock.json").read_text())
    assert onnx["steps"]["onnx"]["params"]["opset"] == 18
