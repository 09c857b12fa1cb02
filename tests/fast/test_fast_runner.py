"""The runner on toy kinds: order, parallel jobs, failures, --keep-going, outputs laid out."""

from __future__ import annotations

import pytest

import qntz.api as api
from fast import toykinds
from qntz.core.errors import QntzError

pytestmark = pytest.mark.fast


def test_steps_run_in_dag_order_then_are_cached(toy):
    toy.pipeline("""
        c: {uses: emit, text: C, needs: [b]}
        b: {uses: emit, text: B, needs: [load]}
        d: {uses: emit, text: D, needs: [c, b]}
    """)
    done = toy.run()
    assert done and list(done.steps) == ["load", "b", "c", "d"]
    assert toykinds.RUNS == ["load", "b", "c", "d"]
    assert {s.state for s in done.steps.values()} == {"ran"}
    assert toy.text("d") == "seedBCseedBD"  # its needs' texts in the order it names them
    assert done.steps["d"].files["text.txt"].read_text() == "seedBCseedBD"
    again = toy.run()
    assert {s.state for s in again.steps.values()} == {"cached"}
    assert toykinds.RUNS == []
    assert [s.key for s in again.steps.values()] == [s.key for s in done.steps.values()]


def test_only_the_steps_asked_for_and_what_they_need(toy):
    toy.pipeline("""
        a: {uses: emit, text: A}
        b: {uses: emit, text: B}
        other: {uses: emit, needs: [load]}
    """)
    done = toy.run(steps=["a"])
    assert list(done.steps) == ["load", "a"]
    assert toy.states()["b"][0] == "stale"


def test_independent_steps_run_in_parallel(toy):
    toy.pipeline("""
        left: {uses: meet, needs: [load], text: L}
        right: {uses: meet, needs: [load], text: R}
        both: {uses: emit, needs: [left, right]}
    """)
    done = toy.run(jobs=2)
    assert done, done.failures()
    assert toy.text("both") == "seedLseedR"


def test_two_equal_steps_share_one_key_and_are_built_once(toy):
    """Content addressing: the key knows a step's kind, parameters and inputs, not its id."""
    toy.pipeline("""
        left: {uses: emit, needs: [load], text: X}
        right: {uses: emit, needs: [load], text: X}
    """)
    done = toy.run(jobs=2)
    assert done.steps["left"].key == done.steps["right"].key
    assert sorted(toykinds.RUNS) == ["left", "load"] or sorted(toykinds.RUNS) == [
        "load", "right"]
    assert {done.steps["left"].state, done.steps["right"].state} == {"ran", "cached"}


def test_the_parallel_check_fails_one_at_a_time(toy):
    """What makes the test above mean something: with one job the steps never meet."""
    toy.pipeline("""
        left: {uses: meet, needs: [load], wait: 0.2, text: L}
        right: {uses: meet, needs: [load], wait: 0.2, text: R}
    """)
    done = toy.run(jobs=1, keep_going=True)
    assert done.steps["left"].state == "failed"
    assert "never ran alongside" in done.steps["left"].reason


FAILING = """
    a: {uses: emit, text: A}
    bad: {uses: fail, how: qntz}
    after: {uses: emit, needs: [bad]}
    side: {uses: emit, needs: [a]}
    later: {uses: emit, needs: [side]}
"""


def test_a_failure_stops_what_was_not_started(toy):
    toy.pipeline(FAILING)
    done = toy.run()
    assert not done
    states = {sid: s.state for sid, s in done.steps.items()}
    # `side` was already submitted with `bad`; `later` became ready only after the failure
    assert states == {"load": "ran", "a": "ran", "bad": "failed", "after": "skipped",
                      "side": "ran", "later": "skipped"}
    assert done.steps["later"].reason == "not started after a failure"
    error = done.steps["bad"].error
    assert isinstance(error, QntzError) and error.message == "told to fail"
    assert "step 'bad'" in error.where and error.hint == "set how: summary"
    assert done.failures() == [error]


def test_keep_going_runs_everything_that_does_not_need_the_failure(toy):
    toy.pipeline(FAILING)
    done = toy.run(keep_going=True)
    states = {sid: s.state for sid, s in done.steps.items()}
    assert states == {"load": "ran", "a": "ran", "bad": "failed", "after": "skipped",
                      "side": "ran", "later": "ran"}
    assert done.steps["after"].reason == "bad did not finish"
    assert not done
    # what ran is cached and recorded; the failed step and what needs it are not
    assert set(toy.lock()["steps"]) == {"load", "a", "side", "later"}
    assert toy.states()["bad"][0] == "stale"
    assert toy.states()["after"][0] == "pending"


@pytest.mark.parametrize(("how", "cause", "says"), [
    ("exit", SystemExit, "sys.exit(3)"),
    ("interrupt", KeyboardInterrupt, "KeyboardInterrupt"),
    ("value", ValueError, "unexpected error: ValueError: a bug in the step"),
])
def test_whatever_a_step_raises_is_its_failure(toy, how, cause, says):
    toy.pipeline(f"""
        bad: {{uses: fail, how: {how}}}
        after: {{uses: emit}}
    """)
    done = toy.run()  # returns: neither the process nor the run is ended by the step
    bad = done.steps["bad"]
    assert bad.state == "failed" and says in bad.reason
    assert isinstance(bad.error, QntzError) and isinstance(bad.error.__cause__, cause)
    assert "step 'bad'" in bad.error.where
    assert done.steps["after"].state == "skipped"
    assert not list(toy.cache_dir.glob("tmp/*")), "the failed build's folder is left behind"


@pytest.mark.parametrize(("how", "says", "hint"), [
    ("full-disk", "no space left on the device of", "QNTZ_CACHE at a larger disk"),
    ("read-only", "cannot write", "make the cache writable"),
])
def test_a_full_or_read_only_disk_is_one_line_wherever_a_library_noticed_it(toy, how, says,
                                                                           hint):
    toy.pipeline(f"bad: {{uses: fail, how: {how}}}")
    bad = toy.run().steps["bad"]
    assert bad.state == "failed" and bad.error.message.startswith(says)
    assert hint in bad.error.hint


def test_a_failure_in_the_summary_keeps_the_output_and_goes_on(toy):
    """A step that made its output and judged it bad (compare) fails without stopping."""
    toy.pipeline("""
        judged: {uses: fail, how: summary}
        after: {uses: emit, text: Z}
    """)
    done = toy.run()
    assert done.steps["judged"].state == "failed"
    assert done.steps["judged"].reason.endswith("step 'judged': numbers disagree")
    assert done.steps["after"].state == "ran" and toy.text("after") == "seedZ"


def test_a_forced_run_rebuilds_and_a_same_output_keeps_downstream_cached(toy):
    toy.pipeline("""
        a: {uses: emit, text: A, stamp: true}
        b: {uses: emit, text: B}
    """)
    first = toy.run()
    forced = toy.run(steps=["a"], force=True)
    # --force with --step forces the steps named, not what they need
    assert {s: o.state for s, o in forced.steps.items()} == {"load": "cached", "a": "ran"}
    # the clock file differs, but it is volatile: a's digest, and b's key, do not change
    assert toy.run().steps["b"].state == "cached"
    assert forced.steps["a"].key == first.steps["a"].key
    lock = toy.lock()["steps"]["a"]
    assert set(lock["outputs"]) == {"text.txt"}
    assert set(forced.steps["a"].files) == {"text.txt", "clock.txt"}


def test_a_damaged_entry_is_rebuilt_and_what_consumed_it_reused(toy):
    toy.pipeline("""
        a: {uses: emit, text: A}
        b: {uses: emit, text: B}
    """)
    toy.run()
    entry = next(toy.cache_dir.glob(f"entries/*/{toy.lock()['steps']['a']['key']}"))
    (entry / "text.txt").chmod(0o644)
    (entry / "text.txt").write_text("tampered")
    assert toy.states()["a"] == ("stale", "cache entry corrupt (text.txt changed), rebuilding")
    done = toy.run()
    assert {s: o.state for s, o in done.steps.items()} == {
        "load": "cached", "a": "ran", "b": "cached"}
    assert toy.text("b") == "seedAB" and (entry / "text.txt").read_text() == "seedA"


def test_an_edited_output_in_out_is_laid_out_again(toy):
    toy.pipeline("a: {uses: emit, text: A}")
    toy.run()
    laid_out = toy.root / "out" / "toy" / "a" / "text.txt"
    laid_out.unlink()
    assert toy.run().steps["a"].state == "cached"
    assert laid_out.read_text() == "seedA"


def test_the_live_model_is_built_once_for_every_step_that_consumes_it(toy):
    toy.pipeline("""
        one: {uses: shout}
        two: {uses: shout, needs: [one]}
        other: {uses: emit, needs: [load]}
    """)
    done = toy.run(jobs=2)
    assert done, done.failures()
    assert toykinds.MODELS == ["seed"] and toy.text("two") == "SEED"
    # a kind that consumes the model needs the load step even when `needs` does not say so
    assert api.load_pipeline(toy.path).steps["two"].needs == ("one", "load")
    assert toy.run() and toykinds.MODELS == []  # cached: no model built at all


class Interrupting:
    """A reporter whose Ctrl-C arrives when step `a` has finished."""

    def started(self, step_id, kind):
        pass

    def message(self, step_id, text):
        pass

    def finished(self, result):
        if result.id == "a":
            raise KeyboardInterrupt


def test_ctrl_c_during_a_run_stops_it_and_leaves_no_lease(toy):
    toy.pipeline("""
        a: {uses: emit, text: A}
        b: {uses: emit, text: B}
    """)
    with pytest.raises(KeyboardInterrupt):
        toy.run(reporter=Interrupting())
    assert "b" not in toykinds.RUNS
    assert not list((toy.cache_dir / "leases").iterdir())
    assert toy.run().steps["a"].state == "cached"  # what finished was committed
