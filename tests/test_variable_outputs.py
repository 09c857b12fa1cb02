"""Detections: a variable-length output compared row by matched row (`match: rows`), a
count that differs said as such (issue 20); compare's table keeps its numbers at 80 columns
(issue 22)."""

from __future__ import annotations

import io

import numpy as np

from qntz.runtime.metrics import OutputStats


def boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    corner = rng.uniform(0, 300, (count, 2))
    return np.concatenate([corner, corner + rng.uniform(10, 50, (count, 2))], axis=1)


def test_detections_in_another_order_pass_when_rows_are_matched():
    rng = np.random.default_rng(0)
    want = boxes(rng, 7)
    got = want[rng.permutation(7)] + rng.normal(0, 1e-5, want.shape)
    in_order = OutputStats("boxes", None, None)
    in_order.add("batch=1 random#0", got, want)
    matched = OutputStats("boxes", None, None, match="rows")
    matched.add("batch=1 random#0", got, want)
    assert not in_order and matched


def test_a_wrong_detection_still_fails_when_rows_are_matched():
    rng = np.random.default_rng(1)
    want = boxes(rng, 5)
    got = want.copy()
    got[2] += 40.0  # one box off by its own size
    matched = OutputStats("boxes", None, None, match="rows")
    matched.add("batch=1 random#0", got[::-1].copy(), want)
    assert not matched


def test_a_different_count_of_detections_is_named():
    rng = np.random.default_rng(2)
    stats = OutputStats("boxes", None, None, match="rows")
    stats.add("batch=1 random#0", boxes(rng, 4), boxes(rng, 6))
    assert not stats
    assert "4 rows vs the reference's 6" in stats.verdict()
    assert "variable-length" in stats.verdict()


def test_the_candidates_table_keeps_its_numbers_at_80_columns():
    from rich.console import Console

    from qntz.compare.console import candidates_table

    summary = {"reference": {"runs": "PyTorch eager", "latency_ms": {"median": 41.1}},
               "candidates": [
                   {"id": "a_rather_long_candidate_name", "artifact": "onnx", "status": "pass",
                    "reason": "", "max_abs": 0.0123, "cosine_min": 0.98765, "top1": 0.985,
                    "latency_ms": {"median": 1.07}, "speedup": 38.4},
                   {"id": "engine", "artifact": "engine", "status": "not run",
                    "reason": "engine (engine) not run: no GPU that can run its engines"}]}
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(candidates_table("compare", summary))
    text = out.getvalue()
    assert "…" not in text
    for figure in ("0.012", "0.98765", "98.5%", "1.07", "38.40x"):
        assert figure in text, text
    assert "no GPU that can run its engines" in text.replace("\n", " ")
