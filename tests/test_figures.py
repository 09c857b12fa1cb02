"""Latency figures that hold under load and are refreshed when asked (issue 22): every model
timed in the same rounds, a speedup as the median of per-round ratios with its range, the
machine recorded, a forced compare's new figures kept."""

from __future__ import annotations

import json
import time

from conftest import pipeline_text
from qntz.compare.timing import interleaved, speedup

STEPS = "capture: {uses: trace}\nonnx: {}\nint8: {uses: quantize}\ncompare: {needs: [onnx, int8]}"


def test_a_speedup_is_the_median_of_per_round_ratios_under_bursts_of_load():
    calls = {"reference": 0}

    def burst() -> float:  # load that lands on whatever runs during the second round
        calls["reference"] += 1
        return 0.02 if 9 <= calls["reference"] <= 16 else 0.0

    timed = interleaved({"slow": lambda: time.sleep(0.004 + burst()),
                         "fast": lambda: time.sleep(0.002 + burst())}, iterations=20, warmup=0)
    found = speedup(timed["slow"], timed["fast"])
    assert 1.6 < found["median"] < 2.4, found  # the burst moves one round, not the median
    assert found["low"] < found["median"] and found["wide"]
    assert len(timed["slow"]["rounds"]) == 5 and timed["slow"]["iterations"] == 20


def test_the_report_shows_the_spread_and_the_machine(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    assert ws.qntz("run", path).code == 0
    timing = json.loads((ws.root / "out" / "t" / "compare" / "latency.json").read_text())
    assert timing["machine"]["cores"] and timing["machine"]["cpu"]
    int8 = timing["candidates"]["int8"]
    low, high = int8["speedup_vs_source_range"]
    assert low <= int8["speedup_vs_source"] <= high
    report = (ws.root / "out" / "t" / "compare" / "report.md").read_text()
    assert "Timed interleaved" in report and f"({low:.2f}–{high:.2f})" in report
    lasting = json.loads((ws.root / "out" / "t" / "compare" / "report.json").read_text())
    assert "machine" not in lasting and "speedup" not in lasting["candidates"][0]


def test_a_forced_compare_keeps_its_new_figures(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    assert ws.qntz("run", path).code == 0
    latency = ws.root / "out" / "t" / "compare" / "latency.json"
    first = latency.read_text()
    lock = path.with_name("pipeline.lock.json").read_text()
    forced = ws.qntz("run", path, "--step", "compare", "--force")
    assert forced.code == 0
    assert latency.read_text() != first  # re-measured, and the new figures are the ones kept
    assert path.with_name("pipeline.lock.json").read_text() == lock  # accuracy: unchanged
    again = ws.qntz("run", path)
    assert again.code == 0 and latency.read_text() != first


def test_remeasure_re_times_the_compare_steps_and_rebuilds_nothing(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    assert ws.qntz("run", path).code == 0
    latency = ws.root / "out" / "t" / "compare" / "latency.json"
    first = latency.read_text()
    again = ws.qntz("run", path, "--remeasure")
    assert again.code == 0
    ran = [line.split()[1] for line in again.out.splitlines() if line.startswith("✓")]
    assert ran == ["compare"], again.out
    assert latency.read_text() != first


def test_a_provider_onnx_runtime_lacks_here_is_one_line(ws):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        import pytest

        pytest.skip("this ONNX Runtime has CUDA: the step would run")
    steps = STEPS.replace("compare: {needs", "compare: {provider: cuda, needs")
    done = ws.qntz("run", ws.pipeline(pipeline_text("models.clean:SmallCNN", steps)))
    assert done.code == 1
    assert done.err.count("error:") == 1 and "CUDAExecutionProvider" in done.err
    assert "onnxruntime-gpu" in done.err


def test_a_model_too_slow_for_its_iterations_runs_fewer_in_the_same_rounds():
    """Eager GPT-2 on a CPU: 20 runs of every model would take most of the compare step."""
    timed = interleaved({"slow": lambda: time.sleep(0.05), "fast": lambda: time.sleep(0.001)},
                        iterations=20, warmup=1, budget_s=0.6)
    assert len(timed["slow"]["rounds"]) == len(timed["fast"]["rounds"]) == 5
    assert 5 <= timed["slow"]["iterations"] <= 10 and timed["fast"]["iterations"] == 20
