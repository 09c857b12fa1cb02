"""Executing a plan: run stale steps (in parallel where the DAG allows), commit, lay out.

Before anything runs, the entries that stale steps will consume are re-read and checked
against their digests (a fully cached run trusts size, mtime, ctime and inode, as git
does); a damaged one is dropped and rebuilt. Each step is built under its key's file lock,
so concurrent runs build a step once and the others reuse it. Every key the run uses is
leased (`core/lease.py`) until its lock file is written, so `qntz cache gc` never removes
what the run reads or has just built. Whatever a step raises, `SystemExit` and
`KeyboardInterrupt` of its own included, is that step's failure.
"""

from __future__ import annotations

import errno
import graphlib
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qntz.core.cache import Artifact, Cache, Held
from qntz.core.errors import QntzError, StepFailed
from qntz.core.hashing import FileDigests
from qntz.core.lease import Lease
from qntz.core.lockfile import lock_path, merge_lock, merged, read_lock, step_entry
from qntz.core.pipeline import provided_by
from qntz.core.plan import StepState, key_record, plan, record_key
from qntz.core.registry import KINDS
from qntz.core.remote import RemoteLink
from qntz.core.spec import Pipeline, StepSpec
from qntz.core.states import RunState
from qntz.core.step import StepContext
from qntz.core.workspace import Workspace, inside, lay_out, same_file

FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class Reporter(Protocol):
    def started(self, step_id: str, kind: str) -> None: ...
    def message(self, step_id: str, text: str) -> None: ...
    def finished(self, result: StepResult) -> None: ...


class SilentReporter:
    """Shows nothing: for `--json` (the document at the end is the only output), the API
    and Ray tasks."""

    def started(self, step_id: str, kind: str) -> None:
        pass

    def message(self, step_id: str, text: str) -> None:
        pass

    def finished(self, result: StepResult) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class StepResult:
    id: str
    kind: str
    state: RunState
    seconds: float = 0.0
    reason: str = ""
    error: QntzError | None = None
    artifact: Artifact | None = None

    @property
    def summary(self) -> dict[str, Any]:
        return self.artifact.summary if self.artifact else {}



@dataclass
class Session:
    pipeline: Pipeline
    workspace: Workspace
    remote: RemoteLink = field(default_factory=lambda: RemoteLink(None))
    # whether this session may execute a step (default: every one); a step it may not
    # must come from the local or the remote cache (a Ray task builds only its own step)
    may_build: Callable[[str], bool] = field(default=lambda step_id: True)
    digests: FileDigests = field(init=False)
    cache: Cache = field(init=False)
    _model: Any = field(default=None, init=False)
    _model_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _lease: Lease = field(init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        self.digests = FileDigests(self.workspace.cache_dir / "file-digests.json")
        self.cache = Cache(self.workspace.cache_dir, self.digests)
        self._lease = Lease(self.cache.root)

    @property
    def lock_path(self) -> Path:
        return lock_path(self.pipeline.path)

    @property
    def out(self) -> Path:
        return self.workspace.out(self.pipeline.name)

    def read_lock(self) -> dict[str, Any]:
        return read_lock(self.lock_path)

    def status(self, only: list[str] | None = None) -> dict[str, StepState]:
        """What is cached and what is stale, and why. Changes nothing but the stat cache."""
        states, _ = plan(self.pipeline, self.pipeline.order(only), self.cache, self.read_lock())
        if self.cache.claimed():
            self.digests.save()
        return states

    def live_model(self) -> Any:
        """The model built once per session, for every step that needs it."""
        with self._model_lock:
            if self._model is None:
                spec = next(s for s in self.pipeline.steps.values()
                            if "model" in provided_by(s))
                self._model = KINDS[spec.kind].build_model(spec.params, self.pipeline,
                                                           self.pipeline.where(*spec.at))
            return self._model

    def run(self, reporter: Reporter, only: list[str] | None = None, force: bool = False,
            jobs: int = 1, keep_going: bool = False) -> list[StepResult]:
        """Run what is stale; every step of the order gets a result (those never started
        because of a failure are skipped). A KeyboardInterrupt (Ctrl-C) cancels the steps
        not started, tells running ones to stop, and is raised again at once."""
        order = self.pipeline.order(only)
        forced = set(only or order) if force else set()
        self._claim()
        try:
            results = self._run_steps(order, forced, reporter, jobs, keep_going)
            for sid in order:
                if sid not in results:
                    results[sid] = StepResult(sid, self.pipeline.steps[sid].kind, "skipped",
                                              reason="not started after a failure")
            self._publish(results)
        finally:
            self._lease.release()
            self.digests.save()
        return [results[s] for s in order]

    def _claim(self) -> None:
        """Mark the cache as qntz's before writing (a read-only one may still serve), then
        keep what validating the pipeline learned there."""
        try:
            self.cache.claim()
        except OSError:
            return
        if self.pipeline.memo is not None:
            self.pipeline.memo.save()

    def _run_steps(self, order: list[str], forced: set[str], reporter: Reporter, jobs: int,
                   keep_going: bool) -> dict[str, StepResult]:
        planned = self._verified_plan(order, forced)
        results: dict[str, StepResult] = {}
        artifacts: dict[str, Artifact] = {}
        sorter = graphlib.TopologicalSorter({s: self.pipeline.steps[s].needs for s in order})
        sorter.prepare()
        stop = False
        pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        running: dict[Future, str] = {}
        try:
            while sorter.is_active():
                ready = sorted(sorter.get_ready(), key=order.index)
                for sid in ready:
                    missing = self._missing(sid, artifacts, results)
                    if stop and not self.runs_without(sid, missing):
                        results[sid] = StepResult(sid, self.pipeline.steps[sid].kind, "skipped",
                                                  reason="not started after a failure")
                        sorter.done(sid)  # what needs it becomes ready, to be settled too
                        continue
                    running[pool.submit(self._one, sid, artifacts, planned, forced,
                                        reporter, missing)] = sid
                if not running:
                    if ready:
                        continue
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    sid = running.pop(future)
                    result = future.result()
                    results[sid] = result
                    if result.artifact is not None:
                        artifacts[sid] = result.artifact
                    if result.state == "failed" and not keep_going and not result.artifact:
                        stop = True
                    sorter.done(sid)
        except BaseException:
            self._stopping.set()  # a step that has not begun building will not
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return results

    def _verified_plan(self, order: list[str], forced: set[str]) -> dict[str, Artifact]:
        """The cached entries, after re-reading every one a stale step will consume and
        dropping the damaged ones (then planning again: what consumed them is stale now)."""
        checked: set[str] = set()
        while True:
            states, found = plan(self.pipeline, order, self.cache, self.read_lock(), forced)
            stale = [s for s in order if states[s].state != "cached"]
            consumed = {n for s in stale for n in self.pipeline.steps[s].needs if n in found}
            self._lease.add(a.key for a in found.values())
            if any(not self.cache.entry_dir(a.key).is_dir() for a in found.values()):
                continue  # collected before the lease took: plan again, without it
            damaged = []
            for sid in sorted(consumed - checked):
                checked.add(sid)
                spec = self.pipeline.steps[sid]
                if self.cache.lookup(sid, found[sid].key, strict=True,
                                     declared=provided_by(spec))[0] is None:
                    damaged.append(found[sid].key)
            if not damaged:
                return found
            for key in damaged:
                with self.cache.locked(key) as held:
                    if self.cache.lookup("", key, strict=True)[0] is None:
                        held.remove()

    def _missing(self, sid: str, artifacts: dict[str, Artifact],
                 results: dict[str, StepResult]) -> dict[str, str]:
        """The needs of `sid` that did not finish, each with the failure behind it."""
        return {n: self._why_missing(n, artifacts, results)
                for n in self.pipeline.steps[sid].needs if n not in artifacts}

    def _why_missing(self, need: str, artifacts: dict[str, Artifact],
                     results: dict[str, StepResult]) -> str:
        """`int8 failed`, also for a step skipped after it (`engine` needing `int8`)."""
        result = results.get(need)
        if result is not None and result.state == "failed":
            return f"{need} failed"
        blocked = [n for n in self.pipeline.steps[need].needs if n not in artifacts]
        if blocked:
            return self._why_missing(blocked[0], artifacts, results)
        if result is None:
            return f"{need} was not started"
        return f"{need} was skipped: {result.reason}" if result.reason else f"{need} was skipped"

    def runs_without(self, sid: str, missing: Iterable[str]) -> bool:
        """A kind that still runs without some of its needs (compare judges what exists)."""
        spec = self.pipeline.steps[sid]
        return KINDS[spec.kind].runs_without(spec, self.pipeline, list(missing))

    def _one(self, sid: str, artifacts: dict[str, Artifact], planned: dict[str, Artifact],
             forced: set[str], reporter: Reporter, missing: dict[str, str]) -> StepResult:
        spec = self.pipeline.steps[sid]
        if missing and not self.runs_without(sid, missing):
            result = StepResult(sid, spec.kind, "skipped",
                                reason=f"{next(iter(missing))} did not finish")
            reporter.finished(result)
            return result
        inputs = {n: artifacts[n] for n in spec.needs if n in artifacts}
        step = StepRun(self, sid, inputs, missing, sid in forced, reporter)
        try:
            if not missing and sid in planned and all(
                    artifacts[n] is planned.get(n) for n in spec.needs):
                result = step.result("cached", artifact=planned[sid])
            else:
                result = step.cached_or_built()
        except BaseException as exc:  # noqa: B036 - what a step raises is its failure
            error = _as_failure(exc, step.where)
            result = step.result("failed", reason=str(error), error=error)
        failed = result.summary.get("failed")
        if failed and result.state != "failed":  # it ran, and its output says it failed
            result.state = "failed"
            result.error = StepFailed(failed, where=f"{self.pipeline.where(*spec.at)}: step "
                                      f"'{sid}'", hint=result.summary.get("fix"))
            result.reason = str(result.error)
        reporter.finished(result)
        return result

    def lease(self, key: str) -> None:
        """Keep `key` from `qntz cache gc` until this run's lock file is written."""
        self._lease.add([key])

    @property
    def stopping(self) -> bool:
        """Ctrl-C came: a step that has not begun building will not."""
        return self._stopping.is_set()

    def world_error(self, where: str, exc: BaseException) -> QntzError | None:
        """A full disk or a read-only cache, wherever a library noticed it: one line."""
        cause = _os_cause(exc)
        if cause is not None and cause.errno in FULL_DISK or _no_space(self.cache.root):
            return StepFailed(f"no space left on the device of {self.cache.root} "
                              f"({_first(exc)})", where=where,
                              hint="free some space (`qntz cache gc` removes what no lock "
                              "file uses) or point QNTZ_CACHE at a larger disk")
        if cause is not None and cause.errno in READ_ONLY:
            path = cause.filename or self.cache.root
            return StepFailed(f"cannot write {path}: {cause.strerror}", where=where,
                              hint="make the cache writable, or point QNTZ_CACHE at a "
                              "writable folder")
        return None

    def _publish(self, results: dict[str, StepResult]) -> None:
        """Lay out outputs for people and record the lock file, under the pipeline's lock
        (taken only when something is to change: a cached run stays cheap)."""
        from qntz.core.hashing import digest_value

        built = {sid: r.artifact for sid, r in results.items() if r.artifact is not None}
        updates = {sid: step_entry(a.key, a.manifest["record"], a.lasting_files(),
                                   a.summary.get("figures"))
                   for sid, a in built.items()}
        _, changed = merged(self.lock_path, self.pipeline.name, list(self.pipeline.steps),
                            updates)
        if not changed and all(self._laid_out(a, self.out / s) for s, a in built.items()):
            return
        guard = self.cache.root / "locks" / f"out-{digest_value(str(self.out))[:32]}.lock"
        try:
            with _held(guard):
                for sid, artifact in built.items():
                    if not self._laid_out(artifact, self.out / sid):
                        lay_out({n: artifact.file(n) for n in artifact.files()},
                                self.out / sid, self.workspace.root / "out")
                        self._relearn(artifact)
                merge_lock(self.lock_path, self.pipeline.name, list(self.pipeline.steps),
                           updates)
        except OSError as exc:
            raise QntzError(f"cannot lay out outputs in {self.out}: {_first(exc)}",
                            where=str(self.pipeline.path),
                            hint="free some space or make out/ writable; the cache is intact, "
                            "a re-run lays them out") from exc

    def _relearn(self, artifact: Artifact) -> None:
        """A hard link changes its file's ctime, not its content: remember the new stat, so
        the next run does not re-read what it just verified."""
        for name, digest in artifact.files().items():
            try:
                self.digests.remember(artifact.file(name), digest)
            except OSError:
                pass

    def _laid_out(self, artifact: Artifact, target: Path) -> bool:
        """`target` (in out/) holds exactly the entry's files, each the same file or content."""
        inside(self.workspace.root / "out", target)
        return target.is_dir() and all(
            same_file(target / n, artifact.file(n), self.digests, d)
            for n, d in artifact.files().items())

@dataclass
class StepRun:
    """One step of one run, from its inputs to its result: what it consumes, the needs it
    runs without (and why), whether it is forced; its key and key record once known. The
    entry is written only under the key's lock (`Cache.locked` hands out the writer)."""

    session: Session
    id: str
    inputs: dict[str, Artifact]
    missing: dict[str, str]
    forced: bool
    reporter: Reporter

    @property
    def spec(self) -> StepSpec:
        return self.session.pipeline.steps[self.id]

    @property
    def where(self) -> str:
        return f"{self.session.pipeline.path}: step '{self.id}'"

    def result(self, state: RunState, **fields: Any) -> StepResult:
        return StepResult(self.id, self.spec.kind, state, **fields)

    def failure(self, error: QntzError, seconds: float = 0.0) -> StepResult:
        return self.result("failed", seconds=seconds, reason=str(error), error=error)

    def cached_or_built(self) -> StepResult:
        """A step whose inputs were rebuilt: its new key may be cached, else build it."""
        session = self.session
        record = key_record(self.spec, session.pipeline, self.inputs, session.digests,
                            self.missing)
        key = record_key(record)
        session.lease(key)
        artifact, _ = session.cache.lookup(self.id, key, declared=provided_by(self.spec))
        if artifact is not None and not self.forced:
            return self.result("cached", artifact=artifact)
        if session.stopping:
            return self.result("skipped", reason="interrupted")
        self.reporter.started(self.id, self.spec.kind)
        try:
            return self._built(key, record)
        except OSError as exc:
            error = session.world_error(self.where, exc)
            if error is None:
                raise
            return self.failure(error)

    def _built(self, key: str, record: dict[str, Any]) -> StepResult:
        """Under the key's lock: reuse what another process built meanwhile (or the remote
        has), else execute, where this run may."""
        session = self.session
        def waiting() -> None:
            self.reporter.message(self.id, "waiting for another qntz process building it")

        with session.cache.locked(key, waiting) as held:
            artifact, problem = session.cache.lookup(self.id, key, strict=True,
                                                     declared=provided_by(self.spec))
            if artifact is not None and not self.forced:
                return self.result("cached", artifact=artifact)
            if problem:
                held.remove()
            if not self.forced and (pulled := session.remote.pull(held, self.id)):
                return self.result("pulled", artifact=pulled)
            if not session.may_build(self.id):
                return self.failure(StepFailed(
                    "not built: neither the local nor the remote cache has it",
                    where=self.where, hint="see the error of the task that should have built it"))
            result = self._executed(held, record)
            if result.artifact is not None:
                session.remote.push(result.artifact)
            return result

    def _executed(self, held: Held, record: dict[str, Any]) -> StepResult:
        session, spec = self.session, self.spec
        work = session.cache.workspace(held.key)
        ctx = StepContext(session.pipeline, spec, spec.params, work / "out", self.inputs,
                          session.live_model, shared=session.cache.root / "shared",
                          temp=work / "scratch",
                          report=lambda text: self.reporter.message(self.id, text),
                          extras=record["extras"], missing=record.get("missing", {}))
        start = time.perf_counter()
        try:
            summary = KINDS[spec.kind]().run(ctx)
            seconds = time.perf_counter() - start
            summary = {**summary, "seconds": round(seconds, 3)}
            provides = summary.pop("provides", None) or list(provided_by(spec))
            artifact = held.commit(self.id, work, provides, summary, record)
        except QntzError as exc:  # a step may have wrapped a full disk in its own words
            error = session.world_error(self.where, exc) or exc
            error.where = error.where or ctx.where
            return self.failure(error, time.perf_counter() - start)
        except Exception as exc:
            error = session.world_error(self.where, exc)
            if error is None:
                raise
            return self.failure(error, time.perf_counter() - start)
        finally:
            session.cache.discard(work)
        return self.result("ran", seconds=seconds, artifact=artifact)


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """A file lock between processes; without a writable cache (a read-only one serving a
    cached run) only this process's threads are kept apart."""
    from filelock import FileLock

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock: Any = FileLock(str(path))
        lock.acquire()
    except OSError:
        lock = _LOCAL
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


_LOCAL = threading.Lock()


def _as_failure(exc: BaseException, where: str) -> QntzError:
    """What a step raised, as its one-line failure (the traceback stays on the cause, for
    -v): a bug in qntz or a library, or user code that exits or interrupts."""
    from qntz.core.errors import first_line

    if isinstance(exc, QntzError):
        exc.where = exc.where or where
        return exc
    if isinstance(exc, SystemExit):
        what = f"the model's code called sys.exit({exc.code!r}): the step did not finish"
        hint = "a factory, a forward or a data function must return, not exit the process"
    elif isinstance(exc, KeyboardInterrupt):
        what = "the model's code raised KeyboardInterrupt: the step did not finish"
        hint = "raise an ordinary exception for a failure"
    else:
        what = f"unexpected error: {type(exc).__name__}: {first_line(exc, 200)}"
        hint = "run with -v for the traceback; if it is in qntz, please report it"
    error = StepFailed(what, where=where, hint=hint)
    error.__cause__ = exc
    return error


def _os_cause(exc: BaseException) -> OSError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _no_space(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


def _first(exc: BaseException) -> str:
    from qntz.core.errors import first_line

    return first_line(exc, 160)


def open_session(pipeline: Pipeline, remote: bool = True,
                 may_build: Callable[[str], bool] | None = None) -> Session:
    """The pipeline's session in its project (cache and outputs under the project root,
    the remote cache its config names unless `remote` is False); `may_build(step_id)`:
    whether it may execute that step (default: all), else the step comes from a cache."""
    from qntz.core.remote import configured_remote

    workspace = Workspace.of(pipeline.path.parent)
    url = configured_remote(workspace.root) if remote else None
    session = Session(pipeline, workspace, RemoteLink(url))
    if may_build is not None:
        session.may_build = may_build
    return session
