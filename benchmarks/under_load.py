"""What a busy machine changes in qntz's results: nothing in the artifacts, little in the figures.

    .venv/bin/python benchmarks/under_load.py [--part bytes|speedup|both] [--hogs N]

`bytes`: the encoder's INT8 step (pipelines/encoder.yaml) built twice from scratch, once on
a quiet machine and once beside N busy-looping processes (default: one per core); prints
each run's cache key and the sha256 of its model.onnx. They must be the same (an artifact
chosen by a stopwatch would differ).

`speedup`: the quickstart (pipelines/quickstart.yaml) run `--runs` times (default 2) from
scratch, beside the hogs; prints the INT8 speedup over ONNX Runtime FP32 that its `check`
and `compare` steps measured in each run, with the spread of the per-round ratios, and how
far the runs differ, largest over smallest (target: under 20%).

Each run has a fresh project folder (its own cache); the hogs are this script's children,
stopped by PID.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOG = "while True: pass"


@contextmanager
def hogs(count: int) -> Iterator[None]:
    """`count` processes spinning on a core each, for the block."""
    procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait()


def fresh_run(pipeline: str, step: str | None) -> Path:
    """Run `pipeline` of pipelines/ in a new project folder; that folder."""
    work = Path(tempfile.mkdtemp(prefix="qntz-load-"))
    shutil.copytree(REPO / "pipelines", work, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.lock.json"))
    (work / ".qntz").mkdir()
    command = [sys.executable, "-m", "qntz", "run", pipeline, *(["--step", step] if step else [])]
    env = {k: v for k, v in os.environ.items() if k != "QNTZ_CACHE"}
    subprocess.run(command, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    return work


def int8_bytes(hog_count: int) -> bool:
    seen = []
    for label, count in (("quiet", 0), (f"{hog_count} hogs", hog_count)):
        with hogs(count):
            started = time.perf_counter()
            work = fresh_run("encoder.yaml", "int8")
            seconds = time.perf_counter() - started
        lock = json.loads((work / "encoder.lock.json").read_text())["steps"]["int8"]
        model = hashlib.sha256((work / "out" / "encoder" / "int8" / "model.onnx").read_bytes())
        seen.append((lock["key"], model.hexdigest()))
        print(f"int8 {label:>8}: {seconds:6.1f} s  key {lock['key'][:16]}  "
              f"model.onnx sha256 {model.hexdigest()[:16]}")
        shutil.rmtree(work)
    same = seen[0] == seen[1]
    print(f"same key: {seen[0][0] == seen[1][0]}; same bytes: {seen[0][1] == seen[1][1]}")
    return same


def int8_speedups(hog_count: int, runs: int) -> bool:
    medians: dict[str, list[float]] = {"check": [], "compare": []}
    for index in range(runs):
        with hogs(hog_count):
            work = fresh_run("quickstart.yaml", None)
        for step, seen in medians.items():
            latency = json.loads((work / "out" / "quickstart" / step / "latency.json")
                                 .read_text())
            row = latency["candidates"]["int8"]
            low, high = row.get("speedup_vs_source_range") or (None, None)
            seen.append(row["speedup_vs_source"])
            print(f"run {index + 1} ({hog_count} hogs) {step:7s}: int8 "
                  f"{row['speedup_vs_source']:.2f}x over ORT FP32 (per-round {low:.2f}–"
                  f"{high:.2f}{', wide' if row.get('speedup_vs_source_wide') else ''}; clock "
                  f"{latency['machine'].get('clock', 'wall')})")
        shutil.rmtree(work)
    held = True
    for step, seen in medians.items():
        apart = max(seen) / min(seen) - 1
        held = held and apart < 0.2
        print(f"{step}: the runs differ by up to {apart:.0%} (target: under 20%)")
    return held


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["bytes", "speedup", "both"], default="both")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=2, help="quickstart runs for `speedup`")
    args = parser.parse_args()
    held = []
    if args.part in ("bytes", "both"):
        held.append(int8_bytes(args.hogs))
    if args.part in ("speedup", "both"):
        held.append(int8_speedups(args.hogs, args.runs))
    return 0 if all(held) else 1


if __name__ == "__main__":
    sys.exit(main())
