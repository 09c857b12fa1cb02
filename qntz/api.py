"""The Python API for notebooks and CI scripts; the CLI is a thin layer over it.

    import qntz
    result = qntz.run("pipelines/quickstart.yaml", jobs=2)
    if not result:
        print(result.failures())
    result.steps["int8"].files["model.onnx"]      # the laid-out artifact
    result.comparisons["compare"]                 # candidates with their figures

A bad pipeline raises `qntz.PipelineError` (with `.where` and `.hint`); a step that fails
does not raise: its outcome carries the error, and the result is falsy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qntz.core.errors import PipelineError, QntzError
from qntz.core.results import RunResult, outcomes, record_run, result


def load_pipeline(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Any:
    """Read and validate a pipeline file; raises PipelineError naming file, line and fix.
    `overrides` ({"onnx.opset": 18}, as `--set` gives them) replace the file's parameters
    and are validated, hashed and locked like them."""
    from qntz.core.pipeline import load_pipeline as load

    return load(path, overrides)


def validate(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Any:
    """`load_pipeline`, plus a static check that each factory's module and attribute exist
    (without importing torch or the model's code)."""
    from qntz.core.factory_check import check_factories

    pipeline = load_pipeline(path, overrides)
    check_factories(pipeline)
    return pipeline


def step_kinds() -> Mapping[str, Any]:
    """Every registered step kind (qntz's own and plugins'), by name; a kind's module is
    imported when it is looked up."""
    from qntz.core.registry import KINDS

    return KINDS


def schema() -> dict[str, Any]:
    """The JSON Schema of pipeline files, with every registered kind's parameters."""
    from qntz.core.schema import full_schema

    return full_schema()


def cache(action: str, console: Any = None, dry_run: bool = False) -> Any:
    """The project cache (of the current folder's project): `dir` gives its path; `verify`
    and `gc` print what they do on `console` (a rich Console) and return the exit code;
    `clear` returns (entries removed, entries kept because a running qntz uses them). `gc`
    and `clear` act only on a folder qntz created (it carries a marker), remove only
    qntz's own names in it, and leave what a live run uses."""
    from qntz.core import cache_admin
    from qntz.core.workspace import Workspace

    workspace = Workspace.of(Path.cwd())
    if action == "dir":
        return workspace.cache_dir
    if action == "verify":
        return cache_admin.verify(workspace, console)
    if action == "gc":
        return cache_admin.gc(workspace, console, dry_run)
    return cache_admin.clear(workspace)


def session(pipeline: Any, remote: bool = True, may_build: Any = None) -> Any:
    """The pipeline's session in its project (cache and outputs under the project root,
    the remote cache its config names unless `remote` is False; `may_build(step_id)`:
    whether it may execute that step, default all, else the step comes from a cache)."""
    from qntz.core.runner import open_session

    return open_session(pipeline if hasattr(pipeline, "steps") else load_pipeline(pipeline),
                        remote, may_build)


def run(pipeline: str | Path | Any, steps: list[str] | None = None, jobs: int = 1,
        force: bool = False, keep_going: bool = False, reporter: Any = None,
        remote: bool = True) -> RunResult:
    """Run what is stale (with `steps`: those and what they need) and lay out the outputs.
    A step missing locally is pulled from the remote cache when it has it; what is built is
    pushed there."""
    from qntz.core.runner import SilentReporter

    if jobs < 1:
        raise PipelineError("jobs must be at least 1", hint="e.g. jobs=2 (--jobs 2)")
    current = session(pipeline, remote)
    _check_steps(current.pipeline, steps)
    results = current.run(reporter or SilentReporter(), steps, force, jobs, keep_going)
    done = result(current, outcomes(current, results))
    record_run(done)
    return done


def run_all(files: list[str | Path], executor: str = "local", address: str | None = None,
            reporter: Any = None, **options: Any) -> list[RunResult]:
    """Several pipelines: one after the other here, or fanned out over a Ray cluster
    (`executor="ray"`, which needs a remote cache; `address` as `ray.init` takes it)."""
    if executor == "ray":
        from qntz.core.ray_executor import run_on_ray
        from qntz.core.runner import SilentReporter

        results = run_on_ray(list(files), address, reporter or SilentReporter())
        for done in results:
            record_run(done)
        return results
    return [run(f, reporter=reporter, **options) for f in files]


def push(pipeline: str | Path | Any) -> dict[str, str]:
    """Upload every step the lock file records and the local cache holds; per step what
    happened (pushed, already there, not in the local cache)."""
    from qntz.core.cache import is_key
    from qntz.core.remote import Remote

    current = session(pipeline)
    remote = _remote(current)
    done: dict[str, str] = {}
    for sid, step in current.read_lock()["steps"].items():
        if not is_key(step["key"]):  # a key becomes a path: only a real one does
            done[sid] = MALFORMED
            continue
        artifact, _ = current.cache.lookup(sid, step["key"], strict=True)
        if artifact is None:
            done[sid] = "not in the local cache"
        else:
            done[sid] = "pushed" if _guarded(Remote.push, remote, artifact) else "already there"
    return done


def pull(pipeline: str | Path | Any, steps: list[str] | None = None) -> dict[str, str]:
    """Download the entries the lock file records (or those of `steps`) that the local cache
    lacks, each checked against its digests."""
    from qntz.core.cache import is_key

    current = session(pipeline)
    _check_steps(current.pipeline, steps)
    remote = _remote(current)
    done: dict[str, str] = {}
    for sid, step in current.read_lock()["steps"].items():
        if steps and sid not in steps:
            continue
        if not is_key(step["key"]):  # a key becomes a path: only a real one does
            done[sid] = MALFORMED
            continue
        if current.cache.lookup(sid, step["key"])[0] is not None:
            done[sid] = "already here"
            continue
        with current.cache.locked(step["key"]) as held:
            pulled = _guarded(remote.pull, held, sid)
        done[sid] = "pulled" if pulled else "not on the remote"
    current.digests.save()
    return done


MALFORMED = "skipped: its key in the lock file is malformed (run the pipeline to rewrite it)"


def _remote(current: Any) -> Any:
    """The configured remote, opened; QntzError (naming it, redacted) when it cannot be."""
    from qntz.core.remote import Remote, RemoteUnavailable

    if current.remote.url is None:
        raise PipelineError("no remote cache is configured", where=str(current.pipeline.path),
                            hint="set QNTZ_REMOTE or `remote: URL` in .qntz/config.yaml "
                            "under the project root")
    try:
        return Remote(current.remote.url)
    except RemoteUnavailable as exc:
        raise QntzError(str(exc), hint="check the URL, that the remote is up and reachable "
                        "from here, and that fsspec's backend for it is installed") from exc


def _guarded(function: Any, *args: Any) -> Any:
    from qntz.core.remote import RemoteUnavailable

    try:
        return function(*args)
    except RemoteUnavailable as exc:
        raise QntzError(str(exc), hint="check the remote's address and credentials") from exc


def status(pipeline: str | Path | Any, steps: list[str] | None = None) -> dict[str, Any]:
    """Per step: cached, stale or pending, and why (changes nothing)."""
    current = session(pipeline)
    _check_steps(current.pipeline, steps)
    return current.status(steps)


def init(factory: str, output: str | Path = "pipeline.yaml",
         kwargs: dict[str, Any] | None = None, force: bool = False) -> Path:
    """Write a starter pipeline for `factory` (`module.path:attr`, resolved next to `output`
    first): inputs guessed from forward() and the model's config, each checked by calling
    the model; the usual steps, commented. Refuses to overwrite unless `force`."""
    from qntz.capture.starter import write_starter

    return write_starter(factory, output, kwargs, force)


def remote_has(pipeline: str | Path | Any, states: dict[str, Any]) -> dict[str, bool]:
    """For each planned step with a known key: whether the remote cache holds its entry."""
    current = session(pipeline)
    remote = _remote(current)
    return {sid: _guarded(remote.has, s.key) for sid, s in states.items() if s.key}


def _check_steps(pipeline: Any, steps: list[str] | None) -> None:
    from qntz.core.wording import did_you_mean

    for sid in steps or []:
        if sid not in pipeline.steps:
            raise PipelineError(f"no step '{sid}'{did_you_mean(sid, list(pipeline.steps))}",
                                where=str(pipeline.path),
                                hint="steps: " + ", ".join(pipeline.steps))


def report(pipeline: str | Path | Any) -> Path:
    """Write `out/<name>/report.html` for the pipeline's last recorded run (what the cache
    holds when none is recorded) and return its path; regenerating it gives the same bytes."""
    from qntz.report.page import write_report

    return write_report(session(pipeline, remote=False))


def explain(pipeline: str | Path | Any, step: str) -> dict[str, Any]:
    """Where step `step`'s ONNX model diverges from the float model it was made from: its
    layers ranked by the error each adds, named by PyTorch module and ONNX node."""
    from qntz.compare.explain import explain as localize

    current = session(pipeline, remote=False)
    _check_steps(current.pipeline, [step])
    return localize(current, step)


def diff(pipelines: list[str | Path | Any] | None = None, rev: str = "HEAD"
         ) -> list[dict[str, Any]]:
    """Each pipeline's lock file at git revision `rev` against the current one: steps whose
    keys changed and why, and the recorded figures (compare accuracy) before and after.
    Without pipelines: every lock file git tracks under the current folder."""
    from qntz.core.lockdiff import diff_lock, tracked_locks
    from qntz.core.lockfile import lock_path

    loaded = [p if hasattr(p, "steps") else load_pipeline(p) for p in pipelines or []]
    if loaded:
        return [diff_lock(lock_path(p.path), rev, p.order()) for p in loaded]
    return [diff_lock(lock, rev, _order_beside(lock)) for lock in tracked_locks(Path.cwd())]


def _order_beside(lock: Path) -> list[str] | None:
    """The step order of the pipeline a lock file sits beside, when it loads."""
    stem = lock.name.removesuffix(".lock.json")
    for suffix in (".yaml", ".yml"):
        if lock.with_name(stem + suffix).is_file():
            try:
                return load_pipeline(lock.with_name(stem + suffix)).order()
            except QntzError:
                return None
    return None
