"""Callables that run an artifact on a NumPy feed and return its flattened outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qntz.cache import Artifact
from qntz.inputs import InputSpec

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]
RUNNABLE = ("engine", "onnx", "exported_program", "torchscript")


class NotRunnable(Exception):
    """This machine cannot run the artifact (e.g. no GPU for an engine); the reason says why."""


def artifact_kind(artifact: Artifact) -> str | None:
    return next((k for k in RUNNABLE if k in artifact.provides), None)


def torch_runner(module: Any, inputs: dict[str, InputSpec]) -> Runner:
    import torch

    from qntz.torchio import flatten_outputs, to_torch

    def call(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return flatten_outputs(module(*to_torch(feed, inputs)))

    return call


def onnx_runner(path: Any) -> tuple[Runner, list[str]]:
    from qntz.ortrun import run, session

    sess = session(path)
    return (lambda feed: run(sess, feed)), [o.name for o in sess.get_outputs()]


def runner_for(artifact: Artifact, inputs: dict[str, InputSpec]) -> tuple[Runner, list[str]]:
    """A runner for a candidate artifact and its output names (empty when unnamed)."""
    kind = artifact_kind(artifact)
    if kind == "onnx":
        return onnx_runner(artifact.file("model.onnx"))
    if kind == "torchscript":
        import torch

        return torch_runner(torch.jit.load(str(artifact.file("model.pt"))).eval(), inputs), []
    if kind == "exported_program":
        import torch

        program = torch.export.load(str(artifact.file("model.pt2")))
        return torch_runner(program.module(), inputs), []
    if kind == "engine":
        from qntz.engine_runner import engine_runner

        return engine_runner(artifact), []
    raise NotRunnable(f"{artifact.step_id} produces nothing runnable ({artifact.provides})")
