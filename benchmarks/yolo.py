"""qntz's FP32 and INT8 ONNX of a YOLO against Ultralytics' own ONNX export (issue 20).

    python benchmarks/yolo.py [--config yolov8n.yaml] [--rounds 30] [--keep]

Builds the model from Ultralytics' yaml with seeded random weights (nothing is
downloaded), saves them, and converts the same weights twice in a temp folder: with
Ultralytics' `export(format="onnx")` (its defaults: batch 1, 640x640, simplified), and with
a plain qntz pipeline (preflight, `capture: {uses: auto}`, onnx, simplify, INT8 calibrated
on generated batches) at batch 1, 640x640. Then, on ONNX Runtime's CPU provider with the
same session options, it checks that qntz's FP32 detections output equals Ultralytics' on
fresh images, and times the three models interleaved (each round runs every model once, in
a rotated order) and prints the medians: qntz's FP32 latency against Ultralytics' (issue
20 asks for it within 5%), and INT8's speedup over both. Skips, saying so, without
ultralytics.
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

import numpy as np

FACTORY = '''
"""The benchmark's YOLO, built from Ultralytics' yaml; weights come from the pipeline."""


def yolo():
    from ultralytics import YOLO

    return YOLO("CONFIG").model
'''

PIPELINE = """
qntz: 1
name: yolo
model: {factory: models.yolo:yolo, weights: weights.pt}
inputs:
  x: {shape: [1, 3, 640, 640], range: [0.0, 1.0]}
data:
  calib: {from: generate, samples: 16}
steps:
  preflight: {}
  capture: {uses: auto}
  onnx: {opset: 18}
  simplify: {}
  int8: {uses: quantize, needs: [simplify], data: calib, recipe: static}
"""


def build(config: str, folder: Path) -> Path:
    """Seeded random weights, saved for qntz; Ultralytics' ONNX of the same weights."""
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO(config)
    torch.save(model.model.state_dict(), folder / "weights.pt")
    os.chdir(folder)  # Ultralytics writes its ONNX into the current folder
    return folder / model.export(format="onnx", imgsz=640, batch=1, verbose=False)


def convert(config: str, folder: Path) -> tuple[Path, Path]:
    """qntz's simplified FP32 and INT8 models, by the CLI as a user runs it."""
    (folder / "models").mkdir()
    (folder / "models/yolo.py").write_text(FACTORY.replace("CONFIG", config))
    (folder / "pipeline.yaml").write_text(PIPELINE)
    qntz = Path(sys.executable).with_name("qntz")
    start = time.perf_counter()
    done = subprocess.run([str(qntz), "run", "pipeline.yaml"], cwd=folder,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"qntz run failed:\n{done.stdout}{done.stderr}")
    print(f"qntz run: {time.perf_counter() - start:.0f}s")
    out = folder / "out/yolo"
    return out / "simplify/model.onnx", out / "int8/model.onnx"


def session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_outputs(ours, theirs, images: list[np.ndarray]) -> float:
    """The largest difference between the two FP32 detections outputs (qntz's first output
    is Ultralytics' `output0`: boxes and class scores per anchor)."""
    worst = 0.0
    for image in images:
        mine = ours.run(None, {ours.get_inputs()[0].name: image})[0]
        want = theirs.run(None, {theirs.get_inputs()[0].name: image})[0]
        if mine.shape != want.shape:
            sys.exit(f"output shapes differ: qntz {mine.shape}, Ultralytics {want.shape}")
        worst = max(worst, float(np.abs(mine - want).max()))
        if not np.allclose(mine, want, rtol=1e-3, atol=1e-3):
            sys.exit(f"qntz's FP32 output differs from Ultralytics' by {worst:.3g}")
    return worst


def interleaved(sessions: dict[str, object], image: np.ndarray, rounds: int
                ) -> dict[str, list[float]]:
    """Milliseconds per run; each round runs every model once, the order rotated."""
    names = list(sessions)
    feeds = {n: {s.get_inputs()[0].name: image} for n, s in sessions.items()}
    for name in names:  # warm-up
        for _ in range(3):
            sessions[name].run(None, feeds[name])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            sessions[name].run(None, feeds[name])
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def report(times: dict[str, list[float]], worst: float) -> None:
    median = {n: float(np.median(t)) for n, t in times.items()}
    ratio = np.median(np.array(times["qntz fp32"]) / np.array(times["ultralytics"]))
    print(f"FP32 outputs equal within atol/rtol 1e-3 (max abs difference {worst:.3g})")
    for name, value in median.items():
        print(f"{name:>12}: {value:8.2f} ms median (p90 {np.percentile(times[name], 90):.2f})")
    print(f"qntz FP32 / Ultralytics FP32: {ratio:.3f} (per-round median; within 5%: "
          f"{'yes' if abs(ratio - 1) <= 0.05 else 'NO'})")
    print(f"INT8 speedup: {median['qntz fp32'] / median['qntz int8']:.2f}x over qntz FP32, "
          f"{median['ultralytics'] / median['qntz int8']:.2f}x over Ultralytics' FP32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="yolov8n.yaml")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        print("skipped: ultralytics is not installed (pip install ultralytics)")
        return
    folder = Path(tempfile.mkdtemp(prefix="qntz-yolo-"))
    try:
        theirs = build(args.config, folder)
        fp32, int8 = convert(args.config, folder)
        rng = np.random.default_rng(7)
        images = [rng.uniform(0, 1, (1, 3, 640, 640)).astype(np.float32) for _ in range(3)]
        sessions = {"ultralytics": session(theirs), "qntz fp32": session(fp32),
                    "qntz int8": session(int8)}
        worst = check_outputs(sessions["qntz fp32"], sessions["ultralytics"], images)
        report(interleaved(sessions, images[0], args.rounds), worst)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
