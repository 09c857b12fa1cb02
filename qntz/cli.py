"""The command line. The only place that prints errors and chooses exit codes.

argparse rather than Click: one less dependency, and startup time matters for a fully
cached `qntz run`, which must finish in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from qntz import __version__
from qntz.errors import PipelineError, QntzError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line, exit 2
        self.exit(EXIT_USAGE, f"qntz: {message} (see `qntz --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qntz", description="Declarative, cached, verified conversion of "
                     "PyTorch models to ONNX, INT8/FP16 and TensorRT.")
    parser.add_argument("--version", action="version", version=f"qntz {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show tracebacks behind errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a pipeline (only what changed)")
    run.add_argument("file")
    run.add_argument("--step", action="append", metavar="ID",
                     help="run this step and what it needs (repeatable)")
    run.add_argument("--force", action="store_true", help="re-run the selected steps")
    run.add_argument("--jobs", "-j", type=int, default=1, help="independent steps in parallel")
    run.add_argument("--keep-going", action="store_true", help="run other branches after a failure")
    status = sub.add_parser("status", help="what is cached, what is stale and why")
    status.add_argument("file")
    status.add_argument("--step", action="append", metavar="ID")
    status.add_argument("--json", action="store_true")
    validate = sub.add_parser("validate", help="check a pipeline file without running it")
    validate.add_argument("file")
    dag = sub.add_parser("dag", help="print the step graph")
    dag.add_argument("file")
    dag.add_argument("--mermaid", action="store_true")
    steps = sub.add_parser("steps", help="step kinds and their parameters")
    steps.add_argument("kind", nargs="?")
    sub.add_parser("schema", help="print the pipeline JSON Schema")
    cache = sub.add_parser("cache", help="the content cache: dir, verify, gc, clear")
    cache.add_argument("action", choices=["dir", "verify", "gc", "clear"])
    cache.add_argument("--dry-run", action="store_true", help="gc: only say what it would remove")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    # bound to this stdout: a step silencing a library's prints must not silence qntz
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal:
        console = Console(file=sys.stdout, highlight=False, width=120)
    try:
        return COMMANDS[args.command](args, console)
    except QntzError as exc:
        if args.verbose:
            console.print_exception()
        _stderr().print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _session(args: argparse.Namespace) -> Any:
    from qntz.pipeline import load_pipeline
    from qntz.runner import Session
    from qntz.workspace import Workspace

    pipeline = load_pipeline(args.file)
    for sid in getattr(args, "step", None) or []:
        if sid not in pipeline.steps:
            from qntz.pipeline import did_you_mean
            raise PipelineError(f"no step '{sid}'{did_you_mean(sid, list(pipeline.steps))}",
                                where=str(pipeline.path),
                                hint="steps: " + ", ".join(pipeline.steps))
    return Session(pipeline, Workspace.of(pipeline.path.parent))


def cmd_run(args: argparse.Namespace, console: Any) -> int:
    from qntz.progress import ConsoleReporter, compare_table

    if args.jobs < 1:
        raise PipelineError("--jobs must be at least 1", hint="e.g. --jobs 2")
    start = time.perf_counter()
    session = _session(args)
    reporter = ConsoleReporter(console)
    try:
        results = session.run(reporter, args.step, args.force, args.jobs, args.keep_going)
    finally:
        reporter.close()
    out = session.out
    for result in results:
        if result.kind == "compare" and result.artifact is not None:
            compare_table(console, result)
            console.print(f"report: {_relative(out / result.id / 'report.md')}")
    counts: dict[str, int] = {}
    for r in results:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    console.print(f"{len(results)} steps: {summary} in {time.perf_counter() - start:.2f}s "
                  f"→ {_relative(out)}/")
    failed = [r for r in results if r.state in ("failed", "skipped")]
    errors = _stderr()
    for r in failed:
        if r.state == "failed":
            errors.print(f"[red]error:[/] {escape(str(r.error or r.reason))}", soft_wrap=True)
    codes = [r.error.exit_code for r in failed if r.error] or ([EXIT_FAILED] if failed else [])
    return max(codes, default=EXIT_OK)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_status(args: argparse.Namespace, console: Any) -> int:
    session = _session(args)
    states = session.status(args.step)
    if args.json:
        print(json.dumps({"pipeline": args.file, "steps": [s.as_dict() for s in states.values()]},
                         indent=1))
        return EXIT_OK
    for state in states.values():
        mark = "[dim]•[/] cached" if state.state == "cached" else "[yellow]○[/] stale "
        console.print(f"{mark}  [bold]{state.id}[/] [dim]({state.kind})[/]  {state.reason}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, console: Any) -> int:
    from qntz.pipeline import load_pipeline

    pipeline = load_pipeline(args.file)
    console.print(f"{args.file}: ok — {len(pipeline.steps)} steps: "
                  + " → ".join(pipeline.order()))
    return EXIT_OK


def cmd_dag(args: argparse.Namespace, console: Any) -> int:
    from qntz.pipeline import load_pipeline

    pipeline = load_pipeline(args.file)
    if args.mermaid:
        print("graph TD")
        for sid in pipeline.order():
            spec = pipeline.steps[sid]
            print(f'  {sid}["{sid}<br/>{spec.kind}"]')
            for need in spec.needs:
                print(f"  {need} --> {sid}")
        return EXIT_OK
    for sid in pipeline.order():
        spec = pipeline.steps[sid]
        needs = f"  ← {', '.join(spec.needs)}" if spec.needs else ""
        console.print(f"[bold]{sid}[/] [dim]({spec.kind})[/]{needs}")
    return EXIT_OK


def cmd_steps(args: argparse.Namespace, console: Any) -> int:
    from qntz.steps import KINDS

    kinds = [args.kind] if args.kind else list(KINDS)
    for name in kinds:
        if name not in KINDS:
            from qntz.pipeline import did_you_mean
            raise PipelineError(f"unknown step kind '{name}'{did_you_mean(name, list(KINDS))}",
                                hint="run `qntz steps` for the list")
        kind = KINDS[name]
        console.print(f"[bold]{name}[/] (v{kind.version}): {kind.help}")
        for param, spec in kind.params.items():
            kind_of = spec.get("type") or list(map(str, spec.get("enum", [])))
            kind_of = " | ".join(kind_of) if isinstance(kind_of, list) else kind_of
            default = f" = {spec['default']!r}" if "default" in spec else ""
            text = f" — {spec['description']}" if "description" in spec else ""
            console.print(f"    {param}: {kind_of}{default}{text}", highlight=False)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, console: Any) -> int:
    from qntz.schema import full_schema

    print(json.dumps(full_schema(), indent=2))
    return EXIT_OK


def cmd_cache(args: argparse.Namespace, console: Any) -> int:
    from qntz import cache_admin
    from qntz.workspace import Workspace

    workspace = Workspace.of(Path.cwd())
    if args.action == "dir":
        print(workspace.cache_dir)
        return EXIT_OK
    if args.action == "verify":
        return cache_admin.verify(workspace, console)
    if args.action == "gc":
        return cache_admin.gc(workspace, console, args.dry_run)
    removed = cache_admin.clear(workspace)
    console.print(f"removed {_plural(removed, 'cache entry', 'cache entries')} from "
                  f"{workspace.cache_dir}")
    return EXIT_OK


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


COMMANDS = {"run": cmd_run, "status": cmd_status, "validate": cmd_validate, "dag": cmd_dag,
            "steps": cmd_steps, "schema": cmd_schema, "cache": cmd_cache}


def entry() -> None:
    sys.exit(main())
