"""The lock file beside a pipeline: written by a run, merged, and read defensively."""

from __future__ import annotations

import json

import pytest

from qntz.core.hashing import digest_value
from qntz.core.lockfile import lock_path, merge_lock, parse_lock, read_lock, step_entry

pytestmark = pytest.mark.fast

GOOD = digest_value("good")


def test_a_run_writes_every_steps_key_record_and_outputs(toy):
    toy.pipeline("""
        a: {uses: emit, text: A}
        b: {uses: emit, text: B}
    """)
    done = toy.run()
    lock = toy.lock()
    assert lock["qntz"] == 1 and lock["name"] == "toy"
    assert set(lock["steps"]) == {"load", "a", "b"}  # written with sorted keys
    b = lock["steps"]["b"]
    assert b["key"] == done.steps["b"].key
    assert b["params"] == {"text": "B", "upper": False, "stamp": False}
    # an input is named by the digest of its lasting outputs, as the lock records them
    assert b["inputs"] == {"a": digest_value(lock["steps"]["a"]["outputs"])}
    assert set(b["outputs"]) == {"text.txt"}
    assert lock_path(toy.path) == toy.root / "toy.lock.json"
    text = toy.path.with_name("toy.lock.json").read_text()
    toy.run()
    assert toy.path.with_name("toy.lock.json").read_text() == text  # a cached run: same bytes


def test_runs_of_some_steps_merge_and_removed_steps_leave(toy):
    toy.pipeline("""
        a: {uses: emit, text: A}
        b: {uses: emit, text: B, needs: [load]}
    """)
    toy.run(steps=["b"])
    assert set(toy.lock()["steps"]) == {"load", "b"}
    toy.run(steps=["a"])
    assert set(toy.lock()["steps"]) == {"load", "a", "b"}
    toy.pipeline("a: {uses: emit, text: A}")
    toy.run()
    assert set(toy.lock()["steps"]) == {"load", "a"}


def test_merge_keeps_what_another_process_wrote_meanwhile(tmp_path):
    path = tmp_path / "p.lock.json"
    merge_lock(path, "p", ["x", "y"], {"x": step_entry(GOOD, {"params": {}}, {})})
    merge_lock(path, "p", ["x", "y"], {"y": step_entry(digest_value("y"), {}, {})})
    assert list(read_lock(path)["steps"]) == ["x", "y"]
    before = path.stat().st_mtime_ns
    merge_lock(path, "p", ["x", "y"], {"y": step_entry(digest_value("y"), {}, {})})
    assert path.stat().st_mtime_ns == before  # nothing changed: not rewritten


def test_malformed_entries_and_keys_that_are_not_hex_are_dropped():
    steps = {
        "good": {"key": GOOD, "params": {"a": 1}, "outputs": {"f": GOOD}},
        "not_hex": {"key": "../../" + "a" * 58},
        "upper_hex": {"key": GOOD.upper()},
        "short": {"key": GOOD[:-1]},
        "no_key": {"params": {}},
        "params_a_list": {"key": GOOD, "params": [1]},
        "outputs_a_string": {"key": GOOD, "outputs": "f"},
        "not_a_dict": [GOOD],
    }
    lock = parse_lock(json.dumps({"qntz": 1, "name": "p", "steps": steps}))
    assert list(lock["steps"]) == ["good"] and lock["name"] == "p"


@pytest.mark.parametrize("text", ["{not json", "[]", '{"steps": []}', '"text"', ""])
def test_a_lock_that_is_not_one_is_empty(text):
    assert parse_lock(text) == {"steps": {}}


def test_a_missing_lock_is_empty(tmp_path):
    assert read_lock(tmp_path / "none.lock.json") == {"steps": {}}


def test_status_and_run_survive_a_hostile_lock(toy):
    toy.pipeline("a: {uses: emit, text: A}")
    toy.path.with_name("toy.lock.json").write_text(json.dumps({"qntz": 1, "steps": {
        "load": {"key": "../../../etc/passwd"}, "a": "nonsense"}}))
    assert toy.states()["load"] == ("stale", "not in cache (never run)")
    assert toy.run()
    assert set(toy.lock()["steps"]) == {"load", "a"}
