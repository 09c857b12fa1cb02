"""Where the model comes from: a factory beside modules named like the ones qntz imports,
ONNX and TorchScript files that are garbage, links out of the project or external data,
and `dynamic` dims that no shape names. One line and the right exit code, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Result

SHADOWED = ("json", "numpy", "qntz")

# A factory that imports what a model module commonly does, and a local helper of its own.
FACTORY = """\
import json
import numpy
import torch

from helpers import SCALE


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        json.dumps({"works": True})

    def forward(self, x):
        return torch.relu(self.conv(x)) * float(numpy.float32(SCALE))
"""

PIPELINE = """\
qntz: 1
name: t
model: {factory: net:Net}
inputs:
  x: {shape: [batch, 3, 8, 8], dynamic: {batch: [1, 2, 4]}}
steps:
  capture: {uses: trace}
  onnx: {opset: 17}
"""


def one_error(result: Result, code: int, *must_contain: str) -> str:
    """Exit `code`, no traceback, exactly one `error:` line holding `must_contain`."""
    text = result.err + result.out
    assert result.code == code, result
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if "error:" in ln]
    assert len(errors) == 1, text
    for part in must_contain:
        assert part in errors[0], (part, errors[0])
    return errors[0]


@pytest.fixture
def keep_modules():
    """Put back what a regression would replace in sys.modules, for the tests after it."""
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in SHADOWED}
    yield
    for top in SHADOWED:  # only when replaced: dropping a C extension breaks its reimport
        if sys.modules.get(top) is not saved.get(top):
            sys.modules.update({n: m for n, m in saved.items() if n.split(".")[0] == top})


# --- modules beside the pipeline named like the ones qntz needs ----------------------------

@pytest.mark.parametrize("name", SHADOWED)
def test_a_module_named_like_one_qntz_imports_does_not_break_the_run(ws, keep_modules, name):
    """`json.py` beside the pipeline, and a factory that imports json itself: the factory and
    qntz get Python's json (and numpy, and qntz), the user's own `helpers` still imports."""
    ws.write(f"{name}.py", "raise RuntimeError('this file hides a module and was imported')\n")
    ws.write("helpers.py", "SCALE = 2.0\n")
    ws.write("net.py", f"import {name}\n" + FACTORY)
    ws.pipeline(PIPELINE)
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result
    assert (ws.root / "out" / "t" / "onnx" / "model.onnx").is_file()
    assert ws.root not in Path(sys.modules[name].__file__).resolve().parents


def test_a_factory_in_a_folder_without_init_still_imports(ws, keep_modules):
    """A namespace package beside the pipeline, importing a sibling module of its own."""
    ws.write("json.py", "raise RuntimeError('this file hides a module and was imported')\n")
    ws.write("zoo2/helpers.py", "SCALE = 2.0\n")
    ws.write("zoo2/net.py", FACTORY.replace("from helpers", "from zoo2.helpers"))
    ws.pipeline(PIPELINE.replace("net:Net", "zoo2.net:Net"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result


def test_the_run_works_beside_json_py_from_the_command_line(ws):
    """The console script from the project folder, as a user runs it (`python -m` from that
    folder would import json.py before qntz starts: Python puts the folder first)."""
    script = Path(sys.executable).with_name("qntz")
    if not script.exists():
        pytest.skip("the qntz console script is not installed beside this Python")
    for name in SHADOWED:
        ws.write(f"{name}.py", "x = 1\n")
    ws.write("helpers.py", "SCALE = 2.0\n")
    ws.write("net.py", FACTORY)
    ws.pipeline(PIPELINE)
    proc = subprocess.run([str(script), "run", "pipeline.yaml"], cwd=ws.root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name, what", [("json", "Python's own json module"),
                                        ("numpy", "the numpy package qntz uses"),
                                        ("qntz", "qntz itself")])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_factory_module_named_like_one_qntz_imports_is_refused(ws, keep_modules, name,
                                                                 what, command):
    ws.write(f"{name}.py", FACTORY.replace("from helpers import SCALE", "SCALE = 2.0"))
    ws.pipeline(PIPELINE.replace("net:Net", f"{name}:Net"))
    one_error(ws.qntz(command, "pipeline.yaml"), 2, "pipeline.yaml:3:",
              f"rename {name}.py, which hides {what}")


def test_a_factory_that_wants_its_own_json_py_is_told_to_rename_it(ws, keep_modules):
    ws.write("json.py", "def helper():\n    return 2.0\n")
    ws.write("net.py", FACTORY.replace("from helpers import SCALE", "from json import helper"))
    ws.pipeline(PIPELINE)
    one_error(ws.qntz("run", "pipeline.yaml"), 2, "net", "rename json.py")


# --- ONNX files ----------------------------------------------------------------------------

ONNX_PIPELINE = """\
qntz: 1
name: t
model: {onnx: m.onnx}
inputs:
  x: {shape: [batch, 4], dynamic: {batch: [1, 2, 4]}}
steps:
  simplify: {}
"""


def tiny_onnx(path: Path, location: str | None = None, data_at: Path | None = None) -> bytes:
    """y = x @ W for a 4x4 W; with `location`, W is external data there (written at
    `data_at`, by default beside the model)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 8, "w")
    data = weight.raw_data
    if location is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"),
                           ("length", str(len(data)))):
            weight.external_data.add(key=key, value=value)
        target = data_at or path.parent / location
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return data


def test_garbage_onnx_is_refused_in_one_line(ws):
    (ws.root / "m.onnx").write_bytes(b"this is not an onnx model \x00\xff" * 8)
    ws.pipeline(ONNX_PIPELINE)
    one_error(ws.qntz("run", "pipeline.yaml"), 1, "m.onnx", "not a valid ONNX model")
    assert not (ws.root / "out" / "t" / "load").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_onnx_that_links_out_of_the_project_is_refused(ws, command):
    os.symlink("/etc/passwd", ws.root / "m.onnx")
    ws.pipeline(ONNX_PIPELINE)
    one_error(ws.qntz(command, "pipeline.yaml"), 2, "pipeline.yaml:3:", "outside the project")
    assert not list((ws.root / ".qntz").rglob("passwd"))


@pytest.mark.parametrize("command", ["validate", "run"])
def test_external_data_outside_the_model_folder_is_refused(ws, command):
    tiny_onnx(ws.root / "sub" / "m.onnx", "../outside.bin")
    assert (ws.root / "outside.bin").is_file()
    ws.pipeline(ONNX_PIPELINE.replace("m.onnx", "sub/m.onnx"))
    one_error(ws.qntz(command, "pipeline.yaml"), 2, "pipeline.yaml:3:", "'../outside.bin'",
              "outside its folder")


def test_external_data_that_links_out_of_the_folder_is_refused(ws):
    tiny_onnx(ws.root / "m.onnx", "w.bin")
    (ws.root / "w.bin").unlink()
    os.symlink("/etc/passwd", ws.root / "w.bin")
    ws.pipeline(ONNX_PIPELINE)
    one_error(ws.qntz("run", "pipeline.yaml"), 2, "'w.bin'", "outside its folder")


def test_missing_external_data_is_refused_by_validate(ws):
    tiny_onnx(ws.root / "m.onnx", "w.bin")
    (ws.root / "w.bin").unlink()
    ws.pipeline(ONNX_PIPELINE)
    one_error(ws.qntz("validate", "pipeline.yaml"), 2, "'w.bin'", "not a file")


def test_onnx_with_external_data_beside_it_runs_and_is_keyed_by_it(ws):
    data = tiny_onnx(ws.root / "models" / "m.onnx", "weights/w.bin")
    ws.pipeline(ONNX_PIPELINE.replace("m.onnx", "models/m.onnx")
                + "  compare: {needs: [load, simplify], reference: load}\n")
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result
    entry = ws.root / "out" / "t" / "load"
    assert (entry / "weights" / "w.bin").read_bytes() == data
    assert (ws.root / "out" / "t" / "simplify" / "model.onnx").is_file()
    # other weights in the data file: another model, so load runs again
    (ws.root / "models" / "weights" / "w.bin").write_bytes(bytes(reversed(data)))
    again = ws.qntz("run", "pipeline.yaml", "--json")
    assert again.code == 0, again
    assert (entry / "weights" / "w.bin").read_bytes() == bytes(reversed(data))


# --- TorchScript and weights files ---------------------------------------------------------

@pytest.mark.parametrize("name", ["weights", "torchscript"])
def test_model_files_that_link_out_of_the_project_are_refused(ws, tmp_path_factory, name):
    import torch

    outside = tmp_path_factory.mktemp("elsewhere") / "model.pt"
    torch.save({}, outside)
    os.symlink(outside, ws.root / "m.pt")
    source = "factory: models.clean:SmallCNN, weights: m.pt" if name == "weights" \
        else "torchscript: m.pt"
    ws.pipeline(ONNX_PIPELINE.replace("onnx: m.onnx", source).replace(
        "simplify: {}", "capture: {uses: trace}"))
    for command in ("validate", "run"):
        one_error(ws.qntz(command, "pipeline.yaml"), 2, "pipeline.yaml:3:", "m.pt",
                  "outside the project")


# --- dynamic dims --------------------------------------------------------------------------

def test_a_dynamic_dim_no_shape_names_is_an_error_with_a_suggestion(ws):
    ws.pipeline("""\
        qntz: 1
        name: t
        model: {factory: models.clean:SmallCNN}
        inputs:
          x:
            shape: [batch, 3, 16, 16]
            dynamic: {batch: [1, 2, 4], btch: [1, 4, 8]}
        steps:
          capture: {uses: trace}
        """)
    for command in ("validate", "run"):
        one_error(ws.qntz(command, "pipeline.yaml"), 2, "pipeline.yaml:7:33:", "'btch'",
                  "did you mean 'batch'")


def test_a_dynamic_dim_named_by_another_input_is_fine(ws):
    ws.pipeline("""\
        qntz: 1
        name: t
        model: {factory: models.clean:SmallCNN}
        inputs:
          x: {shape: [batch, 3, 16, 16], dynamic: {batch: [1, 2, 4]}}
          y: {shape: [batch, seq], dynamic: {seq: [1, 2, 4]}}
        steps:
          capture: {uses: trace}
        """)
    assert ws.qntz("validate", "pipeline.yaml").code == 0
