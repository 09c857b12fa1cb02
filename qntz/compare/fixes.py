"""The fix a failing compare's line ends with: the tolerance or setting to write.

A candidate beyond its bar gets the bar it met (`atol` at its largest error, or a
`threshold` at its top-1 or cosine), all of them in one `tolerances:` mapping, to write if
that loss is acceptable; a candidate that crashed, was not built or could not run where
`require` asks gets the setting that removes the cause.
"""

from __future__ import annotations

import math
from typing import Any

from qntz.compare.row import CandidateRow

FIX = " (fix: "
SAME_DIRECTION = 0.999  # the least cosine of a float candidate whose error a bar may accept


def _fix_span(reason: str) -> tuple[int, int] | None:
    """Where the first `(fix: …)` of `reason` starts and ends (its parentheses balanced)."""
    start = reason.find(FIX)
    if start < 0:
        return None
    depth = 0
    for end in range(start + 1, len(reason)):
        depth += {"(": 1, ")": -1}.get(reason[end], 0)
        if depth == 0:
            return start, end + 1
    return start, len(reason)


def without_fix(reason: str) -> str:
    """`reason` without the `(fix: …)` a row's reason may carry: the line gets one fix."""
    span = _fix_span(reason)
    return reason if span is None else reason[:span[0]] + without_fix(reason[span[1]:])


def _up(value: float) -> float:
    """`value` rounded up at two significant digits (a bar it is within)."""
    if value <= 0 or not math.isfinite(value):
        return value
    step = 10.0 ** (math.floor(math.log10(value)) - 1)
    return float(f"{math.ceil(value / step - 1e-9) * step:.2g}")


def _floor(value: float) -> float:
    return math.floor(value * 100) / 100


def bar_met(row: CandidateRow) -> dict[str, Any] | None:
    """The tolerance the candidate met, for its failing outputs; None when no bar would
    do (a shape or count that differs, a top-1 or cosine at zero)."""
    bad = [o for o in row.get("outputs") or [] if not o.get("pass")]
    if not bad or any(o.get("problem") for o in bad):
        return None
    if all(o.get("metric") in ("top1", "cosine") for o in bad):
        metric = bad[0]["metric"]
        values = [o.get("top1") if metric == "top1" else o.get("cosine_mean") for o in bad]
        values += [r["cosine"] for o in bad for r in o.get("range_ends") or []
                   if not r.get("pass") and metric == "cosine" and r.get("cosine") is not None]
        if any(v is None or not math.isfinite(v) for v in values) or _floor(min(values)) <= 0:
            return None
        return {"metric": metric, "threshold": _floor(min(values))}
    if any((o.get("cosine_min") or 0.0) < SAME_DIRECTION for o in bad):
        return None  # not rounding: a value or a branch went wrong, no tolerance accepts it
    worst = max(o["max_abs"] for o in bad if o.get("max_abs") is not None)
    return {"atol": _up(worst)} if math.isfinite(worst) and worst > 0 else None


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _other(row: CandidateRow, require: list[str]) -> str:
    """The setting that removes the cause of a row no tolerance fixes."""
    cid, reason = row["id"], row.get("reason") or ""
    if row["status"] == "not built":
        cause = reason.rpartition("not built: ")[2].partition(" ")[0] or cid
        return (f"fix the error of step '{cause}' above (a re-run then compares {cid}), or "
                f"drop {cid} from the compare step's `needs`")
    if row["status"] == "not run" and cid in require:
        return f"run where {cid} can run, or drop {cid} from `require`"
    span = _fix_span(reason)
    if span is not None:  # a row's own fix (a device frozen into the capture) names the line
        return reason[span[0] + len(FIX):span[1] - 1]
    if row["status"] == "error":
        return (f"{cid} crashed on an input the model takes: fix the step that made it, or "
                f"drop {cid} from the compare step's `needs`")
    return (f"{cid}'s outputs do not line up with the model's: check the step that made it "
            "(`qntz explain` shows where it diverges)")


def fix_for(rows: list[CandidateRow], require: list[str]) -> str:
    """One fix for every failing row: the tolerances to write, then the other settings
    (the error's place names the compare step's line)."""
    bars = {r["id"]: found for r in rows if r["status"] == "fail"
            and (found := bar_met(r)) is not None}
    parts = []
    if bars:
        parts.append(f"if this loss is acceptable, write `tolerances: {_flow(bars)}` on the "
                     "compare step")
    parts += [_other(r, require) for r in rows if r["id"] not in bars]
    return "; ".join(parts)
