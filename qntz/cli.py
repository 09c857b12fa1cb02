"""The command line. The only place that prints errors and chooses exit codes.

argparse rather than Click: one less dependency, and startup time matters for a fully
cached `qntz run`, which must finish in a fraction of a second.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

import qntz.cli_progress as progress
from qntz import __version__, cli_shell
from qntz import cli_inspect as inspect
from qntz.core.errors import PipelineError, QntzError
from qntz.core.process import discard_output, stdout_to_stderr
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
    parser.add_argument("--version", action=cli_shell.VersionAction, version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    plain, with_json = [_global_options(False)], [_global_options(True)]
    run = sub.add_parser("run", parents=with_json, help="run pipelines (only what changed)")
    run.add_argument("file", nargs="+", help="pipeline files, or folders of them (*.yaml)")
    run.add_argument("--dry-run", action="store_true",
                     help="say what would run and why; run and write nothing")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="print only errors and the final line")
    run.add_argument("--log-file", metavar="PATH", help="append the run's lines to PATH")
    _set_option(run)
    run.add_argument("--step", action="append", metavar="ID",
                     help="run this step and what it needs (repeatable)")
    run.add_argument("--force", action="store_true", help="re-run the selected steps")
    run.add_argument("--jobs", "-j", type=int, default=1, help="independent steps in parallel")
    run.add_argument("--keep-going", action="store_true", help="run other branches after a failure")
    run.add_argument("--remeasure", action="store_true",
                     help="re-run the compare steps (fresh latency figures), nothing else")
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
    status.add_argument("--check", action="store_true",
                        help="exit 1 when a step is stale or never ran (for CI)")
    status.add_argument("-q", "--quiet", action="store_true",
                        help="--check, printing nothing (as `dvc status -q`)")
    _set_option(status)
    push = sub.add_parser("push", parents=with_json, help="upload the lock file's entries")
    push.add_argument("file")
    pull = sub.add_parser("pull", parents=with_json, help="download the lock file's entries")
    pull.add_argument("file")
    pull.add_argument("--step", action="append", metavar="ID")
    validate = sub.add_parser("validate", parents=with_json,
                              help="check a pipeline file without running it")
    validate.add_argument("file")
    _set_option(validate)
    dag = sub.add_parser("dag", parents=with_json, help="print the step graph")
    dag.add_argument("file")
    dag.add_argument("--mermaid", action="store_true")
    steps = sub.add_parser("steps", parents=with_json, help="step kinds and their parameters")
    steps.add_argument("kind", nargs="?")
    sub.add_parser("schema", parents=plain, help="print the pipeline JSON Schema")
    cache = sub.add_parser("cache", parents=with_json,
                           help="the content cache: dir, verify, gc, clear")
    cache.add_argument("action", choices=["dir", "verify", "gc", "clear"])
    cache.add_argument("--dry-run", action="store_true", help="gc: only say what it would remove")
    cache.add_argument("--yes", "-y", action="store_true",
                       help="clear: do not ask for confirmation on a terminal")
    inspect.add_parsers(sub, plain, with_json)
    cli_shell.add_parser(sub, plain)
    init = sub.add_parser("init", parents=with_json,
                          help="write a starter pipeline for a model factory, inputs guessed")
    init.add_argument("factory", help="module.path:attr, found next to the output file first")
    init.add_argument("-o", "--output", default="pipeline.yaml", help="the file to write")
    init.add_argument("--kwargs", default=None, metavar="JSON",
                      help='the factory\'s keyword arguments, e.g. \'{"num_classes": 10}\'')
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument("--run", action="store_true", help="then run it (as `qntz run`)")
    return parser


def _set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                        dest="overrides", help="override a step's parameter (repeatable; the "
                        "value is YAML, e.g. --set onnx.opset=18); validated and locked as "
                        "if written in the file")


def overrides(values: list[str]) -> dict[str, Any]:
    """`--set` values as {"step.param": value}, each value read as YAML (18, entropy, [1, 2])."""
    import yaml

    found: dict[str, Any] = {}
    for item in values:
        name, equals, text = item.partition("=")
        if not equals or "." not in name or not all(name.split(".")):
            raise PipelineError(f"--set {item}: expected STEP.PARAM=VALUE",
                                hint="e.g. --set onnx.opset=18 or --set int8.method=entropy")
        try:
            found[name] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PipelineError(f"--set {item}: the value is not YAML",
                                hint="quote it for the shell and YAML, e.g. "
                                "--set 'step.param=\"text\"'") from exc
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser = parser
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
        errors.print("[red]error:[/] interrupted", soft_wrap=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `qntz schema | head`: the reader left; so do we, quietly
        discard_output(sys.stdout)
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
    log = _log_file(args.log_file) if args.log_file else None
    if log is not None:
        log.print(escape(f"# qntz run {' '.join(args.file)}  "
                         f"({time.strftime('%Y-%m-%d %H:%M:%S %z')})"))
    try:
        return _run_command(args, _Tee(console, log), _Tee(args.errors, log), log)
    except QntzError as exc:  # main prints it on the terminal; the log keeps it too
        if log is not None:
            report_error(log, exc, args.verbose)
        raise
    finally:
        if log is not None:
            log.file.close()


def _log_file(path: str) -> Any:
    try:
        return progress.log_console(path)
    except OSError as exc:
        raise PipelineError(f"--log-file {path}: {exc.strerror or exc}",
                            hint="name a file in an existing, writable folder") from exc


class _Tee:
    """Prints on a console and, with --log-file, appends the same line to the log; `console`
    None (with -q) leaves only the log."""

    def __init__(self, console: Any, log: Any):
        self.targets = [t for t in (console, log) if t is not None]

    def print(self, *objects: Any, **options: Any) -> None:
        for target in self.targets:
            target.print(*objects, **options)


def _run_command(args: argparse.Namespace, out: _Tee, errors: _Tee, log: Any) -> int:
    from qntz import api

    start = time.perf_counter()
    codes: list[int] = []
    pipelines = _load_all(api, args, errors, codes)  # all checked before any runs
    if args.dry_run:
        return max([*codes, _dry_run(api, args, pipelines, out)])
    reporter = None if args.json else progress.ConsoleReporter(
        out.targets[0], quiet=args.quiet, log=log)
    try:
        with stdout_to_stderr() if args.json else contextlib.nullcontext():
            results = _run(api, args, pipelines, reporter, errors, codes)
    finally:
        if reporter is not None:
            reporter.close()
    details = _Tee(None, log) if args.quiet else out
    if args.json:
        documents = [_run_document(r) for _, r in results]
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=1))
    else:
        for _, result in results:
            _show_run(details, out, result, start)
    if args.report:  # after the results: a report that cannot be written loses none of them
        for pipeline, _ in results:
            page = api.report(pipeline)
            if not args.json:
                details.print(f"report: {escape(_relative(page))}")
    shown = None if args.json else errors
    return max([*codes, *(_exit_code(r, args.verbose, shown) for _, r in results)],
               default=EXIT_OK)


def pipeline_files(values: list[str]) -> list[Path]:
    """The files named, a folder standing for its *.yaml and *.yml files (sorted)."""
    files: list[Path] = []
    for value in values:
        path = Path(value)
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
        if not found:
            raise PipelineError(f"{value} holds no pipeline file (*.yaml, *.yml)",
                                where=value, hint="name a folder of pipelines, or the files")
        files.extend(found)
    return files


def _load_all(api: Any, args: argparse.Namespace, errors: _Tee, codes: list[int]) -> list[Any]:
    """Every pipeline, loaded and checked; with --keep-going a file that cannot load (or
    cannot run here: a step needing an extra that is not installed) is one error line."""
    sets = overrides(args.overrides)
    if sets and args.executor == "ray":  # its workers load the pipeline file again
        raise PipelineError("--set does not reach Ray workers: they read the pipeline file",
                            hint="write the parameters in the file, or run with --executor "
                            "local")
    loaded = [_or_reported(args, errors, codes, api.load_pipeline, path, sets)
              for path in pipeline_files(args.file)]
    return [p for p in loaded if p is not None]


def _or_reported(args: argparse.Namespace, errors: Any, codes: list[int], call: Any,
                 *options: Any) -> Any:
    """`call(*options)`; with --keep-going (and no --json) a QntzError is one error line,
    its exit code kept in `codes`, and None."""
    try:
        return call(*options)
    except QntzError as exc:
        if not args.keep_going or args.json:
            raise
        report_error(errors, exc, args.verbose)
        codes.append(exc.exit_code)
        return None


def _run(api: Any, args: argparse.Namespace, pipelines: list[Any], reporter: Any,
         errors: _Tee, codes: list[int]) -> list[tuple[Any, Any]]:
    if args.executor == "ray":
        return list(zip(pipelines, api.run_all(pipelines, "ray", args.address, reporter),
                        strict=True))
    import functools

    run = functools.partial(api.run, remote=not args.no_remote)
    done = []
    for pipeline in pipelines:
        steps, force = args.step, args.force
        if args.remeasure:  # the compare steps forced; what they compare comes from the cache
            steps = [s for s in pipeline.order() if pipeline.steps[s].kind == "compare"]
            steps, force = steps or args.step, bool(steps) or args.force
        result = _or_reported(args, errors, codes, run, pipeline, steps, args.jobs, force,
                              args.keep_going, reporter)
        if result is not None:
            done.append((pipeline, result))
    return done


WOULD = {"stale": "[yellow]○[/] would run", "pending": "[dim]?[/] may run  ",
         "cached": "[dim]•[/] cached   "}


def _dry_run(api: Any, args: argparse.Namespace, pipelines: list[Any], out: _Tee) -> int:
    """What `run` would do, from the plan (as `status`): nothing is run or written."""
    documents = []
    for pipeline in pipelines:
        states = api.status(pipeline, args.step)
        if args.force:
            for state in states.values():
                state.state, state.reason = "stale", "forced"
        documents.append({"pipeline": str(pipeline.path), "steps": [
            s.as_dict() for s in states.values()]})
        if args.json:
            continue
        count = {state: sum(s.state == state for s in states.values()) for state in WOULD}
        out.print(f"[bold]{escape(_relative(pipeline.path))}[/]: "
                  f"{plural(count['stale'], 'step')} would run, {count['pending']} may re-run "
                  f"after them, {count['cached']} cached (dry run)")
        for state in states.values():
            out.print(f"  {WOULD[state.state]}  [bold]{escape(state.id)}[/] "
                      f"[dim]({state.kind})[/]  {escape(state.reason)}", soft_wrap=True)
    if args.json:
        print(json.dumps({"dry_run": True, "pipelines": documents}, indent=1))
    else:
        out.print("dry run: nothing was run or written")
    return EXIT_OK


def _run_document(result: Any) -> dict[str, Any]:
    return {"ok": result.ok, "pipeline": str(result.pipeline), "out": str(result.out),
            "lock": str(result.lock), "steps": [s.as_dict() for s in result.steps.values()],
            "placement": result.placement}


def _show_run(console: Any, final: Any, result: Any, start: float) -> None:
    """The steps' details (compare's table...) on `console`, the summary line on `final`."""
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
    final.print(f"{plural(len(steps), 'step')}: {summary} in "
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

    pipeline = api.load_pipeline(args.file, overrides(args.overrides))
    states = api.status(pipeline, args.step)
    remote = api.remote_has(pipeline, states) if args.remote else {}
    # --check / -q: CI fails when the lock's artifacts are not what the pipeline now makes
    behind = (args.check or args.quiet) and any(s.state != "cached" for s in states.values())
    code = EXIT_FAILED if behind else EXIT_OK
    if args.json:
        print(json.dumps({"pipeline": args.file, "steps": [
            {**s.as_dict(), **({"remote": remote.get(s.id)} if args.remote else {})}
            for s in states.values()]}, indent=1))
        return code
    for state in states.values() if not args.quiet else ():
        where = {True: "  [dim](on the remote)[/]", False: "  [dim](not on the remote)[/]"}.get(
            remote.get(state.id), "")
        console.print(f"{MARKS[state.state]}  [bold]{escape(state.id)}[/] "
                      f"[dim]({state.kind})[/]  {escape(state.reason)}{where}")
    return code


def cmd_push(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    return _per_step(args, console, api.push(args.file), EXIT_OK)


def cmd_pull(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    done = api.pull(args.file, args.step)
    return _per_step(args, console, done,
                     EXIT_FAILED if "not on the remote" in done.values() else EXIT_OK)


def _per_step(args: argparse.Namespace, console: Any, done: dict[str, str], code: int) -> int:
    if args.json:
        print(json.dumps({"ok": code == EXIT_OK, "pipeline": args.file, "steps": done},
                         indent=1))
        return code
    for sid, what in done.items():
        console.print(f"{escape(sid)}: {what}")
    return code


def cmd_validate(args: argparse.Namespace, console: Any) -> int:
    from qntz import api

    pipeline = api.validate(args.file, overrides(args.overrides))
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
        folder = api.cache("dir")
        print(json.dumps({"action": "dir", "cache": str(folder)}, indent=1) if args.json
              else folder)
        return EXIT_OK
    if args.action in ("verify", "gc"):
        shown = _recording() if args.json else console
        code = api.cache(args.action, shown, args.dry_run)
        if args.json:  # what verify and gc say, line by line
            lines = shown.export_text().splitlines()
            print(json.dumps({"action": args.action, "ok": code == EXIT_OK, "exit_code": code,
                              "dry_run": args.dry_run, "lines": lines}, indent=1))
        return code
    folder = api.cache("dir")
    if not args.yes and sys.stdin.isatty():
        if args.json:
            raise PipelineError("cache clear --json does not ask: pass --yes as well",
                                hint="qntz cache clear --yes --json")
        if not _confirmed(f"remove every entry of {folder}?"):
            console.print("nothing removed")
            return EXIT_OK
    removed, kept = api.cache("clear")
    if args.json:
        print(json.dumps({"action": "clear", "cache": str(folder), "removed": removed,
                          "kept_in_use": kept}, indent=1))
        return EXIT_OK
    in_use = f"; kept {kept} in use by a running qntz" if kept else ""
    console.print(f"removed {plural(removed, 'cache entry', 'cache entries')} from "
                  f"{folder}{in_use}")
    return EXIT_OK


def _recording() -> Any:
    """A console that keeps what is printed on it, as plain text, for a --json document."""
    from rich.console import Console

    return Console(file=io.StringIO(), record=True, color_system=None, width=200,
                   highlight=False)


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
    shown = escape(_relative(path))
    if not args.run:
        if args.json:
            print(json.dumps({"ok": True, "wrote": str(path), "next": f"qntz run {shown}"},
                             indent=1))
        else:
            console.print(f"wrote {shown}; next: qntz run {shown}")
        return EXIT_OK
    if not args.json:
        console.print(f"wrote {shown}; running it")
    run = build_parser().parse_args(["run", str(path), *(["--json"] if args.json else [])])
    run.verbose, run.errors = args.verbose, args.errors
    if not args.json:
        return cmd_run(run, console)
    with contextlib.redirect_stdout(io.StringIO()) as document:
        code = cmd_run(run, console)
    print(json.dumps({"ok": code == EXIT_OK, "wrote": str(path),
                      "run": json.loads(document.getvalue())}, indent=1))
    return code


COMMANDS = {"run": cmd_run, "status": cmd_status, "validate": cmd_validate, "dag": cmd_dag,
            "steps": cmd_steps, "schema": cmd_schema, "cache": cmd_cache, "push": cmd_push,
            "pull": cmd_pull, "init": cmd_init}
COMMANDS.update(inspect.COMMANDS)
COMMANDS.update(cli_shell.COMMANDS)


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        discard_output(sys.stdout)
        code = EXIT_OK
    except KeyboardInterrupt:  # outside main's own handler (e.g. while argparse prints)
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        # a step still running in a worker thread cannot be stopped, and exiting normally
        # would wait for it; its temp folder is swept the next time its key is locked
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
