"""The CLI's commands that look back at a run: `report`, `explain` and `diff`.

Kept apart from `qntz.cli` (which registers them) so the run commands stay one screen.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape

from qntz.core.errors import PipelineError

EXIT_OK = 0
PIPELINE_SUFFIXES = (".yaml", ".yml")


def add_parsers(sub: Any, plain: list[Any], with_json: list[Any]) -> None:
    report = sub.add_parser("report", parents=with_json,
                            help="write out/<name>/report.html for the last run")
    report.add_argument("file")
    explain = sub.add_parser("explain", parents=with_json,
                             help="where a step's ONNX model diverges from its float source")
    explain.add_argument("file")
    explain.add_argument("step")
    diff = sub.add_parser("diff", parents=with_json,
                          help="lock file at a git revision (default HEAD) against now: "
                          "what changed and why, accuracy before → after")
    diff.add_argument("args", nargs="*", metavar="REV | FILE",
                      help="a git revision and/or pipeline files (default: every lock file "
                      "git tracks under the current folder)")


def shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_report(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    page = api.report(args.file)
    if args.json:
        print(json.dumps({"ok": True, "pipeline": args.file, "report": str(page)}, indent=1))
    else:
        console.print(f"report: {escape(shown_path(page))}")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    found = api.explain(args.file, args.step)
    if args.json:
        print(json.dumps(found, indent=1))
        return EXIT_OK
    console.print(f"[bold]{escape(args.step)}[/] against [bold]{escape(found['source'])}[/] "
                  f"on input {escape(str(found['input']))}: {escape(found['summary'])}")
    for rank, layer in enumerate(found["layers"], start=1):
        console.print(escape(
            f"{rank:>3}. {layer['module'] or '?'}  {layer['node']}  {layer['op']} "
            f"({layer['precision']})  error added {layer['error_added']:.3g}, "
            f"cosine {layer['cosine']:.4f}"), highlight=False)
    return EXIT_OK


def _diff_args(values: list[str]) -> tuple[str, list[str]]:
    files = [v for v in values if v.endswith(PIPELINE_SUFFIXES) or Path(v).is_file()]
    revs = [v for v in values if v not in files]
    if len(revs) > 1:
        raise PipelineError(f"one revision at most, got {', '.join(revs)}",
                            hint="qntz diff [REV] [FILE ...]")
    return (revs[0] if revs else "HEAD"), files


def _figure(value: Any) -> str:
    return "—" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _show_diff(console: Any, found: dict[str, Any]) -> None:
    console.print(f"[bold]{escape(shown_path(Path(found['lock'])))}[/]: "
                  f"{escape(found['rev'])} → working tree")
    if not found["steps"] and not found["figures"]:
        console.print("  no change")
    for step in found["steps"]:
        why = f": {'; '.join(step['reasons'])}" if step["reasons"] else ""
        console.print(escape(f"  {step['id']} ({step['kind']}) {step['change']}{why}"),
                      highlight=False)
    for row in found["figures"]:
        if not row["changed"] and row["old"] == row["new"]:
            continue
        change = "" if row["change"] is None else " (same)" if row["change"] == 0 else \
            f" ({row['change']:+.4g})"
        status = row["status"]
        moved = f", {status['old']} → {status['new']}" if status["old"] != status["new"] else ""
        console.print(escape(f"  {row['step']}: {row['candidate']} {row['metric']} "
                             f"{_figure(row['old'])} → {_figure(row['new'])}{change}{moved}"),
                      highlight=False)


def cmd_diff(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    rev, files = _diff_args(args.args)
    found = api.diff(files or None, rev)
    if args.json:
        print(json.dumps(found[0] if len(files) == 1 else found, indent=1))
        return EXIT_OK
    if not found:  # not silent: an empty answer looks like "nothing changed"
        console.print(f"no lock file git tracks under {escape(shown_path(Path.cwd()) or '.')}"
                      " (commit a pipeline's .lock.json, or name the pipeline files)")
    for one in found:
        _show_diff(console, one)
    return EXIT_OK


COMMANDS = {"report": cmd_report, "explain": cmd_explain, "diff": cmd_diff}
