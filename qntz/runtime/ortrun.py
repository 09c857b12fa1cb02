"""Running ONNX models on ONNX Runtime with the pipeline's feeds: on its CPU provider, or
where a compare step asks (`provider: cuda | tensorrt`, set for that step's thread only)."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

PROVIDERS = {"cpu": ["CPUExecutionProvider"],
             "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                          "CPUExecutionProvider"]}
PROVIDER: ContextVar[str] = ContextVar("qntz_ort_provider", default="cpu")
# intra-op threads of the sessions opened while set (compare's timing runs); 0: ORT's default
THREADS: ContextVar[int] = ContextVar("qntz_ort_threads", default=0)


def missing_provider(name: str) -> str | None:
    """Why ONNX Runtime here cannot run on `name`, or None when it can."""
    import onnxruntime as ort

    wanted, available = PROVIDERS[name][0], ort.get_available_providers()
    if wanted in available:
        return None
    return (f"ONNX Runtime here has no {wanted} (available: {', '.join(available)}); "
            "install onnxruntime-gpu in place of onnxruntime")


def session(model: Path | bytes, threads: int = 0) -> Any:
    """A session for a model file, or for a serialized model held in memory, on the
    provider in force (CPU unless a compare step asked for another)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads := threads or THREADS.get():
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    name = PROVIDER.get()
    sess = ort.InferenceSession(source, options, providers=_with_options(PROVIDERS[name]))
    if PROVIDERS[name][0] not in sess.get_providers():
        raise RuntimeError(f"ONNX Runtime could not start its {PROVIDERS[name][0]} (it fell "
                           f"back to {', '.join(sess.get_providers())}): its CUDA libraries "
                           "did not load; set `provider: cpu`, or install the CUDA libraries "
                           "onnxruntime-gpu needs")
    return sess


def _with_options(providers: list[str]) -> list[Any]:
    """TF32 off on CUDA (ONNX Runtime turns it on by default): float candidates are held to
    float tolerances against a reference that runs with TF32 off too, and TF32 MatMuls miss
    them by 1e-3 on a transformer."""
    return [(p, {"use_tf32": "0"}) if p == "CUDAExecutionProvider" else p for p in providers]


def run(sess: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    wanted = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feed.items() if k in wanted})
