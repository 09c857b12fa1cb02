"""A small zoo on one machine: sequential vs `--jobs` vs a local Ray cluster, and a second
workspace served entirely from the remote cache.

    python benchmarks/fanout.py [--models 4]

Each pipeline is the quickstart's CNN at another width (so every key differs): trace,
ONNX, simplify, then INT8 and FP16 side by side, compared. Every figure is the wall time
of a separate `qntz run` of all the pipelines, each on an empty cache. The Ray cluster is
started here (a head and one more node) and stopped at the end; its start-up is not timed.
On a 2-core machine Ray has little to spread over: the figure shows its overhead, not a
cluster's gain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
STEPS = """\
steps:
  capture:  {uses: trace}
  onnx:     {opset: 17}
  simplify: {}
  int8:     {uses: quantize, data: calib}
  fp16:     {uses: quantize, needs: [simplify], precision: fp16}
  compare:  {needs: [simplify, int8, fp16], metric: top1, threshold: 0.9, iterations: 5}
"""


def zoo(folder: Path, count: int) -> list[str]:
    shutil.copytree(REPO / "pipelines" / "models", folder / "models")
    (folder / ".qntz").mkdir()
    files = []
    for index in range(count):
        text = (REPO / "pipelines" / "quickstart.yaml").read_text()
        head = text[:text.index("steps:")].replace("name: quickstart", f"name: zoo{index}")
        head = head.replace("{num_classes: 10}", f"{{num_classes: 10, width: {8 + 4 * index}}}")
        (folder / f"zoo{index}.yaml").write_text(head + STEPS)
        files.append(f"zoo{index}.yaml")
    return files


def timed(folder: Path, files: list[str], *extra: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qntz", "run", *files, *extra], cwd=folder,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, **env})
    return time.perf_counter() - start


def cluster(port: int) -> str:
    common = ["--num-cpus", "1", "--object-store-memory", "100000000", "--disable-usage-stats"]
    subprocess.run([str(RAY), "start", "--head", "--port", str(port),
                    "--include-dashboard=false", *common], check=True, capture_output=True)
    subprocess.run([str(RAY), "start", "--address", f"127.0.0.1:{port}", *common], check=True,
                   capture_output=True)
    return f"127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=4)
    count = parser.parse_args().models
    base = Path(tempfile.mkdtemp())
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    figures: dict[str, float] = {}
    try:
        for label, extra in (("sequential", ()), ("--jobs 2", ("--jobs", "2"))):
            folder = base / label.replace(" ", "")
            figures[label] = timed(folder, zoo(folder, count), *extra, env=env)
        address = cluster(6399)
        remote = {**env, "QNTZ_REMOTE": str(base / "remote")}
        folder = base / "ray"
        files = zoo(folder, count)
        figures["ray (2 nodes)"] = timed(folder, files, "--executor", "ray", "--address",
                                         address, env=remote)
        second = base / "second"
        figures["second workspace, from the remote"] = timed(second, zoo(second, count),
                                                             env=remote)
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    first = figures["sequential"]
    print(f"{count} pipelines of 7 steps each, on {os.cpu_count()} cores:")
    for label, seconds in figures.items():
        print(f"  {label:36s} {seconds:7.1f} s   {first / seconds:5.2f}x sequential")


if __name__ == "__main__":
    main()
