"""Errors a user can cause. Only the CLI catches them; bugs keep their tracebacks."""

from __future__ import annotations

import re


class QntzError(Exception):
    """A failure with a place (file, line, step) and a fix, printed on one line."""

    exit_code = 1
    details: dict | None = None  # what a failing step found first, for the report

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} (fix: {self.hint})" if self.hint else text


class PipelineError(QntzError):
    """The pipeline file or the command line is wrong: exit 2."""

    exit_code = 2


class StepFailed(QntzError):
    """A step ran and failed (a model that cannot be captured, a failed build): exit 1."""

    exit_code = 1


class InputRejected(StepFailed):
    """The eager model itself fails on an input the pipeline declares (often a size it
    cannot take): the pipeline's `inputs` must say which sizes are valid."""


class ComparisonFailed(StepFailed):
    """A candidate disagreed with the reference beyond tolerance: exit 1."""


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message: what fits in a one-line error.
    Terminal colour codes go; torch.onnx's reports, which open with generic advice, give
    the line under their "Exception summary" instead."""
    lines = [ln.strip() for ln in ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    summary = next((i for i, ln in enumerate(lines) if ln.endswith("Exception summary")), None)
    if summary is not None and summary + 1 < len(lines):
        lines = lines[summary + 1:]
    return (lines[0] if lines else type(exc).__name__)[:limit]
