"""Executing a plan: run stale steps (in parallel where the DAG allows), commit, lay out."""

from __future__ import annotations

import graphlib
import json
import os
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qntz.cache import MANIFEST, Artifact, Cache
from qntz.errors import QntzError
from qntz.hashing import FileDigests
from qntz.pipeline import Pipeline, provided_by
from qntz.plan import StepState, key_record, plan, record_key
from qntz.steps import KINDS, StepContext


class Reporter(Protocol):
    def started(self, step_id: str, kind: str) -> None: ...
    def message(self, step_id: str, text: str) -> None: ...
    def finished(self, result: StepResult) -> None: ...


@dataclass
class StepResult:
    id: str
    kind: str
    state: str  # cached | ran | failed | skipped
    seconds: float = 0.0
    reason: str = ""
    error: QntzError | None = None
    artifact: Artifact | None = None

    @property
    def summary(self) -> dict[str, Any]:
        return self.artifact.summary if self.artifact else {}


@dataclass
class Workspace:
    """Where a pipeline's cache and outputs live (the current folder by default)."""

    root: Path
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        self.cache_dir = self.cache_dir or Path(
            os.environ.get("QNTZ_CACHE", self.root / ".qntz" / "cache"))

    def out(self, pipeline: Pipeline) -> Path:
        return self.root / "out" / pipeline.name


@dataclass
class Session:
    pipeline: Pipeline
    workspace: Workspace
    digests: FileDigests = field(init=False)
    cache: Cache = field(init=False)
    _model: Any = field(default=None, init=False)
    _model_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.digests = FileDigests(self.workspace.cache_dir / "file-digests.json")
        self.cache = Cache(self.workspace.cache_dir, self.digests)

    @property
    def lock_path(self) -> Path:
        return self.workspace.out(self.pipeline) / "qntz.lock.json"

    def read_lock(self) -> dict[str, Any]:
        try:
            return json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return {}

    def status(self, only: list[str] | None = None) -> dict[str, StepState]:
        states, _ = plan(self.pipeline, self.pipeline.order(only), self.cache, self.read_lock())
        self.digests.save()
        return states

    def live_model(self) -> Any:
        """The model built once per session, for every step that needs it."""
        from qntz.steps.load import build_model

        with self._model_lock:
            if self._model is None:
                load = next(s for s in self.pipeline.steps.values() if s.kind == "load")
                self._model = build_model(load.params, self.pipeline,
                                          self.pipeline.where(*load.at))
            return self._model

    def run(self, reporter: Reporter, only: list[str] | None = None, force: bool = False,
            jobs: int = 1, keep_going: bool = False) -> list[StepResult]:
        order = self.pipeline.order(only)
        forced = set(only or order) if force else set()
        results: dict[str, StepResult] = {}
        artifacts: dict[str, Artifact] = {}
        sorter = graphlib.TopologicalSorter({s: self.pipeline.steps[s].needs for s in order})
        sorter.prepare()
        stop = False
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            running: dict[Future, str] = {}
            while sorter.is_active() and not (stop and not running):
                if not stop:
                    for sid in sorted(sorter.get_ready(), key=order.index):
                        running[pool.submit(self._one, sid, artifacts, results, forced,
                                            reporter)] = sid
                if not running:
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
        self._publish(results)
        self.digests.save()
        return [results[s] for s in order if s in results]

    def _one(self, sid: str, artifacts: dict[str, Artifact], results: dict[str, StepResult],
             forced: set[str], reporter: Reporter) -> StepResult:
        spec = self.pipeline.steps[sid]
        missing = [n for n in spec.needs if n not in artifacts]
        if missing:
            result = StepResult(sid, spec.kind, "skipped", reason=f"{missing[0]} did not finish")
            reporter.finished(result)
            return result
        inputs = {n: artifacts[n] for n in spec.needs}
        record = key_record(spec, self.pipeline, inputs, self.digests)
        key = record_key(record)
        artifact, _ = self.cache.lookup(sid, key)
        if artifact is not None and sid not in forced:
            result = StepResult(sid, spec.kind, "cached", artifact=artifact)
        else:
            reporter.started(sid, spec.kind)
            result = self._execute(sid, key, record, inputs, reporter)
        failed = result.summary.get("failed")
        if failed and result.state != "failed":
            result.state = "failed"
            result.reason = f"{self.pipeline.path}: step '{sid}': {failed}"
        reporter.finished(result)
        return result

    def _execute(self, sid: str, key: str, record: dict[str, Any], inputs: dict[str, Artifact],
                 reporter: Reporter) -> StepResult:
        spec = self.pipeline.steps[sid]
        kind = KINDS[spec.kind]
        out = self.cache.workspace(key)
        ctx = StepContext(self.pipeline, spec, spec.params, out, inputs, self.live_model,
                          lambda text: reporter.message(sid, text), record["extras"],
                          self.cache.root / "shared")
        start = time.perf_counter()
        try:
            summary = kind().run(ctx)
        except QntzError as exc:
            self.cache.discard(out)
            return StepResult(sid, spec.kind, "failed", time.perf_counter() - start,
                              str(exc), error=exc)
        except BaseException:
            self.cache.discard(out)
            raise
        seconds = time.perf_counter() - start
        summary = {**summary, "seconds": round(seconds, 3)}
        provides = summary.pop("provides", None) or list(provided_by(spec))
        artifact = self.cache.commit(sid, key, out, provides, summary, record)
        return StepResult(sid, spec.kind, "ran", seconds, artifact=artifact)

    def _publish(self, results: dict[str, StepResult]) -> None:
        """Lay out outputs for people and record the lock file (only what changed)."""
        out = self.workspace.out(self.pipeline)
        lock = self.read_lock()
        steps = dict(lock.get("steps", {}))
        for sid, result in results.items():
            if result.artifact is None:
                continue
            _lay_out(result.artifact, out / sid, steps.get(sid, {}).get("key"))
            record = result.artifact.manifest["record"]
            steps[sid] = {"key": result.artifact.key, **record,
                          "outputs": result.artifact.files()}
        from qntz.model_source import display_path

        new_lock = {"qntz": 1, "name": self.pipeline.name,
                    "pipeline": display_path(self.pipeline.path, self.workspace.root),
                    "steps": {s: steps[s] for s in self.pipeline.steps if s in steps}}
        if new_lock != lock:
            out.mkdir(parents=True, exist_ok=True)
            tmp = self.lock_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(new_lock, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.lock_path)


def _lay_out(artifact: Artifact, target: Path, previous_key: str | None) -> None:
    files = artifact.files()
    if previous_key == artifact.key and all(
            (target / n).is_file() and (target / n).stat().st_size == (artifact.path / n).stat()
            .st_size for n in files):
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in files:
        if name == MANIFEST:
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifact.path / name, target / name)
