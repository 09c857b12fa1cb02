"""How far a quantized model's first output is from the float model's: cosine and top-1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    from qntz.runtime.ortrun import run, session

    sess = session(path)
    return [run(sess, feed)[0] for feed in feeds]


def measure(reference: Path, candidate: Path, feeds: list[dict[str, np.ndarray]],
            expected: list[np.ndarray] | None = None) -> dict[str, Any]:
    """Agreement of the first output with the float model: cosine per row, and top-1 when
    that output is [rows, classes] (for a feature map or hidden states, the arg-max over a
    whole row is one arbitrary element: top-1 is then None)."""
    want = expected if expected is not None else outputs(reference, feeds)
    return measure_outputs(outputs(candidate, feeds), want)


def measure_outputs(got: list[np.ndarray], want: list[np.ndarray]) -> dict[str, Any]:
    from qntz.runtime.metrics import row_cosines

    cosines, agree, total = [], 0, 0
    for g, w in zip(got, want):
        cosines.extend(row_cosines(g, w))
        agree += int((g.reshape(len(g), -1).argmax(1) == w.reshape(len(w), -1).argmax(1)).sum())
        total += len(g)
    cos = np.asarray(cosines)
    classes = all(g.ndim == 2 for g in got)  # [rows, classes]: an arg-max means something
    return {"cosine": {"mean": float(cos.mean()), "min": float(cos.min()),
                       "drop": float(1 - cos.mean())},
            "top1": {"agreement": agree / total if classes else None,
                     "drop": 1 - agree / total if classes else None}}
