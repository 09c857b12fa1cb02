"""qntz's default INT8 recipe on CNNs: a trained MobileNet-style CNN on real data, and the
speed of that architecture and of a ResNet-18-shaped one at ImageNet size.

    python benchmarks/real_cnn.py

No pretrained ImageNet weights can be fetched on these machines, so the accuracy half trains
a MobileNet-style CNN (depthwise convolutions, the kind that suffers most from INT8) on
scikit-learn's handwritten digits (real scans, ~20 s on 2 cores) and checks INT8's top-1
agreement with it on the 597 held-out digits. The speed half times both architectures at
3x224x224, batch 1 (weights do not change the speed). Needs scikit-learn; without it the
script says so and exits 0. Targets: top-1 agreement at least 99%, INT8 at least 2x faster
than ONNX Runtime FP32.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "cnn"


def main() -> None:
    if importlib.util.find_spec("sklearn") is None:
        print("skipped: pip install scikit-learn to run this benchmark")
        return
    work = Path(tempfile.mkdtemp())
    shutil.copytree(HERE, work, dirs_exist_ok=True)
    accuracy = subprocess.run(
        [sys.executable, "-c", "from models.mobile import train; print(train())"],
        cwd=work, check=True, capture_output=True, text=True).stdout.split()[-1]
    rows = run(work, "digits.yaml", "digits", "check")
    int8 = rows["int8"]
    print(f"MobileNet-style CNN trained on digits (holdout accuracy {float(accuracy):.1%}): "
          f"INT8 top-1 agreement {int8['outputs'][0]['top1']:.1%} on 597 held-out digits "
          f"(target >= 99%)")
    for factory, label in (("models.mobile:MobileNet", "MobileNet-style"),
                           ("models.resnet:ResNet18", "ResNet-18-shaped")):
        text = (HERE / "speed.yaml").read_text().replace("MODEL", factory)
        (work / "speed.yaml").write_text(text)
        rows = run(work, "speed.yaml", "speed", "speed")
        fp32, int8 = (rows[k]["latency_ms"]["median"] for k in ("onnx", "int8"))
        print(f"{label} at 3x224x224, batch 1: ORT FP32 {fp32:.2f} ms, INT8 {int8:.2f} ms "
              f"= {fp32 / int8:.2f}x   (target >= 2x)")
    shutil.rmtree(work)


def run(work: Path, pipeline: str, name: str, step: str) -> dict:
    subprocess.run([sys.executable, "-m", "qntz", "run", pipeline], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    report = json.loads((work / "out" / name / step / "report.json").read_text())
    return {c["id"]: c for c in report["candidates"]}


if __name__ == "__main__":
    main()
