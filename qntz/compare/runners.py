"""Callables that run an artifact on a NumPy feed and return its flattened outputs."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import numpy as np

from qntz.core.cache import Artifact
from qntz.core.inputs import InputSpec
from qntz.core.registry import NotRunnable, Runner, runner_factory

# where TorchScript and ExportedProgram candidates run (compare's `device`); None: where
# they were captured
TORCH_DEVICE: ContextVar[str | None] = ContextVar("qntz_torch_device", default=None)


class TorchRunner:
    """Runs a torch module with the inputs bound to its forward by name; `names` are the
    names of its outputs (dict keys), known after the first call."""

    def __init__(self, module: Any, inputs: dict[str, InputSpec], eager: bool = False):
        self.module, self.inputs, self.names, self.eager = module, inputs, [], eager

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        from qntz.runtime.torchio import (
            call_eager,
            exact_float32,
            flatten_outputs,
            output_names,
            to_torch,
        )

        with torch.inference_mode():
            if self.eager:  # the user's model failing is about the inputs, not a conversion
                with exact_float32():
                    result = call_eager(self.module, feed, self.inputs)
            else:
                args, kwargs = to_torch(feed, self.inputs, self.module)
                result = self.module(*args, **kwargs)
        self.names = self.names or output_names(result, self.inputs)
        return flatten_outputs(result)


def torch_runner(module: Any, inputs: dict[str, InputSpec], eager: bool = False) -> TorchRunner:
    return TorchRunner(module, inputs, eager)


def onnx_runner(path: Any) -> tuple[Runner, list[str]]:
    from qntz.runtime.ortrun import run, session

    sess = session(path)
    return (lambda feed: run(sess, feed)), [o.name for o in sess.get_outputs()]


def onnx_artifact_runner(artifact: Artifact, inputs: dict[str, InputSpec]
                         ) -> tuple[Runner, list[str]]:
    return onnx_runner(artifact.file("model.onnx"))


def torchscript_runner(artifact: Artifact, inputs: dict[str, InputSpec]
                       ) -> tuple[Runner, list[str]]:
    import torch

    module = torch.jit.load(str(artifact.file("model.pt")), map_location=TORCH_DEVICE.get())
    module.eval()
    return torch_runner(module, inputs), artifact.summary.get("output_names") or []


def exported_program_runner(artifact: Artifact, inputs: dict[str, InputSpec]
                            ) -> tuple[Runner, list[str]]:
    import torch

    module = torch.export.load(str(artifact.file("model.pt2"))).module()
    if TORCH_DEVICE.get():
        module.to(TORCH_DEVICE.get())
    return torch_runner(module, inputs), artifact.summary.get("output_names") or []


def artifact_kind(artifact: Artifact) -> str | None:
    found = runner_factory(artifact.provides)
    return found[0] if found else None


def runner_for(artifact: Artifact, inputs: dict[str, InputSpec]) -> tuple[Runner, list[str]]:
    """A runner for a candidate artifact and its output names (empty when unnamed), from the
    runner registered for what it provides."""
    found = runner_factory(artifact.provides)
    if found is None:
        raise NotRunnable(f"{artifact.step_id} produces nothing runnable ({artifact.provides})")
    return found[1](artifact, inputs)
