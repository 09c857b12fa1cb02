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


class TorchRunner:
    """Runs a torch module with the inputs bound to its forward by name; `names` are the
    names of its outputs (dict keys), known after the first call."""

    def __init__(self, module: Any, inputs: dict[str, InputSpec]):
        self.module, self.inputs, self.names = module, inputs, []

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        from qntz.torchio import flatten_outputs, output_names, to_torch

        args, kwargs = to_torch(feed, self.inputs, self.module)
        with torch.inference_mode():
            result = self.module(*args, **kwargs)
        self.names = self.names or output_names(result)
        return flatten_outputs(result)


def torch_runner(module: Any, inputs: dict[str, InputSpec]) -> TorchRunner:
    return TorchRunner(module, inputs)


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

        module = torch.jit.load(str(artifact.file("model.pt"))).eval()
        return torch_runner(module, inputs), artifact.summary.get("output_names") or []
    if kind == "exported_program":
        import torch

        program = torch.export.load(str(artifact.file("model.pt2")))
        return torch_runner(program.module(), inputs), artifact.summary.get("output_names") or []
    if kind == "engine":
        from qntz.engine_runner import engine_runner

        return engine_runner(artifact), []
    raise NotRunnable(f"{artifact.step_id} produces nothing runnable ({artifact.provides})")
