"""Fuzzing the pipeline file: mutated valid pipelines never crash, hang or write outside.

Each example starts from a small valid pipeline, mutates it (dropped and replaced keys, values
of the wrong type, odd strings, huge and non-finite numbers, deep nesting, aliases, bad
bytes), and drives the real CLI in-process. Whatever the input: the exit code is 0, 1 or 2,
no exception escapes `main` (that would be a traceback), a refusal is one line with a fix,
nothing is written outside the workspace's `.qntz/` and `out/`, and every example finishes
within a bound (a hang fails through SIGALRM instead of stalling CI).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TRANSFORMER, ZOO, pipeline_text
from qntz.cli import main

SEEDS = [
    pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}\nonnx: {opset: 17}\n"
                  "int8: {uses: quantize, data: calib, samples: 4}\n"
                  "compare: {needs: [onnx, int8], samples: 1}",
                  extra="data:\n  calib: {from: generate, samples: 4}\n"),
    pipeline_text("models.clean:SmallCNN", "preflight: {}\ncapture: {uses: export}\n"
                  "onnx: {opset: 18}\nsimplify: {}\nfp16: {uses: quantize, precision: fp16}"),
    TRANSFORMER,
]
ODD_TEXT = ["", ".", "..", "../../../victim", "/", "/dev/zero", "a\0b", "x" * 300, "é",
            "\u202e", ".hidden", "a:b", "..models:x", ".:x", "~", "$HOME", "C:\\x", "a\nb",
            "models.clean:SmallCNN", "trace", "onnx", "int8", "load", "-rf", "*"]
ODD_NUMBERS = [0, -1, 1, 2**26, 2**63, 10**11, 10**400, 1e308, -1e308,
               float("inf"), float("-inf"), float("nan"), 0.5, True]
TIME_LIMIT = 20  # seconds for one example, hard stop


def odd_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.sampled_from(ODD_TEXT),
                     st.sampled_from(ODD_NUMBERS), st.integers(), st.floats(),
                     st.text(max_size=20))


def odd_values() -> st.SearchStrategy[Any]:
    return st.recursive(odd_scalars(), lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=8),
                                  st.integers(), st.none()), inner, max_size=4)),
        max_leaves=8)


def paths_in(value: Any, at: tuple = ()) -> Iterator[tuple]:
    yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_in(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths_in(item, (*at, index))


def _parent_and_key(doc: Any, at: tuple) -> tuple[Any, Any]:
    parent = doc
    for part in at[:-1]:
        parent = parent[part]
    return parent, at[-1]


def mutate(doc: Any, at: tuple, op: str, value: Any, key: Any) -> Any:
    """One structural mutation at `at`; the root itself can be replaced."""
    if not at:
        return value if op == "replace" else doc
    parent, last = _parent_and_key(doc, at)
    if op == "drop":
        del parent[last]
    elif op == "replace":
        parent[last] = value
    elif op == "tweak":  # same type, odd value: more mutants get past the schema
        parent[last] = _same_type(parent[last], value, key)
    elif op == "rename" and isinstance(parent, dict):
        parent[key] = parent.pop(last)
    elif op == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif op == "wrap":
        parent[last] = [parent[last]]
    elif op == "nest":
        parent[last] = {"a": [parent[last]] * 2} if isinstance(key, str) else [[parent[last]]]
    return doc


def _same_type(old: Any, value: Any, key: Any) -> Any:
    if isinstance(old, str):
        return key if isinstance(key, str) else str(value)
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        return key if isinstance(key, int) else value
    return value


def dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=1 << 20)
    except yaml.YAMLError:  # the mutation made something YAML cannot write: keep it simple
        return yaml.safe_dump(str(doc))


TEXT_EDITS = {
    "none": lambda text: text,
    "alias_bomb": lambda text: text + "".join(
        f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}" if i else "lol"] * 9) + "]\n"
        for i in range(9)),
    "self_alias": lambda text: text + "loop: &loop [*loop]\n",
    "deep": lambda text: text + "deep: " + "[" * 700 + "]" * 700 + "\n",
    "latin1": lambda text: text + "# caf\udce9\n",
    "nul": lambda text: text.replace("t\n", "t\0\n", 1),
    "tab": lambda text: text.replace("  ", "\t", 1),
    "truncate": lambda text: text[: len(text) // 2],
    "merge": lambda text: text.replace("steps:", "base: &base {opset: 17}\nsteps:", 1)
    .replace("onnx:", "onnx: {<<: *base}\n  onnx2:", 1),
}


@st.composite
def pipelines(draw: st.DrawFn) -> str:
    doc = yaml.safe_load(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(list(paths_in(doc))))
        op = draw(st.sampled_from(["drop", "replace", "tweak", "tweak", "rename", "add", "wrap",
                                   "nest"]))
        key = draw(st.one_of(st.sampled_from(ODD_TEXT), st.sampled_from(ODD_NUMBERS),
                             st.integers(), st.none()))
        doc = mutate(doc, at, op, draw(odd_values()), key)
    edit = draw(st.one_of(st.just("none"), st.sampled_from(sorted(TEXT_EDITS))))
    return TEXT_EDITS[edit](dump(doc))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    files = {}
    for parent, _, names in os.walk(root):
        for name in names:
            path = Path(parent, name)
            info = path.lstat()
            files[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return files


def _timeout(signum: int, frame: Any) -> None:
    raise TimeoutError(f"an example took more than {TIME_LIMIT}s")


@contextlib.contextmanager
def workspace() -> Iterator[tuple[Path, Path]]:
    """A fresh project (the zoo under models/) inside a folder whose contents are watched."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory() as outer:
        root = Path(outer, "ws")
        shutil.copytree(ZOO, root / "models", ignore=shutil.ignore_patterns("__pycache__"))
        os.chdir(root)
        signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(TIME_LIMIT)
        try:
            yield Path(outer), root
        finally:
            signal.alarm(0)
            os.chdir(previous)


def cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def check_outcome(code: int, err: str) -> None:
    assert code in (0, 1, 2), (code, err)
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "fix:" in lines[0], err


def outside_writes(before: dict, after: dict) -> list[str]:
    allowed = ("ws/.qntz/", "ws/out/")
    changed = {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))
    return sorted(p for p in changed if not p.startswith(allowed))


@settings(max_examples=120, deadline=timedelta(seconds=5), derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=pipelines())
def test_mutated_pipelines_are_refused_cleanly(text: str) -> None:
    with workspace() as (outer, root):
        (root / "pipeline.yaml").write_bytes(text.encode("utf-8", "surrogateescape"))
        before = snapshot(outer)
        code, err = cli("validate", "pipeline.yaml")
        check_outcome(code, err)
        check_outcome(*cli("status", "pipeline.yaml"))
        if code == 2:  # refused before any work: run must refuse the same way, writing nothing
            run_code, run_err = cli("run", "pipeline.yaml")
            assert (run_code, run_err) == (code, err)
        assert outside_writes(before, snapshot(outer)) == []


@pytest.mark.parametrize("edit", sorted(TEXT_EDITS))
def test_text_edits_of_a_valid_pipeline(edit: str) -> None:
    """Every text edit on its own, so each is exercised whatever hypothesis draws."""
    with workspace() as (outer, root):
        (root / "pipeline.yaml").write_bytes(
            TEXT_EDITS[edit](SEEDS[0]).encode("utf-8", "surrogateescape"))
        before = snapshot(outer)
        for command in ("validate", "status"):
            check_outcome(*cli(command, "pipeline.yaml"))
        assert outside_writes(before, snapshot(outer)) == []
