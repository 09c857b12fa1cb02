"""How steady the quickstart's INT8-over-ORT-FP32 figure is, per way of timing (issue 22).

    .venv/bin/python benchmarks/timing_modes.py OUT_QUICKSTART [--processes 5] [--rounds 40]

OUT_QUICKSTART is a built quickstart's `out/quickstart` folder. Each of N fresh processes
times PyTorch eager, simplify, int8 and fp16 (compare's four check models, input 4x3x64x64)
in rounds, once in blocks (each model 4 calls in turn, as compare does) and once call by
call (one call of each model in turn); then prints, per mode, number of rounds and
estimator, every process's figure and how far apart they are (max/min - 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[4])
from qntz.runtime.ortrun import session
from models.tiny_cnn import TinyCNN
out, mode, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = np.random.default_rng(1).uniform(0, 1, (4, 3, 64, 64)).astype(np.float32)
model, xt = TinyCNN(num_classes=10).eval(), torch.from_numpy(x)
def eager():
    with torch.no_grad():
        model(xt)
sessions = {n: session(f"{out}/{n}/model.onnx") for n in ("simplify", "int8", "fp16")}
calls = {"ref": eager, **{n: (lambda s=s: s.run(None, {"x": x})) for n, s in sessions.items()}}
for call in calls.values():
    for _ in range(3):
        call()
names, raw = list(calls), {n: [] for n in calls}
for r in range(rounds):
    turn = names[r % len(names):] + names[:r % len(names)]
    times = {n: [] for n in names}
    order = [n for n in turn for _ in range(4)] if mode == "block" else turn * 4
    for n in order:
        start = time.perf_counter()
        calls[n]()
        times[n].append(time.perf_counter() - start)
    for n in names:
        raw[n].append(times[n])
print(json.dumps(raw))
"""


def estimators(raw: dict, rounds: int) -> dict[str, float]:
    fp32, int8 = np.array(raw["simplify"][:rounds]), np.array(raw["int8"][:rounds])
    return {"median of round medians (qntz)": float(np.median(np.median(fp32, 1)
                                                             / np.median(int8, 1))),
            "median of round minima": float(np.median(fp32.min(1) / int8.min(1))),
            "ratio of minima": float(fp32.min() / int8.min()),
            "ratio of medians": float(np.median(fp32) / np.median(int8))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    for mode in ("block", "call"):
        runs = [json.loads(subprocess.run(
            [sys.executable, "-c", CHILD, str(args.out.resolve()), mode, str(args.rounds),
             str(REPO / "pipelines")], check=True, capture_output=True, text=True).stdout)
            for _ in range(args.processes)]
        for rounds in sorted({5, 10, 20, args.rounds}):
            rows = [estimators(raw, rounds) for raw in runs]
            for name in rows[0]:
                values = [row[name] for row in rows]
                print(f"{mode:5s} {rounds:2d} rounds  {name:32s} "
                      + " ".join(f"{v:.2f}" for v in values)
                      + f"   apart {100 * (max(values) / min(values) - 1):.0f}%")


if __name__ == "__main__":
    main()
