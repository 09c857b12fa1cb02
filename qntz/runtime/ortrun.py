"""Running ONNX models on ONNX Runtime's CPU provider with the pipeline's feeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def session(model: Path | bytes, threads: int = 0) -> Any:
    """A CPU session for a model file, or for a serialized model held in memory."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(sess: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    wanted = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feed.items() if k in wanted})
