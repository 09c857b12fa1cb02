"""A plain pipeline's compare judges lossy candidates (INT8, FP16) by a bar that fits lossy
conversion when none is written, and still fails a broken one (issue 19)."""

from __future__ import annotations

import json

import numpy as np

from conftest import pipeline_text
from qntz.runtime.metrics import OutputStats

PLAIN = """\
capture: {uses: trace}
onnx: {}
simplify: {}
int8: {uses: quantize}
fp16: {uses: quantize, needs: [simplify], precision: fp16}
compare: {needs: [simplify, int8, fp16]}
"""


def rows(ws) -> dict[str, dict]:
    report = json.loads((ws.root / "out" / "t" / "compare" / "report.json").read_text())
    return {c["id"]: c for c in report["candidates"]}


def test_a_correct_int8_and_fp16_pass_with_no_tolerances_written(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", PLAIN))
    done = ws.qntz("run", path)
    assert done.code == 0, done.err
    found = rows(ws)
    assert {found[c]["status"] for c in ("simplify", "int8", "fp16")} == {"pass"}
    assert found["int8"]["outputs"][0]["metric"] == "cosine"
    assert found["simplify"]["outputs"][0]["metric"] == "auto"  # float keeps the tight bar


FROZEN = """\
import torch
from torch import nn


class FrozenSign(nn.Module):
    \"\"\"A classifier whose sign depends on the input's mean: tracing keeps one side.\"\"\"

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        y = self.head(self.conv(x).mean(dim=(2, 3)))
        return y if x.mean() > 0 else -y
"""


def test_a_frozen_branch_still_fails(ws):
    ws.write("models/frozen.py", FROZEN)
    text = pipeline_text("models.frozen:FrozenSign", PLAIN)
    path = ws.pipeline(text.replace("range: [0.0, 1.0]", "range: [-1.0, 1.0]"))  # either side
    done = ws.qntz("run", path)
    assert done.code == 1
    found = rows(ws)
    assert found["int8"]["status"] == "fail" and found["fp16"]["status"] == "fail"
    assert "if this loss is acceptable" not in done.err  # a flipped sign is no loss to accept


def test_a_lossy_failure_names_the_tolerance_that_accepts_it(ws):
    strict = PLAIN.replace("compare: {needs", "compare: {threshold: 0.999999, needs")
    done = ws.qntz("run", ws.pipeline(pipeline_text("models.clean:SmallCNN", strict)))
    assert done.code == 1
    assert "int8 (onnx) output 'output': mean cosine" in done.err
    assert "(fix: if this loss is acceptable, write `tolerances: {int8: {metric: cosine, " \
        "threshold: 0.99}}`" in done.err


def test_a_branch_frozen_away_from_the_range_end_fails_there(ws):
    ws.write("models/frozen.py", FROZEN)  # inputs in [0, 1]: only the all-zero end flips
    path = ws.pipeline(pipeline_text("models.frozen:FrozenSign", PLAIN))
    assert ws.qntz("run", path).code == 1
    int8 = rows(ws)["int8"]
    assert int8["status"] == "fail"
    ends = int8["outputs"][0]["range_ends"]
    assert any(not end["pass"] for end in ends if end["sample"].endswith("low"))


def _draws(stats: OutputStats, rng: np.random.Generator, step: float) -> None:
    for i in range(4):
        want = rng.normal(size=(1, 4, 32, 32))
        got = want + rng.uniform(-step, step, size=want.shape)
        stats.add(f"batch=1 random#{i}", got, want)


def test_a_near_zero_range_end_is_judged_against_the_draws_scale():
    rng = np.random.default_rng(0)
    zero = np.zeros((1, 4, 32, 32))
    step = 0.01  # one INT8 step of this output's scale

    def judged(got: np.ndarray) -> bool:
        stats = OutputStats("edges", None, None, metric="cosine")
        _draws(stats, rng, step)
        stats.add("batch=1 low", got, zero, jitter=lambda level: [zero.copy()])
        stats.finish()
        return stats.range_ends[0]["pass"]

    assert judged(zero + step)  # one step off an all-zero reference: cosine 0, yet fine
    assert not judged(zero + 0.5)  # off by the output's own size: a baked constant
