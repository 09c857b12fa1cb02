"""Planning on toy kinds: keys (what is in them, what is not) and why a step is stale."""

from __future__ import annotations

import json
import shutil

import pytest

import qntz.api as api
from fast import toykinds
from qntz.core.cache import Cache
from qntz.core.hashing import FileDigests, library_version
from qntz.core.plan import key_record, plan, record_key
from qntz.core.registry import override

pytestmark = pytest.mark.fast

TWO = """
    a: {uses: emit, text: A}
    b: {uses: emit, text: B}
"""


def keys(toy, path=None) -> dict[str, str | None]:
    return {sid: s.key for sid, s in api.status(path or toy.path).items()}


def test_a_new_pipeline_is_stale_then_pending_below(toy):
    toy.pipeline(TWO)
    assert toy.states() == {
        "load": ("stale", "not in cache (never run)"),
        "a": ("pending", "may re-run: after load re-runs, if its output changes"),
        "b": ("pending", "may re-run: after a re-runs, if its output changes"),
    }
    assert keys(toy)["a"] is None  # unknown until its input is built
    toy.run()
    assert {s for s, _ in toy.states().values()} == {"cached"}


def test_status_changes_nothing(toy):
    toy.pipeline(TWO)
    api.status(toy.path)
    assert not toy.path.with_name("toy.lock.json").exists()
    assert not (toy.root / "out").exists()
    assert not list(toy.cache_dir.glob("entries/*"))


def test_params_changed_names_the_parameter_and_both_values(toy):
    toy.pipeline(TWO)
    toy.run()
    toy.pipeline(TWO.replace("text: B", "text: Z, upper: true"))
    states = toy.states()
    assert states["b"] == ("stale", "params changed: text B → Z; "
                                    "params changed: upper False → True")
    assert states["a"][0] == "cached"


def test_input_changed_when_an_upstream_step_was_rebuilt_alone(toy):
    toy.pipeline(TWO)
    toy.run()
    toy.pipeline(TWO.replace("text: A", "text: AA"))
    assert toy.states()["b"][0] == "pending"  # a is stale: b's key is not known yet
    toy.run(steps=["a"])
    assert toy.states()["b"] == ("stale", "input changed: a")


def test_a_kind_version_bump_makes_its_steps_stale(toy):
    toy.pipeline(TWO)
    toy.run()
    with override({"emit": toykinds.bumped(toykinds.Emit, 2)}):
        states = toy.states()
        assert states["a"] == ("stale", "emit step updated")
        assert states["b"][0] == "pending"
        assert states["load"][0] == "cached"
    assert toy.states()["a"][0] == "cached"  # the override is gone: version 1 again


def test_forced_steps_are_stale_with_their_key(toy):
    toy.pipeline(TWO)
    toy.run()
    current = api.session(toy.path, remote=False)
    order = current.pipeline.order()
    states, found = plan(current.pipeline, order, current.cache, current.read_lock(),
                         force={"a"})
    assert (states["a"].state, states["a"].reason) == ("stale", "forced")
    assert states["a"].key == keys(toy)["a"]
    # what a forced step makes is not known before it runs: what follows may re-run
    assert states["b"].state == "pending" and set(found) == {"load"}


def test_a_default_written_out_hashes_as_omitted(toy):
    toy.pipeline(TWO)
    toy.run()
    toy.pipeline(TWO.replace("text: A", "text: A, upper: false, stamp: false"))
    assert {s for s, _ in toy.states().values()} == {"cached"}


def test_the_key_record_holds_what_changes_the_output_and_nothing_else(toy):
    toy.pipeline(TWO)
    done = toy.run()
    current = api.session(toy.path, remote=False)
    spec = current.pipeline.steps["b"]
    inputs = {"a": current.cache.lookup("a", done.steps["a"].key)[0]}
    record = key_record(spec, current.pipeline, inputs, current.digests)
    assert record_key(record) == done.steps["b"].key
    assert set(record) == {"format", "kind", "kind_version", "params", "inputs", "extras",
                           "libraries", "model_inputs"}  # in-process kinds: no "plugin"
    assert record["params"] == {"text": "B", "upper": False, "stamp": False}
    assert record["inputs"] == {"a": inputs["a"].digest}
    assert str(toy.root) not in str(record)  # no absolute paths: the same in any folder
    assert toy.lock()["steps"]["b"]["key"] == done.steps["b"].key


def test_the_same_pipeline_in_two_projects_has_the_same_keys(toy, tmp_path):
    toy.pipeline(TWO)
    toy.run()
    other = tmp_path / "elsewhere"
    (other / ".qntz").mkdir(parents=True)
    shutil.copy(toy.path, other / "toy.yaml")
    api.run(other / "toy.yaml", remote=False)
    assert keys(toy, other / "toy.yaml") == keys(toy)


def test_the_inputs_section_enters_every_key_but_loads(toy):
    toy.pipeline(TWO)
    toy.run()
    toy.pipeline(TWO, head=toy.path.read_text().split("steps:")[0].replace(
        "shape: [1]", "shape: [2]") + "steps:\n")
    states = toy.states()
    assert states["load"][0] == "cached"
    assert states["a"] == ("stale", "`inputs` section changed")


READ = """
    r: {uses: read, file: data.txt}
"""


def test_content_outside_the_inputs_enters_the_key_and_says_what_changed(toy):
    (toy.root / "data.txt").write_text("one")
    toy.pipeline(READ)
    toy.run()
    (toy.root / "data.txt").write_text("two")
    assert toy.states()["r"] == ("stale", "source changed: data.txt")
    toy.run()
    toy.pipeline(READ.replace("data.txt}", "data.txt, threshold: 2}"))
    assert toy.states()["r"] == ("stale", "params changed: threshold 1 → 2; "
                                          "scale changed: 10 → 20")


def test_a_library_version_in_the_key_says_it_changed(toy):
    (toy.root / "data.txt").write_text("one")
    toy.pipeline(READ)
    toy.run()
    lock_file = toy.path.with_name("toy.lock.json")
    lock = toy.lock()
    assert lock["steps"]["r"]["libraries"] == {"pyyaml": library_version("pyyaml")}
    lock["steps"]["r"]["libraries"] = {"pyyaml": "0.1"}  # as built with another PyYAML
    lock_file.write_text(json.dumps(lock))
    assert toy.states()["r"][0] == "cached"  # the cache has this key: the lock is history
    with Cache(toy.cache_dir, FileDigests()).locked(lock["steps"]["r"]["key"]) as held:
        held.remove()
    assert toy.states()["r"][1] == f"pyyaml 0.1 → {library_version('pyyaml')}"
