"""The content cache: atomic commits, digests verified on use, corrupt entries rebuilt."""

from __future__ import annotations

import json
import os

from conftest import pipeline_text
from qntz.core.cache import MANIFEST, Cache
from qntz.core.hashing import FileDigests, canonical_json, digest_value

STEPS = "capture: {uses: trace}\nonnx: {}"


def entries(ws) -> dict[str, dict]:
    lock = json.loads((ws.root / "pipeline.lock.json").read_text())
    return {sid: step for sid, step in lock["steps"].items()}


def entry_dir(ws, key: str):
    return ws.root / ".qntz" / "cache" / "entries" / key[:2] / key


def test_canonical_json_is_order_free():
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
    assert digest_value({"b": 1, "a": 2}) == digest_value({"a": 2, "b": 1})


def test_file_digest_survives_touch_and_sees_edits(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    digests = FileDigests(tmp_path / "store.json")
    first = digests.of(path)
    os.utime(path, ns=(1, 1))
    assert digests.of(path) == first
    path.write_bytes(b"abd")
    assert digests.of(path) != first


def test_commit_is_atomic_and_lookup_verifies(tmp_path):
    cache = Cache(tmp_path / "c", FileDigests())
    with cache.locked("a" * 64) as held:  # a build's folder is made under its lock
        work = cache.workspace("a" * 64)
        (work / "out" / "model.onnx").write_bytes(b"x" * 100)
        artifact = held.commit("s", work, ["onnx"], {}, {})
    assert not work.exists() and artifact.file("model.onnx").read_bytes() == b"x" * 100
    found, problem = cache.lookup("s", "a" * 64)
    assert found is not None and problem is None
    os.chmod(artifact.file("model.onnx"), 0o644)
    artifact.file("model.onnx").write_bytes(b"y" * 100)
    found, problem = cache.lookup("s", "a" * 64)
    assert found is None and "corrupt" in problem


def test_half_written_entry_is_a_miss(tmp_path):
    cache = Cache(tmp_path / "c", FileDigests())
    half = cache.entry_dir("b" * 64)
    half.mkdir(parents=True)
    (half / "model.onnx").write_bytes(b"partial")
    found, problem = cache.lookup("s", "b" * 64)
    assert found is None and "incomplete" in problem
    assert half.exists()  # looking is not repairing: removal happens under the key's lock


def test_corrupted_entry_is_rebuilt_by_run(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    assert ws.qntz("run", "pipeline.yaml").code == 0
    onnx_key = entries(ws)["onnx"]["key"]
    target = entry_dir(ws, onnx_key) / "model.onnx"
    os.chmod(target, 0o644)
    target.write_bytes(target.read_bytes()[:-10])  # truncated, as by a crash or a bad disk
    states = {s["id"]: s for s in json.loads(ws.qntz("status", "pipeline.yaml", "--json").out)[
        "steps"]}
    assert states["onnx"]["state"] == "stale" and "corrupt" in states["onnx"]["reason"]
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0 and "✓ onnx" in result.out
    assert (entry_dir(ws, onnx_key) / MANIFEST).is_file()


def test_failed_step_leaves_no_entry(ws):
    ws.pipeline(pipeline_text("models.hazards:NoOnnxOperator", STEPS, shape="[batch, 4, 4]"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1, result
    assert "step 'onnx'" in result.err and "Traceback" not in result.err
    assert "linalg_inv" in result.err
    lock = json.loads((ws.root / "pipeline.lock.json").read_text())
    assert "onnx" not in lock["steps"]
    tmp = ws.root / ".qntz" / "cache" / "tmp"
    assert not any(tmp.iterdir())


def test_committed_files_are_not_read_again(tmp_path, monkeypatch):
    digests = FileDigests()
    cache = Cache(tmp_path / "c", digests)
    with cache.locked("c" * 64) as held:  # a build's folder is made under its lock
        work = cache.workspace("c" * 64)
        (work / "out" / "model.onnx").write_bytes(b"z" * 1000)
        held.commit("s", work, ["onnx"], {}, {})
    reads = []
    monkeypatch.setattr(FileDigests, "_read", staticmethod(lambda path: reads.append(path)))
    found, _ = cache.lookup("s", "c" * 64)
    assert found is not None and reads == []
