"""What every step kind is: parameters with a schema, a version, and one `run`.

This is the step API (version 1, `qntz.core.registry.STEP_API_VERSION`), the same for
qntz's own kinds and for plugins, and all of it is in this module: a plugin author needs
no other qntz file. A plugin is a distribution that registers a `Step` subclass under the
`qntz.steps` entry-point group, named by its kind:

    [project.entry-points."qntz.steps"]
    my-kind = "my_package:MyKind"

(`examples/onnxruntime-optimize` is one.) In-process, e.g. in a notebook or a test,
`qntz.core.registry.override(steps={"my-kind": MyKind})` registers it for a block. A
kind declares the API version it was written for in `api_version`; qntz refuses a kind
written for a newer one.

What a kind declares, and what qntz does with it:
- `params`, `required`: the YAML it accepts (validated before anything runs);
- `consumes`: what it needs among its inputs ("onnx", "torchscript", "exported_program",
  "engine", "eager", "model"); a pipeline whose `needs` provide none of them is refused;
- `provides` (or `provides_for(params)`): what its output is, so that later steps can
  consume it; a step that provides "onnx" writes `model.onnx` (and any external data
  beside it) into `ctx.out`, and `compare` then checks it like any candidate;
- `version`, `libraries`, `key_extras`: what its cache key is made of;
- `check`: refusals before anything runs (raise `qntz.core.errors.PipelineError(message,
  where=pipeline.where(*step.at), hint=...)`);
- `consumes_model`, `build_model`: a kind that takes the live model from `load`;
- `resources`: what it asks of a node under `--executor ray` (not in the key);
- `implicit_steps`: steps it needs the pipeline to hold before it;
- `runs_without`: whether it still runs when some needs failed (compare does);
- `run(ctx)`: the work, returning the summary (its keys qntz reads: `Step.run`);
- `describe`, `details`, `report_section`: what the terminal and `report.html` show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from qntz.core.errors import StepFailed
from qntz.core.wording import plural

if TYPE_CHECKING:
    from qntz.core.cache import Artifact
    from qntz.core.spec import Pipeline, StepSpec


class Step:
    """A step kind. Constructing one does nothing; `run` does all the work.

    `params` is a JSON Schema "properties" mapping with a `default` for every optional
    parameter: one source for validation, editor completion and the defaults that are
    filled in before hashing.

    The key of a step is computed from its kind's `version`, its parameters (defaults filled
    in), its inputs' digests, `key_extras`, the installed versions of `libraries` (every
    distribution `run` imports) and, for a plugin, the plugin's own release: bump `version`
    when the output changes for the same inputs.

    What a kind may touch: `run` reads its parameters, the artifacts of the steps it needs
    (`ctx.inputs`, `ctx.input_providing("onnx")`), the live model when `consumes_model`, and
    writes into `ctx.out` only (third-party tools put their temporary files in `ctx.temp`;
    caches that outlive entries go in `ctx.shared`). It raises `ctx.fail(message, hint)` for
    a failure the user can fix. The runner, not the step, hashes, caches and lays out `out/`.

    Output files holding wall-clock figures (latencies, build times) are listed in the
    returned summary under `"volatile"`: they are stored and laid out like the others,
    but kept out of the digest that downstream keys and the lock file use.
    """

    kind: ClassVar[str]
    api_version: ClassVar[int] = 1
    version: ClassVar[int] = 1
    help: ClassVar[str] = ""
    params: ClassVar[dict[str, dict[str, Any]]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    libraries: ClassVar[tuple[str, ...]] = ()
    consumes_model: ClassVar[bool] = False
    consumes: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def provides_for(cls, params: dict[str, Any]) -> tuple[str, ...]:
        """What a step with these parameters (defaults filled in) provides; by default
        `provides`. A run may narrow it through its summary's `provides`."""
        return cls.provides

    @classmethod
    def implicit_steps(cls, step: StepSpec, steps: dict[str, StepSpec],
                       pipeline: Pipeline) -> list[tuple[str, str, dict[str, Any]]]:
        """Steps this one needs the pipeline to hold before it, as (id, kind, params): each
        takes over the step's ONNX input in turn (the fp16 conversion a TensorRT fp16
        build adds). By default none."""
        return []

    @classmethod
    def schema(cls) -> dict[str, Any]:
        props = {"uses": {"const": cls.kind}, "needs": NEEDS_SCHEMA,
                 "resources": RESOURCES_SCHEMA, **cls.params}
        schema: dict[str, Any] = {
            "type": "object", "description": cls.help,
            "properties": props, "additionalProperties": False,
        }
        if cls.required:
            schema["required"] = list(cls.required)
        return schema

    @classmethod
    def with_defaults(cls, given: dict[str, Any]) -> dict[str, Any]:
        params = {name: spec["default"] for name, spec in cls.params.items() if "default" in spec}
        params.update(given)
        return params

    @classmethod
    def check(cls, step: StepSpec, pipeline: Pipeline) -> None:
        """Checks beyond the schema that need no heavy import (files exist, exclusive keys)."""

    @classmethod
    def key_extras(cls, step: StepSpec, pipeline: Pipeline, digests: Any) -> dict[str, Any]:
        """Content outside the step's inputs that changes its output (model sources, data)."""
        return {}

    @classmethod
    def resources(cls, params: dict[str, Any]) -> dict[str, Any]:
        """What one run of this kind asks of a cluster node (`--executor ray`); a step's
        `resources:` overrides it."""
        return {"num_cpus": 1}

    @classmethod
    def runs_without(cls, step: StepSpec, pipeline: Pipeline, missing: list[str]) -> bool:
        """Whether a step of this kind still runs when the needs in `missing` did not
        finish (failed, or skipped after a failure), also when a failure stops the run:
        compare judges the candidates that exist and marks the missing ones, which it finds
        in `ctx.missing`. By default such a step is skipped."""
        return False

    @classmethod
    def build_model(cls, params: dict[str, Any], pipeline: Pipeline, where: str) -> Any:
        """A kind that provides "model" builds the live model here; the runner calls it once
        per session and hands the model to every step that consumes it."""
        raise NotImplementedError(f"{cls.kind} provides no live model")

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        """One line of what a step of this kind made, from its summary (shown after it)."""
        warnings = summary.get("warnings")
        return f"{plural(len(warnings), 'warning')}: {warnings[0]}" if warnings else ""

    @classmethod
    def details(cls, step_id: str, summary: dict[str, Any]) -> list[Any]:
        """What the terminal shows after a run beyond the step's line (rich renderables or
        text), e.g. compare's table of candidates."""
        return []

    @classmethod
    def report_section(cls, artifact: Artifact) -> Section | None:
        """This kind's section of `report.html` for the entry a run made (`artifact.summary`:
        what `run` returned; `artifact.file(name)`: a file it wrote), or None for none."""
        return None

    def run(self, ctx: StepContext) -> dict[str, Any]:
        """Do the work: read `ctx`, write files into `ctx.out`, return the summary.

        The summary is a JSON-able dict, stored with the entry and shown by `--json` and
        `describe`. Keys qntz itself reads (all optional; the runner adds `seconds`):
        - `volatile`: names of output files holding wall-clock figures (latencies, build
          times): stored and laid out like the others, kept out of the digest that
          downstream keys and the lock file use;
        - `provides`: what this run's output is, where it narrows `provides_for`;
        - `failed` (a message) and `fix` (its hint): the step ran and found the conversion
          wrong; the entry is cached, yet the step counts as failed with that line;
        - `figures`: deterministic figures (accuracy, never wall-clock) the lock file
          records, so a diff of it shows them change;
        - `warnings`: lines the default `describe` shows.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Table:
    """A table of a report section; every cell is shown as text (escaped)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A kind's part of `report.html`: a title, name-value facts, tables and notes, all
    shown as text (the report escapes them; a kind writes no HTML)."""

    title: str
    facts: Sequence[tuple[str, Any]] = ()
    tables: Sequence[Table] = ()
    notes: Sequence[str] = ()


RESOURCES_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "what the step asks of a node with `--executor ray` (not in the cache key)",
    "properties": {"num_cpus": {"type": "number", "minimum": 0},
                   "num_gpus": {"type": "number", "minimum": 0},
                   "memory": {"type": "integer", "minimum": 0},
                   "accelerator_type": {"type": "string"},
                   "resources": {"type": "object",
                                 "additionalProperties": {"type": "number", "minimum": 0}}},
}

NEEDS_SCHEMA: dict[str, Any] = {
    "description": "steps this one consumes; defaults to the step written just before",
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
}


@dataclass
class StepContext:
    """What a running step may touch: its parameters, its inputs and one output folder."""

    pipeline: Pipeline
    step: StepSpec
    params: dict[str, Any]
    out: Path
    inputs: dict[str, Artifact]
    live_model: Callable[[], Any]
    shared: Path  # caches that outlive entries (timing caches), in the cache
    temp: Path  # scratch for third-party tools, in the entry's workspace; removed after the step
    report: Callable[[str], None] = lambda message: None
    extras: dict[str, Any] = field(default_factory=dict)
    # needs that did not finish, and why ("int8 failed"): only for a kind that runs_without
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.pipeline.path}: step '{self.step.id}'"

    def fail(self, message: str, hint: str | None = None,
             details: dict[str, Any] | None = None) -> StepFailed:
        """The step's failure; `details`: what it found before failing, in the shape of
        its summary (the report shows it, e.g. the budget points quantize explored)."""
        error = StepFailed(message, where=self.where, hint=hint)
        error.details = details
        return error

    def input_providing(self, what: str) -> Artifact:
        """The one input that provides `what` (e.g. "onnx"), nearest first."""
        found = [a for a in self.inputs.values() if what in a.provides]
        if not found:
            from qntz.core.errors import PipelineError
            raise PipelineError(
                f"needs an input that provides {what}, but its inputs "
                f"({', '.join(self.inputs) or 'none'}) do not",
                where=self.where, hint=f"add a step that produces {what} to `needs`")
        return found[-1]
