"""Toy step kinds for the fast tier: each writes a small text file and imports no torch.

They exercise the core (plan, runner, cache, lock file) the way real kinds do, in
milliseconds. Registered in-process with `qntz.core.registry.override(KINDS, only=True)`;
`load` is a toy too, since a pipeline needs one (its `model:` section is shorthand for it).

    model: {text: seed}        # the toy load: writes text.txt = "seed"
    steps:
      a: {uses: emit, text: A} # its needs' text.txt, joined, then "A"
      b: {uses: fail, how: value}
"""

from __future__ import annotations

import errno
import textwrap
import threading
import time
from typing import Any

from qntz.core.step import Step, StepContext

RUNS: list[str] = []  # step ids in the order their `run` began, across threads
MODELS: list[str] = []  # one entry per live model built (`Source.build_model`)
_runs_lock = threading.Lock()
_barriers: dict[int, threading.Barrier] = {}


def reset() -> None:
    """Forget what earlier tests ran and which meetings they left behind."""
    with _runs_lock:
        RUNS.clear()
        MODELS.clear()
        _barriers.clear()


def _ran(ctx: StepContext) -> None:
    with _runs_lock:
        RUNS.append(ctx.step.id)


def _joined(ctx: StepContext) -> str:
    """The text of every input, in the order of `needs`."""
    return "".join(ctx.inputs[n].file("text.txt").read_text() for n in ctx.step.needs
                   if "text" in ctx.inputs[n].provides)


class Source(Step):
    kind = "load"
    help = "toy load: writes its text; its live model is that text"
    params = {"text": {"type": "string", "default": "seed"}}
    provides = ("model", "text")

    @classmethod
    def build_model(cls, params: dict[str, Any], pipeline: Any, where: str) -> Any:
        with _runs_lock:
            MODELS.append(params["text"])
        return {"text": params["text"]}

    def run(self, ctx: StepContext) -> dict[str, Any]:
        _ran(ctx)
        (ctx.out / "text.txt").write_text(ctx.params["text"])
        return {"chars": len(ctx.params["text"])}


class Emit(Step):
    kind = "emit"
    help = "its inputs' text joined, then its own; `stamp` adds a volatile clock file"
    params = {"text": {"type": "string", "default": ""},
              "upper": {"type": "boolean", "default": False},
              "stamp": {"type": "boolean", "default": False}}
    consumes = ("text",)
    provides = ("text",)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        _ran(ctx)
        text = _joined(ctx) + ctx.params["text"]
        (ctx.out / "text.txt").write_text(text.upper() if ctx.params["upper"] else text)
        summary: dict[str, Any] = {"chars": len(text)}
        if ctx.params["stamp"]:
            (ctx.out / "clock.txt").write_text(str(time.time_ns()))
            summary["volatile"] = ["clock.txt"]
        return summary


class Shout(Step):
    kind = "shout"
    help = "the live model's text, upper case (a kind that consumes the model)"
    consumes_model = True
    provides = ("text",)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        _ran(ctx)
        (ctx.out / "text.txt").write_text(ctx.live_model()["text"].upper())
        return {}


class Read(Step):
    kind = "read"
    help = "a file beside the pipeline, whose content (not its path) enters the key"
    params = {"file": {"type": "string"}, "threshold": {"type": "integer", "default": 1}}
    required = ("file",)
    libraries = ("pyyaml",)
    consumes = ("text",)
    provides = ("text",)

    @classmethod
    def key_extras(cls, step: Any, pipeline: Any, digests: Any) -> dict[str, Any]:
        name = step.params["file"]
        return {"files": {name: digests.of(pipeline.root / name)},
                "scale": step.params["threshold"] * 10}

    def run(self, ctx: StepContext) -> dict[str, Any]:
        _ran(ctx)
        (ctx.out / "text.txt").write_text((ctx.pipeline.root / ctx.params["file"]).read_text())
        return {}


class Meet(Step):
    kind = "meet"
    help = "waits until `parties` meet steps run at once: passes only when run in parallel"
    params = {"parties": {"type": "integer", "minimum": 1, "default": 2},
              "wait": {"type": "number", "minimum": 0, "default": 10},
              "text": {"type": "string", "default": ""}}  # two equal steps share one key
    consumes = ("text",)
    provides = ("text",)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        _ran(ctx)
        parties = ctx.params["parties"]
        with _runs_lock:
            barrier = _barriers.setdefault(parties, threading.Barrier(parties))
        try:
            barrier.wait(timeout=ctx.params["wait"])
        except threading.BrokenBarrierError:
            raise ctx.fail(f"the other {parties - 1} meet step(s) never ran alongside",
                           hint="run with jobs >= parties") from None
        (ctx.out / "text.txt").write_text(_joined(ctx) + ctx.params["text"])
        return {}


class Fail(Step):
    kind = "fail"
    help = "fails the way `how` says (a summary failure still commits its output)"
    params = {"how": {"enum": ["qntz", "value", "exit", "interrupt", "summary", "full-disk",
                               "read-only"], "default": "qntz"}}
    consumes = ("text",)
    provides = ("text",)

    def run(self, ctx: StepContext) -> dict[str, Any]:
        _ran(ctx)
        how = ctx.params["how"]
        if how == "qntz":
            raise ctx.fail("told to fail", hint="set how: summary")
        if how == "value":
            raise ValueError("a bug in the step")
        if how == "exit":
            raise SystemExit(3)
        if how == "interrupt":
            raise KeyboardInterrupt
        if how == "full-disk":  # as a library reports it, wrapped in its own exception
            raise RuntimeError("could not save") from OSError(errno.ENOSPC, "No space left")
        if how == "read-only":
            raise OSError(errno.EROFS, "Read-only file system", str(ctx.out / "text.txt"))
        (ctx.out / "text.txt").write_text(_joined(ctx))
        return {"failed": "numbers disagree"}


KINDS: dict[str, type[Step]] = {k.kind: k for k in (Source, Emit, Shout, Read, Meet, Fail)}


def bumped(kind: type[Step], version: int) -> type[Step]:
    """`kind` at another version: what a kind's author does when its output changes."""
    return type(kind.__name__, (kind,), {"version": version})


def text_runner(artifact: Any, inputs: Any) -> Any:
    """A toy artifact runner (what compare would call for a "text" artifact)."""
    return (lambda feed: [artifact.file("text.txt").read_text()]), ["text"]


HEAD = """\
qntz: 1
name: toy
model: {text: seed}
inputs: {x: {shape: [1]}}
steps:
"""


def toy_pipeline(steps: str, head: str = HEAD) -> str:
    """A toy pipeline's text: the toy load (`model:`) then `steps` (YAML, a step a line)."""
    return head + textwrap.indent(textwrap.dedent(steps).strip(), "  ") + "\n"
