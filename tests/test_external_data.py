"""ONNX past protobuf's 2 GB: external data written by every step, read by the next, cached.

`QNTZ_EXTERNAL_DATA_THRESHOLD` set to 1000 bytes sends these tiny models down the path a
multi-GB model takes: `model.onnx` holds the graph, `model.onnx.data` the tensors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import pipeline_text, transformer_pipeline
from qntz.compare.localize import localize
from qntz.core.errors import QntzError
from qntz.runtime import onnx_files
from qntz.runtime.onnx_files import THRESHOLD_VARIABLE, install_onnx, save_onnx, threshold_key

CNN_STEPS = """
capture: {uses: trace}
onnx: {}
simplify: {}
int8: {uses: quantize}
fp16: {uses: quantize, needs: [simplify], precision: fp16}
compare:
  needs: [capture, onnx, simplify, int8, fp16]
  tolerances: {int8: {metric: cosine, threshold: 0.99}, fp16: {metric: cosine, threshold: 0.999}}
"""

TRANSFORMER_STEPS = """
simplify: {}
int8: {uses: quantize, needs: [onnx]}
fp16: {uses: quantize, needs: [onnx], precision: fp16}
compare:
  needs: [capture, onnx, simplify, int8, fp16]
  tolerances: {int8: {metric: cosine, threshold: 0.99}, fp16: {metric: cosine, threshold: 0.999}}
"""

ONNX_STEPS = ("onnx", "simplify", "int8", "fp16")


@pytest.fixture
def low_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THRESHOLD_VARIABLE, "1000")


def run_ok(ws, path: str = "pipeline.yaml"):
    result = ws.qntz("run", path)
    assert result.code == 0, result.out + result.err
    return result


def ran(out: str) -> set[str]:
    return {line.split()[1] for line in out.splitlines() if line.startswith("✓")}


def entry_of(ws, step: str) -> Path:
    key = json.loads((ws.root / "pipeline.lock.json").read_text())["steps"][step]["key"]
    return ws.root / ".qntz" / "cache" / "entries" / key[:2] / key


def assert_external(folder: Path) -> None:
    model, data = folder / "model.onnx", folder / "model.onnx.data"
    assert model.is_file() and data.is_file(), sorted(p.name for p in folder.iterdir())
    tensors = onnx.load(str(model), load_external_data=False).graph.initializer
    inline = [t.name for t in tensors if len(t.raw_data) >= onnx_files.TENSOR_THRESHOLD]
    assert not inline and data.stat().st_size  # the model file holds the graph, not weights
    locations = {e.value for t in tensors for e in t.external_data if e.key == "location"}
    assert locations == {"model.onnx.data"}  # relative, one file beside the model


def test_cnn_pipeline_writes_external_data_and_caches_it(ws, low_threshold):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", CNN_STEPS))
    run_ok(ws)
    for step in ONNX_STEPS:
        assert_external(ws.root / "out" / "t" / step)
        assert_external(entry_of(ws, step))
    int8 = json.loads((ws.root / "out" / "t" / "int8" / "quantize.json").read_text())
    assert int8["bias_correction"]["layers"] > 0, int8["bias_correction"]  # it swallows errors
    again = run_ok(ws)
    assert not ran(again.out), again.out  # fully cached

    # out/ holds copies of data files (onnx.load refuses a data file with several links):
    # a user loads the laid-out model as it is, and steps rebuilt on cached inputs work
    assert os.stat(entry_of(ws, "simplify") / "model.onnx.data").st_nlink == 1
    import onnx
    assert onnx.load(str(ws.root / "out" / "t" / "simplify" / "model.onnx")).graph.node
    ws.pipeline(pipeline_text("models.clean:SmallCNN", CNN_STEPS.replace(
        "int8: {uses: quantize}", "int8: {uses: quantize, per_channel: false}").replace(
        "precision: fp16}", "precision: fp16, exclude_op_types: [Relu]}")))
    rebuilt = run_ok(ws)
    assert {"int8", "fp16"} <= ran(rebuilt.out), rebuilt.out
    out = ws.root / "out" / "t"
    feed = {"x": np.random.default_rng(0).random((1, 3, 16, 16), np.float32)}
    found = localize(out / "simplify" / "model.onnx", out / "int8" / "model.onnx", feed)
    assert found.matched > 0

    data = entry_of(ws, "simplify") / "model.onnx.data"
    original = data.read_bytes()
    os.chmod(data, 0o644)
    data.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    rebuilt = run_ok(ws)
    assert ran(rebuilt.out) == {"simplify"}, rebuilt.out  # a miss, rebuilt to the same bytes
    assert (entry_of(ws, "simplify") / "model.onnx.data").read_bytes() == original

    (entry_of(ws, "simplify") / "model.onnx.data").unlink()
    rebuilt = run_ok(ws)
    assert ran(rebuilt.out) == {"simplify"}, rebuilt.out
    assert_external(entry_of(ws, "simplify"))


def test_transformer_pipeline_writes_external_data(ws, low_threshold):
    ws.pipeline(transformer_pipeline(TRANSFORMER_STEPS))
    run_ok(ws)
    for step in ONNX_STEPS:
        assert_external(ws.root / "out" / "t" / step)
    int8 = json.loads((ws.root / "out" / "t" / "int8" / "quantize.json").read_text())
    assert int8["fusion"]["used"], int8["fusion"]  # the fusions swallow errors
    assert not ran(run_ok(ws).out)


def test_a_shared_folder_remote_carries_the_data_files(ws, low_threshold, tmp_path):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}\nonnx: {}\n"
                              "simplify: {}"))
    (ws.root / ".qntz" / "config.yaml").write_text(f"remote: {tmp_path / 'shared'}\n")
    run_ok(ws)  # builds and pushes
    shutil.rmtree(ws.root / ".qntz" / "cache")
    shutil.rmtree(ws.root / "out")
    pulled = run_ok(ws)
    assert not ran(pulled.out) and "pulled" in pulled.out, pulled.out
    for step in ("onnx", "simplify"):
        assert_external(ws.root / "out" / "t" / step)
        assert_external(entry_of(ws, step))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason='TensorRT-RTX not installed (pip install "qntz[tensorrt-rtx]")')
def test_tensorrt_parses_a_cached_model_with_external_data(ws, low_threshold):
    steps = "capture: {uses: trace}\nonnx: {}\nsimplify: {}"
    ws.pipeline(pipeline_text("models.clean:SmallCNN", steps))
    run_ok(ws)  # the engine below reads simplify's entry once it is hard-linked into out/
    ws.pipeline(pipeline_text("models.clean:SmallCNN", steps + "\nengine: {uses: tensorrt, "
                              "runtime: tensorrt-rtx, needs: [simplify]}"))
    assert ran(run_ok(ws).out) == {"engine"}


def _model(size: int) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(size, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_save_onnx_picks_the_layout_by_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx.data").write_bytes(b"x")  # in the current folder: no refusal
    out = tmp_path / "out"
    out.mkdir()
    path = out / "model.onnx"
    assert save_onnx(_model(1000), path, threshold=1000)
    first = (out / "model.onnx.data").read_bytes()
    assert save_onnx(_model(1000), path, threshold=1000)  # a stale data file is replaced
    assert (out / "model.onnx.data").read_bytes() == first
    np.testing.assert_array_equal(
        numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0]), np.arange(1000))
    assert not save_onnx(_model(1000), path)  # the default threshold: one file
    assert not (out / "model.onnx.data").exists()
    assert install_onnx(path, out / "copy.onnx", threshold=1000)
    assert onnx_files.external_files(out / "copy.onnx") == [out / "copy.onnx.data"]

    apart = tmp_path / "apart"  # the TorchScript exporter past 2 GB: a file per tensor
    apart.mkdir()
    onnx.save_model(_model(1000), str(apart / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=False)
    assert install_onnx(apart / "model.onnx", path, threshold=1000)
    assert onnx_files.external_files(path) == [out / "model.onnx.data"]
    np.testing.assert_array_equal(
        numpy_helper.to_array(onnx_files.load_onnx(path).graph.initializer[0]), np.arange(1000))


def test_threshold_setting(monkeypatch):
    monkeypatch.delenv(THRESHOLD_VARIABLE, raising=False)
    assert threshold_key() == {}  # the default leaves every key as it was
    monkeypatch.setenv(THRESHOLD_VARIABLE, "1e3")
    assert threshold_key() == {"external_data_threshold": 1000}
    monkeypatch.setenv(THRESHOLD_VARIABLE, "big")
    with pytest.raises(QntzError):
        onnx_files.external_data_threshold()
