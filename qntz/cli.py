"""The command line. The only place that prints errors and chooses exit codes.

argparse rather than Click: one less dependency, and startup time matters for a fully
cached `qntz run`, which must finish in a fraction of a second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape

import qntz.core.progress as progress
from qntz import __version__
from qntz import cli_inspect as inspect
from qntz.core.errors import PipelineError, QntzError
from qntz.core.wording import plural

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line, exit 2
        self.exit(EXIT_USAGE, f"qntz: {message} (see `qntz --help`)\n")


def _global_options(json_output: bool) -> argparse.ArgumentParser:
    """Options that work before or after the subcommand (`qntz -v run p.yaml` and
    `qntz run p.yaml -v`); SUPPRESS keeps a subcommand from resetting what came before."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback and every cause behind an error")
    if json_output:
        common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qntz", parents=[_global_options(False)],
                     description="Declarative, cached, verified conversion of PyTorch models "
                     "to ONNX, INT8/FP16 and TensorRT.")
    parser.add_argument("--version", action="version", version=f"qntz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    plain, with_json = [_global_options(False)], [_global_options(True)]
    run = sub.add_parser("run", parents=with_json, help="run pipelines (only what changed)")
    run.add_argument("file", nargs="+")
    run.add_argument("--step", action="append", metavar="ID",
                     help="run this step and what it needs (repeatable)")
    run.add_argument("--force", action="store_true", help="re-run the selected steps")
    run.add_argument("--jobs", "-j", type=int, default=1, help="independent steps in parallel")
    run.add_argument("--keep-going", action="store_true", help="run other branches after a failure")
    run.add_argument("--no-remote", action="store_true", help="leave the remote cache alone")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="ray: each step a Ray task (needs a remote cache; pip install "
                     "'qntz[ray]')")
    run.add_argument("--address", help="the Ray cluster to join (default: start a local one)")
    run.add_argument("--report", action="store_true",
                     help="also write out/<name>/report.html (as `qntz report`)")
    status = sub.add_parser("status", parents=with_json,
                            help="what is cached, what is stale and why")
    status.add_argument("file")
    status.add_argument("--step", action="append", metavar="ID")
    status.add_argument("--remote", action="store_true", help="also say what the remote has")
    push = sub.add_parser("push", parents=plain, help="upload the lock file's entries")
    push.add_argument("file")
    pull = sub.add_parser("pull", parents=plain, help="download the lock file's entries")
    pull.add_argument("file")
    pull.add_argument("--step", action="append", metavar="ID")
    validate = sub.add_parser("validate", parents=with_json,
                              help="check a pipeline file without running it")
    validate.add_argument("file")
    dag = sub.add_parser("dag", parents=with_json, help="print the step graph")
    dag.add_argument("file")
    dag.add_argument("--mermaid", action="store_true")
    steps = sub.add_parser("steps", parents=with_json, help="step kinds and their parameters")
    steps.add_argument("kind", nargs="?")
    sub.add_parser("schema", parents=plain, help="print the pipeline JSON Schema")
    cache = sub.add_parser("cache", parents=plain,
                           help="the content cache: dir, verify, gc, clear")
    cache.add_argument("action", choices=["dir", "verify", "gc", "clear"])
    cache.add_argument("--dry-run", action="store_true", help="gc: only say what it would remove")
    cache.add_argument("--yes", "-y", action="store_true",
                       help="clear: do not ask for confirmation on a terminal")
    inspect.add_parsers(sub, plain, with_json)
    init = sub.add_parser("init", parents=plain,
                          help="write a starter pipeline for a model factory, inputs guessed")
    init.add_argument("factory", help="module.path:attr, found next to the output file first")
    init.add_argument("-o", "--output", default="pipeline.yaml", help="the file to write")
    init.add_argument("--kwargs", default=None, metavar="JSON",
                      help='the factory\'s keyword arguments, e.g. \'{"num_classes": 10}\'')
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    args.json = getattr(args, "json", False)
    console, errors = progress.consoles()
    args.errors = errors
    try:
        return COMMANDS[args.command](args, console)
    except QntzError as exc:
        report_error(errors, exc, args.verbose)
        if args.json:
            print(json.dumps({"ok": False, "error": error_dict(exc)}, indent=1))
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("[red]error:[/] interrupted; what was being built is discarded "
                     "(its temporary folder goes at the next run or `qntz cache gc`)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `qntz schema | head`: the reader left; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: still one line, the traceback with -v
        from qntz.core.errors import first_line

        error = QntzError(f"unexpected error: {type(exc).__name__}: {first_line(exc, 200)}",
                          hint="run with -v for the traceback; if it is in qntz, please "
                          "report it")
        error.__cause__ = exc
        report_error(errors, error, args.verbose)
        return EXIT_FAILED


def report_error(errors: Any, exc: BaseException, verbose: bool) -> None:
    """One line with the cause chain; with -v the traceback of each cause as well."""
    if verbose:
        from rich.traceback import Traceback

        errors.print(Traceback.from_exception(type(exc), exc, exc.__traceback__))
    errors.print(f"[red]error:[/] {escape(str(exc))}{escape(_causes(exc, verbose))}",
                 soft_wrap=True)


def _causes(exc: BaseException, verbose: bool) -> str:
    """`caused by` for a QntzError's cause; in full with -v, its first line otherwise."""
    from qntz.core.errors import first_line

    texts = []
    cause = exc.__cause__
    while cause is not None and verbose:
        texts.append(f"{type(cause).__name__}: {' '.join(str(cause).split())}")
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    if not verbose and cause is not None and not isinstance(cause, QntzError):
        text = f"{type(cause).__name__}: {first_line(cause)}"
        if first_line(cause) not in str(exc):
            texts.append(text)
    return "".join(f"; caused by {t}" for t in texts)


def error_dict(exc: QntzError) -> dict[str, Any]:
    return {"message": exc.message, "where": exc.where, "hint": exc.hint,
            "type": type(exc).__name__, "exit_code": exc.exit_code}


def cmd_run(args: argparse.Namespace, console: Any) -> int:
    from qntz import api
    from qntz.core.progress import ConsoleReporter

    start = time.perf_counter()
    pipelines = [api.load_pipeline(f) for f in args.file]  # all checked before any runs
    reporter = None if args.json else ConsoleReporter(console)
    try:
        with _stdout_aside() if args.json else contextlib.nullcontext():
            results = _run(api, args, pipelines, reporter)
    finally:
        if reporter is not None:
            reporter.close()
    if args.json:
        documents = [_run_document(r) for r in results]
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=1))
    else:
        for result in results:
            _show_run(console, result, start)
    if args.report:  # after the results: a report that cannot be written loses none of them
        for result in results:
            page = api.report(result.pipeline)
            if not args.json:
                console.print(f"report: {escape(_relative(page))}")
    shown = None if args.json else args.errors
    return max((_exit_code(r, args.verbose, shown) for r in results), default=EXIT_OK)


def _run(api: Any, args: argparse.Namespace, pipelines: list[Any], reporter: Any) -> list[Any]:
    if args.executor == "ray":
        return api.run_all(pipelines, "ray", args.address, reporter)
    return [api.run(p, args.step, args.jobs, args.force, args.keep_going, reporter,
                    remote=not args.no_remote) for p in pipelines]


@contextlib.contextmanager
def _stdout_aside() -> Iterator[None]:
    """With --json, stdout carries the document only: whatever a model or a library prints
    while the steps run (Python or C level) goes to stderr."""
    sys.stdout.flush()
    saved, python_stdout = os.dup(1), sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout = python_stdout


def _run_document(result: Any) -> dict[str, Any]:
    return {"ok": result.ok, "pipeline": str(result.pipeline), "out": str(result.out),
            "lock": str(result.lock), "steps": [s.as_dict() for s in result.steps.values()],
            "placement": result.placement}


def _show_run(console: Any, result: Any, start: float) -> None:
    from qntz import api

    steps = list(result.steps.values())
    for step in steps:
        kind = api.step_kinds().get(step.kind)
        for detail in (kind.details(step.id, step.summary) if kind and step.files else []):
            console.print(detail)
        if "report.md" in step.files:
            console.print(f"report: {_relative(step.files['report.md'])}")
    for sid, where in result.placement.items():
        offers = f" ({', '.join(where['node_resources'])})" if where["node_resources"] else ""
        console.print(f"  {escape(sid)}: {where['state']} on node {where['node'][:12]} "
                      f"{where['node_ip']}{escape(offers)}")
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.state] = counts.get(s.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    console.print(f"{plural(len(steps), 'step')}: {summary} in "
                  f"{time.perf_counter() - start:.2f}s → {_relative(result.out)}/")


def _exit_code(result: Any, verbose: bool, errors: Any) -> int:
    """The run's exit code, after its warnings and errors on `errors` (None: say nothing)."""
    failed = [s for s in result.steps.values() if s.state in ("failed", "skipped")]
    if errors is not None:
        for warning in result.warnings:
            errors.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
        for s in failed:
            if s.state == "failed" and s.error is not None:
                report_error(errors, s.error, verbose)
    codes = [s.error.exit_code for s in failed if s.error] or ([EXIT_FAILED] if failed else [])
    return max(codes, default=EXIT_OK)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


MARKS = {"cached": "[dim]•[/] cached ", "stale": "[yellow]○[/] stale  ",
         "pending": "[dim]?[/] pending"}


def cmd_status(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    states = api.status(args.file, args.step)
    remote = api.remote_has(args.file, states) if args.remote else {}
    if args.json:
        print(json.dumps({"pipeline": args.file, "steps": [
            {**s.as_dict(), **({"remote": remote.get(s.id)} if args.remote else {})}
            for s in states.values()]}, indent=1))
        return EXIT_OK
    for state in states.values():
        where = {True: "  [dim](on the remote)[/]", False: "  [dim](not on the remote)[/]"}.get(
            remote.get(state.id), "")
        console.print(f"{MARKS[state.state]}  [bold]{escape(state.id)}[/] "
                      f"[dim]({state.kind})[/]  {escape(state.reason)}{where}")
    return EXIT_OK


def cmd_push(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    for sid, what in api.push(args.file).items():
        console.print(f"{escape(sid)}: {what}")
    return EXIT_OK


def cmd_pull(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    done = api.pull(args.file, args.step)
    for sid, what in done.items():
        console.print(f"{escape(sid)}: {what}")
    return EXIT_FAILED if "not on the remote" in done.values() else EXIT_OK


def cmd_validate(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    pipeline = api.validate(args.file)
    if args.json:
        print(json.dumps({"ok": True, "file": args.file, "name": pipeline.name,
                          "steps": pipeline.order()}, indent=1))
        return EXIT_OK
    console.print(f"{escape(args.file)}: ok — {plural(len(pipeline.steps), 'step')}: "
                  + escape(" → ".join(pipeline.order())))
    return EXIT_OK


def cmd_dag(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    pipeline = api.load_pipeline(args.file)
    steps = [pipeline.steps[sid] for sid in pipeline.order()]
    if args.json:
        print(json.dumps({"steps": [{"id": s.id, "kind": s.kind, "needs": list(s.needs)}
                                    for s in steps]}, indent=1))
    elif args.mermaid:
        print("graph TD")
        for spec in steps:
            print(f'  {spec.id}["{spec.id}<br/>{spec.kind}"]')
            for need in spec.needs:
                print(f"  {need} --> {spec.id}")
    else:
        for spec in steps:
            needs = f"  ← {', '.join(spec.needs)}" if spec.needs else ""
            console.print(f"[bold]{escape(spec.id)}[/] [dim]({spec.kind})[/]{escape(needs)}")
    return EXIT_OK


def cmd_steps(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    registered = api.step_kinds()
    kinds = [args.kind] if args.kind else list(registered)
    for name in kinds:
        if name not in registered:
            from qntz.core.wording import did_you_mean
            raise PipelineError(f"unknown step kind '{name}'{did_you_mean(name, list(registered))}",
                                hint="run `qntz steps` for the list")
    if args.json:
        print(json.dumps({"kinds": [{"kind": n, "version": registered[n].version,
                                     "help": registered[n].help, "schema": registered[n].schema()}
                                    for n in kinds]}, indent=1))
        return EXIT_OK
    for name in kinds:
        kind = registered[name]
        console.print(f"[bold]{name}[/] (v{kind.version}): {escape(kind.help)}")
        for param, spec in kind.params.items():
            kind_of = spec.get("type") or list(map(str, spec.get("enum", [])))
            kind_of = " | ".join(kind_of) if isinstance(kind_of, list) else kind_of
            default = f" = {spec['default']!r}" if "default" in spec else ""
            text = f" — {spec['description']}" if "description" in spec else ""
            console.print(escape(f"    {param}: {kind_of}{default}{text}"), highlight=False)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    print(json.dumps(api.schema(), indent=2))
    return EXIT_OK


def cmd_cache(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    if args.action == "dir":
        print(api.cache("dir"))
        return EXIT_OK
    if args.action in ("verify", "gc"):
        return api.cache(args.action, console, args.dry_run)
    folder = api.cache("dir")
    if not args.yes and sys.stdin.isatty() and not _confirmed(f"remove every entry of {folder}?"):
        console.print("nothing removed")
        return EXIT_OK
    removed, kept = api.cache("clear")
    in_use = f"; kept {kept} in use by a running qntz" if kept else ""
    console.print(f"removed {plural(removed, 'cache entry', 'cache entries')} from "
                  f"{folder}{in_use}")
    return EXIT_OK


def _confirmed(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_init(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    kwargs = None
    if args.kwargs is not None:
        try:
            kwargs = json.loads(args.kwargs)
        except ValueError as exc:
            raise PipelineError(f"--kwargs is not JSON: {exc}", hint="write an object, "
                                'e.g. --kwargs \'{"num_classes": 10}\'') from exc
        if not isinstance(kwargs, dict):
            raise PipelineError("--kwargs must be a JSON object", hint='e.g. \'{"layers": 2}\'')
    path = api.init(args.factory, args.output, kwargs, args.force)
    console.print(f"wrote {escape(_relative(path))}; next: qntz run {escape(_relative(path))}")
    return EXIT_OK


COMMANDS = {"run": cmd_run, "status": cmd_status, "validate": cmd_validate, "dag": cmd_dag,
            "steps": cmd_steps, "schema": cmd_schema, "cache": cmd_cache, "push": cmd_push,
            "pull": cmd_pull, "init": cmd_init}
COMMANDS.update(inspect.COMMANDS)


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    except KeyboardInterrupt:  # outside main's own handler (e.g. while argparse prints)
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        # a step still running in a worker thread cannot be stopped, and exiting normally
        # would wait for it; its temp folder is swept the next time its key is locked
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
