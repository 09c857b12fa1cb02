"""Cold and cached `qntz run` of the quickstart, and qntz's overhead over a plain script.

    python benchmarks/runner_overhead.py [--repeat 3]

Every figure is the median wall time of separate processes (each imports what it needs),
measured on this machine. Targets: cached run at most 0.20 s; overhead under 20%.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wall(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    qntz = [sys.executable, "-m", "qntz", "run", "pipelines/quickstart.yaml"]
    plain = [sys.executable, str(REPO / "benchmarks" / "plain_quickstart.py")]
    cold, cached, baseline = [], [], []
    for _ in range(repeat):
        work = Path(tempfile.mkdtemp())  # a fresh project: its own cache and outputs
        shutil.copytree(REPO / "pipelines", work / "pipelines",
                        ignore=shutil.ignore_patterns("__pycache__", "*.lock.json"))
        (work / ".qntz").mkdir()
        cold.append(wall(qntz, work))
        cached.extend(wall(qntz, work) for _ in range(3))
        baseline.append(wall(plain, work))
        shutil.rmtree(work)
    cold_s, cached_s, plain_s = (statistics.median(v) for v in (cold, cached, baseline))
    print(f"quickstart, median of {repeat} cold runs / {3 * repeat} cached runs:")
    print(f"  cold qntz run       {cold_s:6.2f} s")
    print(f"  plain script        {plain_s:6.2f} s   (same library calls, no qntz)")
    print(f"  runner overhead     {100 * (cold_s - plain_s) / plain_s:+6.1f} %   (target < 20%)")
    print(f"  cached qntz run     {cached_s:6.3f} s   (target <= 0.20 s)")


if __name__ == "__main__":
    main()
