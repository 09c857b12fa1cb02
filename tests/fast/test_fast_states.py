"""One vocabulary of states: every word a step, a plan, a candidate or a preflight verdict
can take has one tone, and every display draws from it."""

from __future__ import annotations

from typing import get_args

import pytest

from qntz.core.states import (
    DONE,
    CandidateStatus,
    PlanState,
    RunState,
    Severity,
    Verdict,
    mark,
    passed,
    style,
    tone,
)

pytestmark = pytest.mark.fast
WORDS = [w for t in (RunState, PlanState, CandidateStatus, Verdict, Severity) for w in get_args(t)]


@pytest.mark.parametrize("word", WORDS)
def test_every_word_has_a_tone_a_mark_and_a_colour(word):
    assert tone(word) in ("ok", "warn", "bad", "neutral")
    assert mark(word).endswith(word.upper() if word in ("fail", "error") else word)
    assert style(word) in ("green", "yellow", "red", "dim")


def test_a_failure_is_never_shown_as_success():
    bad = ["failed", "fail", "error", "not built", "fails"]
    assert {tone(w) for w in bad} == {"bad"} and {style(w) for w in bad} == {"red"}
    assert all(mark(w).startswith("❌") for w in bad)
    assert tone("something new") == "neutral"


def test_only_pass_passes_and_only_finished_states_are_done():
    assert [passed(s) for s in get_args(CandidateStatus)] == [True, False, False, None, False]
    assert passed("unknown") is None
    assert set(DONE) == set(get_args(RunState)) - {"failed", "skipped"}
