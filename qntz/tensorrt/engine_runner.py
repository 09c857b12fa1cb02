"""Running an engine with Polygraphy's TensorRT runner, where this machine can."""

from __future__ import annotations

from typing import Any

import numpy as np

from qntz.core.cache import Artifact
from qntz.core.inputs import InputSpec
from qntz.core.registry import NotRunnable, Runner


def engine_runner(artifact: Artifact, inputs: dict[str, InputSpec]) -> tuple[Runner, list[str]]:
    """A runner for the engine, or NotRunnable saying why this machine cannot run it."""
    from qntz.tensorrt import env as tensorrt_env

    summary = artifact.summary
    gpus = tensorrt_env.gpus()
    if not gpus:
        raise NotRunnable("no GPU")
    if summary.get("runtime") == "tensorrt-rtx":
        caps = {g["compute_capability"] for g in gpus}
        if not caps & set(summary.get("targets", [])):
            raise NotRunnable(f"a GPU the engine was not built for (GPU compute capability "
                              f"{', '.join(sorted(caps))}, engine targets "
                              f"{', '.join(summary.get('targets', []))})")
    tensorrt_env.import_tensorrt(summary["runtime"])
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    runner = TrtRunner(EngineFromBytes(artifact.file("engine.plan").read_bytes()))
    runner.activate()
    outputs = [t["name"] for t in summary.get("outputs", [])]

    def call(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result: dict[str, Any] = runner.infer(feed)
        return [np.asarray(result[name]) for name in outputs or list(result)]

    return call, []
