"""Latency and accuracy of PyTorch eager, ONNX Runtime FP32, FP16 and INT8 (static and
dynamic), side by side, for the quickstart CNN and the transformer example.

    python benchmarks/quantize_speed.py [--iterations 200]

Each model is converted by a real qntz pipeline written to a temporary folder; the figures
are what its `compare` step measured on this machine (median latency at the inputs' opt
sizes; accuracy against PyTorch on the compare inputs). Targets: INT8 at least 2.5x faster
than ONNX Runtime FP32 on the CNN, 2x on the transformer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STEPS = """
steps:
  onnx: {{{onnx}}}
  fp16: {{uses: quantize, needs: [onnx], precision: fp16}}
  int8_static: {{uses: quantize, needs: [onnx], recipe: static{data}}}
  int8_dynamic: {{uses: quantize, needs: [onnx], recipe: dynamic{data}}}
  int8_unfused: {{uses: quantize, needs: [onnx], recipe: dynamic, fuse: false{data}}}
  compare:
    needs: [onnx, fp16, int8_static, int8_dynamic, int8_unfused]{compare_data}
    metric: cosine
    threshold: 0.0
    samples: 4
    iterations: {iterations}
    warmup: 10
"""


def pipeline(source: Path, iterations: int) -> str:
    text = source.read_text()
    head = text[: text.index("steps:")]
    is_cnn = "calib" in head
    onnx = "opset: 17" if is_cnn else "opset: 18, exporter: dynamo"
    return head + STEPS.format(onnx=onnx, data=", data: calib" if is_cnn else ", data: padded",
                               compare_data="" if is_cnn else "\n    data: padded",
                               iterations=iterations)


def run(name: str, iterations: int, work: Path) -> dict:
    (work / f"{name}.yaml").write_text(pipeline(REPO / "pipelines" / f"{name}.yaml", iterations))
    subprocess.run([sys.executable, "-m", "qntz", "run", f"{name}.yaml"], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    out = work / "out" / name
    return json.loads((out / "compare" / "report.json").read_text())


def table(name: str, report: dict) -> None:
    ref = report["reference"]["latency_ms"]["median"]
    rows = {c["id"]: c for c in report["candidates"]}
    fp32 = rows["onnx"]["latency_ms"]["median"]
    print(f"\n{name}  (PyTorch eager {ref:.2f} ms)")
    print(f"  {'variant':<14}{'ms':>9}{'vs eager':>10}{'vs ORT fp32':>13}{'cosine min':>12}"
          f"{'top-1':>8}")
    for step, label in (("onnx", "ORT fp32"), ("fp16", "ORT fp16"),
                        ("int8_static", "int8 static"), ("int8_dynamic", "int8 dynamic"),
                        ("int8_unfused", "  no fusion")):
        c = rows[step]
        ms = c["latency_ms"]["median"]
        top1 = "—" if c.get("top1") is None else f"{c['top1']:.1%}"
        print(f"  {label:<14}{ms:>9.2f}{ref / ms:>9.2f}x{fp32 / ms:>12.2f}x"
              f"{c['cosine_min']:>12.5f}{top1:>8}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    shutil.copytree(REPO / "pipelines" / "models", work / "models")
    for name in ("quickstart", "encoder"):
        table(name, run(name, args.iterations, work))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
