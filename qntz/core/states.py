"""Every state and status qntz reports, and how each is shown (no torch, no rich).

A step's run state, a step's plan state, a compare candidate's status and a preflight
verdict are closed sets of words; each word has one tone (ok, warn, bad, neutral), and
the terminal, the Markdown reports and report.html all draw a word from its tone here.
"""

from __future__ import annotations

from typing import Literal, get_args

RunState = Literal["ran", "cached", "pulled", "failed", "skipped"]  # pulled: remote cache
PlanState = Literal["cached", "stale", "pending"]  # pending: after a stale step
CandidateStatus = Literal["pass", "fail", "error", "not run", "not built"]
Verdict = Literal["ok", "risky", "fails"]  # preflight's, per capture method
Severity = Literal["error", "warning", "info"]  # a finding's
Tone = Literal["ok", "warn", "bad", "neutral"]

DONE: tuple[RunState, ...] = ("ran", "cached", "pulled")  # the step's artifact exists

TONES: dict[str, Tone] = {
    "ran": "ok", "cached": "ok", "pulled": "ok", "failed": "bad", "skipped": "warn",
    "stale": "warn", "pending": "neutral",
    "pass": "ok", "fail": "bad", "error": "bad", "not run": "warn", "not built": "bad",
    "ok": "ok", "risky": "warn", "fails": "bad",
    "warning": "warn", "info": "neutral",
}
EMOJI: dict[Tone, str] = {"ok": "✅", "warn": "⚠️", "bad": "❌", "neutral": "•"}
TERMINAL: dict[Tone, str] = {"ok": "green", "warn": "yellow", "bad": "red", "neutral": "dim"}
SHOUTED = {"fail", "error"}  # written in capitals in the Markdown reports


def tone(word: object) -> Tone:
    """How a state or status is shown; neutral for a word qntz does not know."""
    return TONES.get(str(word), "neutral")


def mark(word: str) -> str:
    """The Markdown form: '✅ pass', '❌ FAIL'."""
    return f"{EMOJI[tone(word)]} {word.upper() if word in SHOUTED else word}"


def style(word: str) -> str:
    """The terminal colour (a rich style)."""
    return TERMINAL[tone(word)]


def passed(status: str) -> bool | None:
    """Whether a candidate with this status passed (None: not run, or a status qntz does
    not know)."""
    if status == "not run" or status not in get_args(CandidateStatus):
        return None
    return status == "pass"
