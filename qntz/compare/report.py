"""The compare report as Markdown: one table a person can read at a glance."""

from __future__ import annotations

import copy
from typing import Any

from qntz.compare.row import CandidateRow
from qntz.core.states import mark

TIMING = ("latency_ms", "speedup", "speedup_range", "speedup_wide", "speedup_vs_source",
          "speedup_vs_source_range", "speedup_vs_source_wide", "not_faster_than_source",
          "size_latency_ms")


def _num(value: Any, fmt: str = ".3g") -> str:
    return "—" if value is None else format(value, fmt)


def _latency(lat: dict[str, float] | None) -> str:
    return "—" if not lat else f"{lat['median']:.2f} / {lat['p90']:.2f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def speed(c: CandidateRow, key: str = "speedup") -> str:
    """A speedup with the range of its per-round ratios: `3.01x (2.9–3.1)`."""
    if c.get(key) is None:
        return "—"
    low, high = c.get(f"{key}_range") or (None, None)
    spread = f" ({low:.2f}–{high:.2f})" if low is not None else ""
    return f"{c[key]:.2f}x{spread}" + (" ⚠️ wide" if c.get(f"{key}_wide") else "")


def _vs_source(c: CandidateRow) -> str:
    if "speedup_vs_source" not in c:
        return "—"
    flag = " ⚠️ not faster than its float source" if c["not_faster_than_source"] else ""
    return f"{speed(c, 'speedup_vs_source')} vs `{c['source']}`{flag}"


def _decider(o: dict[str, Any]) -> str:
    if "decided_by" in o:
        return o["decided_by"]
    return "allclose" if o["metric"] == "allclose" else f"{o['metric']} ≥ {o['threshold']:g}"


def _default_rule(tol: dict[str, Any]) -> str:
    if tol.get("metric", "allclose") != "auto":
        return f"{tol.get('metric', 'allclose')}, atol {_num(tol['atol'], 'g')}, " \
               f"rtol {_num(tol['rtol'], 'g')}"
    return (f"auto (per input: allclose at atol {_num(tol['atol'] or 1e-4, 'g')}, rtol "
            f"{_num(tol['rtol'] or 1e-3, 'g')}; or both near zero; or max abs ≤ "
            f"{_num(tol['scale'], 'g')} × the reference's RMS; or as close to eager in "
            "float64 as float32 eager is; or within 4× eager's own change under rounding "
            "noise on every intermediate)")


def markdown(report: dict[str, Any], name: str) -> str:
    ref = report["reference"]
    tol = report["tolerance"]
    lines = [
        f"# {name}: compare",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}** — reference: `{ref['id']}` "
        f"({ref['runs']}), latency median / p90 {_latency(ref['latency_ms'])} ms; ONNX "
        f"candidates on ONNX Runtime's {report.get('provider', 'cpu')} provider.",
        f"Default rule: {_default_rule(tol)}; "
        f"{len(report['samples'])} inputs: {', '.join(report['samples'])}.",
        "",
        "| candidate | artifact | status | max abs | max rel | cosine (min) | top-1 | "
        "latency ms (median / p90) | speedup vs reference | speedup vs float source |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["candidates"]:
        outs = c.get("outputs") or []
        max_rel = max((o["max_rel"] for o in outs), default=None)
        lines.append(
            f"| `{c['id']}` | {c['artifact']} | {mark(c['status'])} | {_num(c.get('max_abs'))} | "
            f"{_num(max_rel)} | {_num(c.get('cosine_min'), '.6f')} | {_pct(c.get('top1'))} | "
            f"{_latency(c.get('latency_ms'))} | {speed(c)} | {_vs_source(c)} |")
    lines += _timing_notes(report)
    problems = [c for c in report["candidates"] if c["status"] != "pass"]
    slower = [c for c in report["candidates"] if c.get("not_faster_than_source")]
    if problems or slower:
        lines += ["", "## Why", ""]
        lines += [f"- **{c['id']}**: {c['reason']}" for c in problems]
        lines += [f"- **{c['id']}** is not faster than `{c['source']}`, the float model it was "
                  f"made from ({c['speedup_vs_source']:.2f}x): this optimization does not pay here"
                  for c in slower]
    lines += ["", "## Per output", "",
              "| candidate | output | pass | decided by | max abs | max rel | cosine min / mean | "
              "top-1 | atol | rtol | worst input |", "|---" * 11 + "|"]
    for c in report["candidates"]:
        for o in c.get("outputs") or []:
            lines.append(
                f"| `{c['id']}` | {o['name']} | {'✅' if o['pass'] else '❌'} | {_decider(o)} | "
                f"{_num(o['max_abs'])} | {_num(o['max_rel'])} | {_num(o['cosine_min'], '.6f')} / "
                f"{_num(o['cosine_mean'], '.6f')} | {_pct(o['top1'])} | {o['atol']:g} | "
                f"{o['rtol']:g} | "
                f"{o['worst_sample'] or '—'} |")
    return "\n".join(lines + _range_end_rows(report)) + "\n"


def _timing_notes(report: dict[str, Any]) -> list[str]:
    """Where the figures come from, and a warning when the rounds disagree."""
    notes = []
    where = report.get("machine")
    if where:
        notes.append(f"Timed interleaved (every model in each round, the order rotated) on "
                     f"{where['cpu']}, {where['cores']} cores, {_clock_words(where)}; a "
                     "speedup is the median of the per-round ratios, their range in brackets.")
    wide = [c["id"] for c in report["candidates"]
            if c.get("speedup_wide") or c.get("speedup_vs_source_wide")]
    if wide:
        notes.append(f"⚠️ The rounds disagree by more than 25% for {', '.join(wide)}: the "
                     "machine was busy while timing; re-measure on a quiet machine "
                     "(`qntz run FILE --remeasure`).")
    return ["", *notes] if notes else []


def _clock_words(where: dict[str, Any]) -> str:
    threads = where.get("timed_threads")
    if where.get("clock") == "cpu":
        return ("each model on one thread, timed by that thread's CPU time (milliseconds of "
                "work, which other processes' load does not stretch)")
    on = f"on {threads} threads" if threads else "on every core"
    return f"each model {on}, timed by the wall clock (figures move with the machine's load)"


def _range_end_rows(report: dict[str, Any]) -> list[str]:
    """The constant range-end inputs, one row each: a normalization over a constant is
    ill-conditioned, so they are judged against how much eager itself moves there."""
    rows = [f"| `{c['id']}` | {o['name']} | {r['sample']} | {'✅' if r['pass'] else '❌'} | "
            f"{r['rule'] or '—'} | {_num(r['max_abs'])} | {_num(r['sensitivity'])} | "
            f"{_num(r['cosine'], '.4f')} |"
            for c in report["candidates"] for o in c.get("outputs") or []
            for r in o.get("range_ends") or []]
    if not rows:
        return []
    return ["", "## Range ends", "",
            "Constant inputs at the range's ends catch frozen branches and baked constants. "
            "\"eager moves\" is the largest change of eager float32 when every intermediate "
            "carries relative noise (rounding for float candidates, the candidate's own error "
            "level under top1/cosine, where these rows stay out of the means and also pass "
            "by that metric on the input alone).", "",
            "| candidate | output | input | pass | rule | max abs | eager moves | cosine |",
            "|---" * 8 + "|", *rows]


def split_timing(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report without wall-clock figures (the same on every run), and those figures."""
    lasting = copy.deepcopy(report)
    reference = lasting["reference"]
    timing: dict[str, Any] = {
        "reference": {"id": reference["id"], "latency_ms": reference.pop("latency_ms", None),
                      "size_latency_ms": reference.pop("size_latency_ms", None)},
        "machine": lasting.pop("machine", None),
        "candidates": {c["id"]: {k: c.pop(k) for k in TIMING if k in c}
                       for c in lasting["candidates"]}}
    return lasting, timing
