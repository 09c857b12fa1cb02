"""The model's fingerprint: the local modules a factory imports, an installed package's
RECORD and version, a package under development by its sources; and importing factories
from several threads at once."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import textwrap
import threading
from pathlib import Path

import torch

from conftest import Workspace
from qntz.core.model_source import import_factory

NET = """
import torch
from torch import nn

import helpers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return helpers.act(self.fc(x))
"""
PIPELINE = """
qntz: 1
name: t
model: {factory: "FACTORY"}
inputs:
  x: {shape: [batch, 4], dynamic: {batch: [1, 2, 4]}}
steps:
  capture: {uses: trace}
"""


def act(body: str) -> str:
    return f"import torch\n\n\ndef act(x):\n    return {body}\n"


def states(ws: Workspace, pipeline: str = "pipeline.yaml", env: dict | None = None) -> dict:
    if env is None:
        result = ws.qntz("status", pipeline, "--json")
    else:
        result = ws.qntz_subprocess("status", pipeline, "--json", env=env)
    assert result.code == 0, result.err
    return {s["id"]: s for s in json.loads(result.out)["steps"]}


def test_local_modules_the_factory_imports_are_in_the_key(ws):
    ws.write("net.py", NET)
    ws.write("helpers.py", act("torch.relu(x)"))
    ws.write("unrelated.py", "X = 1\n")
    ws.pipeline(PIPELINE.replace("FACTORY", "net:Net"))
    assert ws.qntz("run", "pipeline.yaml").code == 0
    ws.write("unrelated.py", "X = 2\n")  # not imported: not the whole folder
    assert states(ws)["load"]["state"] == "cached"
    ws.write("helpers.py", act("torch.sigmoid(x)"))
    assert states(ws)["load"]["reason"] == "source changed: helpers.py"
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    traced = torch.jit.load(str(ws.root / "out" / "t" / "capture" / "model.pt"))
    assert "aten::sigmoid" in str(traced.inlined_graph)  # the edited helper, not a stale import


CALIB = """
import numpy as np

from calib_scale import SCALE


def batches():
    rng = np.random.default_rng(0)
    for _ in range(4):
        yield (rng.random((2, 4)) * SCALE).astype(np.float32)
"""


def test_a_callable_dataset_is_keyed_by_the_local_modules_it_imports(ws):
    ws.write("net.py", NET)
    ws.write("helpers.py", act("torch.relu(x)"))
    ws.write("calib.py", CALIB)
    ws.write("calib_scale.py", "SCALE = 1.0\n")
    ws.pipeline(PIPELINE.replace("FACTORY", "net:Net").replace(
        "steps:", 'data:\n  calib: {from: callable, function: "calib:batches"}\nsteps:')
        + "  onnx: {}\n  int8: {uses: quantize, data: calib}\n")
    assert ws.qntz("run", "pipeline.yaml").code == 0
    ws.write("calib_scale.py", "SCALE = 0.5\n")
    found = states(ws)
    assert found["load"]["state"] == found["onnx"]["state"] == "cached"
    assert found["int8"]["reason"] == "data changed"


def test_keys_name_local_files_relative_to_the_pipeline(ws, tmp_path_factory):
    ws.write("net.py", NET.replace("import helpers", "from lib import helpers"))
    ws.write("lib/__init__.py", "")
    ws.write("lib/helpers.py", act("torch.relu(x)"))
    ws.pipeline(PIPELINE.replace("FACTORY", "net:Net"))
    other = tmp_path_factory.mktemp("elsewhere") / "checkout"
    shutil.copytree(ws.root, other, ignore=shutil.ignore_patterns("models", ".qntz", "out"))
    here, there = states(ws)["load"], states(ws, str(other / "pipeline.yaml"))["load"]
    assert here["key"] == there["key"]
    (other / "lib" / "helpers.py").write_text(act("torch.tanh(x)"))
    assert states(ws, str(other / "pipeline.yaml"))["load"]["key"] != here["key"]


def test_a_local_package_counts_whole_and_with_what_it_imports(ws):
    ws.write("shared.py", "SCALE = 1.0\n")
    ws.write("nets/__init__.py", "")
    ws.write("nets/model.py", NET.replace("import helpers", "from nets import helpers"))
    ws.write("nets/helpers.py", "import shared\n" + act("torch.relu(x) * shared.SCALE"))
    ws.write("nets/notes.py", "")
    ws.pipeline(PIPELINE.replace("FACTORY", "nets.model:Net"))
    key = states(ws)["load"]["key"]
    ws.write("nets/notes.py", "# a file of the package, imported or not\n")
    assert states(ws)["load"]["key"] != key
    key = states(ws)["load"]["key"]
    ws.write("shared.py", "SCALE = 2.0\n")  # outside the package, imported by it
    assert states(ws)["load"]["key"] != key


# --- installed packages: a site-packages folder of our own on PYTHONPATH --------------------

LAYERS = "from torch import nn\n\n\ndef block():\n    return nn.Linear(4, 2)\n"
MODELS = """
from torch import nn

from .layers import block


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = block()

    def forward(self, x):
        return self.body(x)
"""


def record_line(folder: Path, path: str) -> str:
    data = (folder / path).read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def install(site: Path, dist: str, version: str, source: Path | None = None) -> None:
    """Write `somepkg` and its .dist-info as pip would; with `source`, as an editable install
    whose code stays in `source` (a .pth puts it on the path; here PYTHONPATH does)."""
    for old in site.glob("*.dist-info"):
        shutil.rmtree(old)
    code = source or site
    (code / "somepkg").mkdir(parents=True, exist_ok=True)
    (code / "somepkg" / "__init__.py").write_text("")
    (code / "somepkg" / "models.py").write_text(MODELS)
    if not (code / "somepkg" / "layers.py").exists():
        (code / "somepkg" / "layers.py").write_text(LAYERS)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text("somepkg\n")
    if source is None:
        files = ["somepkg/__init__.py", "somepkg/models.py", "somepkg/layers.py"]
    else:
        (site / "__editable__.somepkg.pth").write_text(f"{source}\n")
        (info / "direct_url.json").write_text(json.dumps(
            {"url": source.as_uri(), "dir_info": {"editable": True}}))
        files = ["__editable__.somepkg.pth"]
    lines = [record_line(site, f) for f in files]
    (info / "RECORD").write_text("\n".join([*lines, f"{info.name}/RECORD,,"]) + "\n")


def test_an_installed_package_is_keyed_by_version_and_record(ws):
    site = ws.root / "site"
    ws.pipeline(PIPELINE.replace("FACTORY", "somepkg.models:Net"))
    for dist in ("somepkg", "some-models"):  # named like its package, or not
        env = {"PYTHONPATH": str(site)}
        install(site, dist, "1.0")
        first = states(ws, env=env)["load"]["key"]
        assert first == states(ws, env=env)["load"]["key"]
        (site / "somepkg" / "layers.py").write_text(LAYERS.replace("4, 2", "4, 3"))
        install(site, dist, "1.0")  # a reinstall rewrites RECORD
        second = states(ws, env=env)["load"]["key"]
        assert second != first
        install(site, dist, "1.1")
        assert states(ws, env=env)["load"]["key"] != second
        (site / "somepkg" / "layers.py").unlink()


def test_a_package_under_development_is_keyed_by_its_sources(ws):
    site, source = ws.root / "site", ws.root / "src"
    ws.pipeline(PIPELINE.replace("FACTORY", "somepkg.models:Net"))
    install(site, "somepkg", "1.0", source)
    env = {"PYTHONPATH": f"{site}:{source}"}
    first = states(ws, env=env)["load"]["key"]
    (source / "somepkg" / "layers.py").write_text(LAYERS.replace("4, 2", "4, 3"))
    second = states(ws, env=env)["load"]["key"]
    assert second != first
    moved = ws.root / "elsewhere" / "src"
    shutil.copytree(source, moved)  # the same sources in another folder: the same key
    assert states(ws, env={"PYTHONPATH": f"{site}:{moved}"})["load"]["key"] == second


def test_a_run_against_an_installed_package_rebuilds_after_a_reinstall(ws):
    site = ws.root / "site"
    ws.pipeline(PIPELINE.replace("FACTORY", "somepkg.models:Net"))
    install(site, "somepkg", "1.0")
    env = {"PYTHONPATH": str(site)}
    assert ws.qntz_subprocess("run", "pipeline.yaml", env=env).code == 0
    assert states(ws, env=env)["load"]["state"] == "cached"
    (site / "somepkg" / "layers.py").write_text(LAYERS.replace("4, 2", "4, 3"))
    install(site, "somepkg", "1.0")
    assert states(ws, env=env)["load"]["reason"] == "source changed: somepkg==1.0"


# --- importing from several threads ---------------------------------------------------------

def test_factories_import_from_several_threads(tmp_path):
    """Two pipelines' `models` packages, imported at once: each thread gets its own."""
    roots = [tmp_path / "a", tmp_path / "b"]
    for index, root in enumerate(roots):
        (root / "models").mkdir(parents=True)
        (root / "models" / "__init__.py").write_text("")
        (root / "models" / "net.py").write_text(textwrap.dedent(f"""
            import models.parts
            VALUE = {index}
            """))
        (root / "models" / "parts.py").write_text("PARTS = list(range(100))\n")
    wrong: list[str] = []

    def work(index: int) -> None:
        for _ in range(150):
            try:
                value = import_factory("models.net:VALUE", roots[index], "test")
            except Exception as exc:  # a race shows as any error: keep it for the report
                wrong.append(f"{type(exc).__name__}: {exc}")
                continue
            if value != index:
                wrong.append(f"thread {index} got the other folder's module")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong, wrong[:3]
