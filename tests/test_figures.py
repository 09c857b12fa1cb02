"""Latency figures that hold under load and are refreshed when asked (issue 22): every model
timed in the same rounds, a speedup as the median of per-round ratios with its range, the
machine recorded, a forced compare's new figures kept."""

from __future__ import annotations

import json
import threading
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


def test_the_cpu_clock_counts_the_work_of_a_call_not_the_time_it_waits():
    """What a busy machine does to a timed call: it waits for a core. The `cpu` clock does not
    count the wait (a sleep here), so a speedup measured beside another job holds."""
    def busy() -> None:
        end = time.thread_time() + 0.01
        while time.thread_time() < end:
            pass

    waits = {"waits": lambda: (time.sleep(0.05), busy()), "works": busy}
    on_cpu = interleaved(waits, iterations=5, warmup=0, clock="cpu")
    on_wall = interleaved(waits, iterations=5, warmup=0, clock="wall")
    assert 0.8 < speedup(on_cpu["waits"], on_cpu["works"])["median"] < 1.25
    assert speedup(on_wall["waits"], on_wall["works"])["median"] > 2.5
    assert on_wall["waits"]["median"] >= 50 and 9 <= on_cpu["waits"]["median"] < 15


def test_timing_phases_running_side_by_side_take_turns():
    """Two compare steps under `--jobs 2`: one's timing runs must not be the other's load."""
    spans: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}

    def timed_in_thread(name: str) -> None:
        def call() -> None:
            start = time.perf_counter()
            time.sleep(0.002)
            spans[name].append((start, time.perf_counter()))
        interleaved({name: call}, iterations=10, warmup=1)

    threads = [threading.Thread(target=timed_in_thread, args=(n,)) for n in spans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (a_first, a_last), (b_first, b_last) = ((s[0][0], s[-1][1]) for s in spans.values())
    assert a_last <= b_first or b_last <= a_first, "the two timing phases overlapped"


def test_the_report_shows_the_spread_and_the_machine(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    assert ws.qntz("run", path).code == 0
    timing = json.loads((ws.root / "out" / "t" / "compare" / "latency.json").read_text())
    assert timing["machine"]["cores"] and timing["machine"]["cpu"]
    assert timing["machine"]["clock"] == "cpu" and timing["machine"]["timed_threads"] == 1
    int8 = timing["candidates"]["int8"]
    low, high = int8["speedup_vs_source_range"]
    assert low <= int8["speedup_vs_source"] <= high
    report = (ws.root / "out" / "t" / "compare" / "report.md").read_text()
    assert "Timed interleaved" in report and f"({low:.2f}–{high:.2f})" in report
    assert "each model on one thread, timed by that thread's CPU time" in report
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


def test_compare_on_every_core_is_timed_by_the_wall_clock(ws):
    """A thread pool's work is off the calling thread: its CPU time would miss it."""
    steps = STEPS.replace("compare: {needs", "compare: {threads: 0, needs")
    assert ws.qntz("run", ws.pipeline(pipeline_text("models.clean:SmallCNN", steps))).code == 0
    timing = json.loads((ws.root / "out" / "t" / "compare" / "latency.json").read_text())
    assert timing["machine"]["clock"] == "wall" and timing["machine"]["timed_threads"] == 0
    report = (ws.root / "out" / "t" / "compare" / "report.md").read_text()
    assert "each model on every core, timed by the wall clock" in report
