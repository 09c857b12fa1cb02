"""Every library a step kind imports is in its key: each kind runs alone in a fresh process,
its ancestors cached, and every distribution it brought in must be among the libraries its
lock-file entry records (or on the commented allow-list below)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

from conftest import ZOO, pipeline_text, transformer_pipeline

pytestmark = pytest.mark.slow

# Run one step (its ancestors are cached, so nothing else imports anything) and print the
# modules imported since the interpreter started: qntz's own modules import numpy, which a
# diff taken just around `run` would hide.
PROBE = """\
import json, sys
START = set(sys.modules)
from qntz.cli import main
path, sid = sys.argv[1:3]
code = main(["run", path, "--step", sid, "--force"])
modules = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if n not in START}
print("PROBE" + json.dumps({"code": code, "modules": modules}))
"""

# Distributions that cannot change an artifact, each with the reason.
ALLOWED = {
    "pyyaml": "reads the pipeline file; parameters enter the key after parsing",
    "jsonschema": "validates the pipeline file",
    "jsonschema-specifications": "validates the pipeline file",
    "referencing": "validates the pipeline file",
    "rpds-py": "validates the pipeline file",
    "attrs": "validates the pipeline file",
    "rich": "terminal output",
    "colorama": "terminal colours of torch's logging",
    "typing-extensions": "type annotations only",
    "packaging": "version-string parsing",
    "filelock": "locks for torch's on-disk caches",
    "networkx": "graph containers for torch's partitioner; the ops come from torch",
    "sympy": "symbolic shape algebra for torch's guards; the numbers come from torch",
    "mpmath": "sympy's number type",
    "jsonpointer": "jsonschema's format checks (installed with it by other tools)",
    "rfc3339-validator": "jsonschema's format checks (installed with it by other tools)",
    "idna": "jsonschema's format checks (installed with it by other tools)",
    "six": "a Python 2/3 shim under rfc3339-validator",
    "tqdm": "progress bars",
}

CNN_STEPS = """
preflight: {}
trace: {uses: trace, needs: [load]}
script: {uses: script, needs: [load]}
export: {uses: export, needs: [load]}
auto: {uses: auto, needs: [load, preflight]}
onnx_ts: {uses: onnx, needs: [trace], exporter: torchscript}
onnx_dynamo: {uses: onnx, needs: [export], exporter: dynamo, opset: 18}
onnxsim: {uses: simplify, needs: [onnx_ts], backend: onnxsim}
onnxslim: {uses: simplify, needs: [onnx_ts], backend: onnxslim}
int8: {uses: quantize, needs: [onnx_ts], recipe: static}
fp16: {uses: quantize, needs: [onnx_ts], precision: fp16}
compare: {needs: [trace, onnx_ts], iterations: 0}
"""
HAS_TENSORRT = importlib.util.find_spec("tensorrt_rtx") is not None
TENSORRT_STEPS = """
tensorrt: {needs: [onnx_ts]}
compare_engine: {uses: compare, needs: [onnx_ts, tensorrt], iterations: 0}
"""
PROBES = [("cnn.yaml", sid) for sid in ["load", *(line.split(":")[0] for line in (
    CNN_STEPS + (TENSORRT_STEPS if HAS_TENSORRT else "")).split("\n") if line)]]
PROBES.append(("transformer.yaml", "dynamic"))


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict]:
    root = tmp_path_factory.mktemp("libraries")
    shutil.copytree(ZOO, root / "models", ignore=shutil.ignore_patterns("__pycache__"))
    steps = CNN_STEPS + (TENSORRT_STEPS if HAS_TENSORRT else "")
    (root / "cnn.yaml").write_text(pipeline_text("models.clean:SmallCNN", steps))
    (root / "transformer.yaml").write_text(transformer_pipeline(
        "dynamic: {uses: quantize, recipe: dynamic}"))
    env = {k: v for k, v in os.environ.items() if k != "QNTZ_CACHE"}
    for name in ("cnn.yaml", "transformer.yaml"):
        done = subprocess.run([sys.executable, "-m", "qntz", "run", name], cwd=root, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    def probe(item: tuple[str, str]) -> dict:
        done = subprocess.run([sys.executable, "-c", PROBE, *item], cwd=root, env=env,
                              capture_output=True, text=True)
        assert "PROBE" in done.stdout, done.stderr
        return json.loads(done.stdout.split("PROBE", 1)[1])

    with ThreadPoolExecutor(max_workers=2) as pool:
        found = dict(zip(PROBES, pool.map(probe, PROBES)))
    # Re-runs give the same keys, so the lock files (beside each pipeline) hold each step's
    # record, however the probes' writes interleaved.
    locks = {name: json.loads((root / name).with_suffix(".lock.json").read_text())
             for name in ("cnn.yaml", "transformer.yaml")}
    return {item: {**found[item], "record": locks[item[0]]["steps"][item[1]], "root": root}
            for item in PROBES}


@pytest.mark.parametrize("item", PROBES, ids=[sid for _, sid in PROBES])
def test_every_imported_library_is_in_the_key(probed, item):
    probe = probed[item]
    assert probe["code"] == 0
    keyed = {normal(name) for name in probe["record"]["libraries"]}
    keyed |= toolchain(probe["record"].get("extras", {}))
    missing = sorted(imported(probe["modules"], probe["root"]) - keyed - set(ALLOWED))
    assert not missing, f"step kind imports {missing}, not in its `libraries`"


def test_every_kind_is_probed(probed):
    from qntz.core.pipeline import load_pipeline
    from qntz.core.registry import KINDS

    root = next(iter(probed.values()))["root"]
    kinds = {load_pipeline(root / path).steps[sid].kind for path, sid in PROBES}
    assert kinds == set(KINDS) - (set() if HAS_TENSORRT else {"tensorrt"})


def toolchain(extras: dict) -> set[str]:
    """TensorRT's distributions, when the key records the TensorRT flavour and version."""
    flavour, version = extras.get("runtime"), extras.get("runtime_version")
    if not flavour:
        return set()
    return {normal(d.metadata["Name"]) for d in metadata.distributions()
            if normal(d.metadata["Name"]).startswith(normal(flavour)) and d.version == version}


def imported(modules: dict[str, str | None], root: Path) -> set[str]:
    """Distributions of the imported modules, less the standard library, qntz and the
    pipeline's own model code (the load step fingerprints that)."""
    owners = _packages_distributions()
    by_file = _files_by_owner()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    found: set[str] = set()
    for name, file in modules.items():
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or name in ("__main__", "__mp_main__"):
            continue
        if file is None:  # made at run time by a library (cython_runtime), no file of its own
            continue
        path = Path(file).resolve()
        if path.is_relative_to(stdlib) or path.is_relative_to(root.resolve()):
            continue
        if path in by_file:  # exact, even in a namespace package (google.*) or under a bare
            found.add(by_file[path])  # name a library put on sys.path (ORT's float16)
            continue
        found |= {normal(d) for d in owners.get(top) or owners.get(installed_top(path), [])
                  } or {f"?{name} ({file})"}
    return found - {"qntz"}


@cache
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@cache
def _files_by_owner() -> dict[Path, str]:
    """Every installed file and the distribution whose RECORD lists it."""
    owners: dict[Path, str] = {}
    for dist in metadata.distributions():
        for file in dist.files or []:
            if file.suffix in (".py", ".so", ".pyd"):
                owners[Path(dist.locate_file(file)).resolve()] = normal(dist.metadata["Name"] or "")
    return owners


def installed_top(path: Path) -> str:
    """The top-level package a file sits in (a library that puts its own folder on sys.path
    imports its modules under bare names)."""
    entries = [Path(e).resolve() for e in sys.path if e and Path(e).is_dir()]
    holding = [e for e in entries if path.is_relative_to(e)]
    return path.relative_to(max(holding, key=lambda e: len(e.parts))).parts[0] if holding else ""
