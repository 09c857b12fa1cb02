"""compare's wall with the reference on the GPU against the CPU (issue 21), same pipeline.

    python3 benchmarks/gpu_compare.py --size 354m [--devices cpu cuda] [--seq 32] [--json F]

Builds the scale benchmark's GPT-2 (random weights from a config; `input_ids` and
`attention_mask` with a dynamic batch and one sequence length: on CUDA, torch.export of
transformers' GPT-2 specializes a dynamic one, "Constraints violated (seq)") and runs one
pipeline per device in its own project: `model: {device: D}`, capture by torch.export,
ONNX opset 18, INT8 of the ONNX, and compare of all three (the ExportedProgram runs on D;
the ONNX candidates on ONNX Runtime's CPU provider, and on a GPU device's runs on
`--provider cuda` when given, which needs onnxruntime-gpu). Prints each step's seconds and
each candidate's verdict per device, and the compare wall ratio. Needs a CUDA build of
torch and a GPU for `cuda`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "scale"
sys.path.insert(0, str(HERE))

from scale_models import GPT2_SIZES  # noqa: E402

SIZES = {**GPT2_SIZES, "tiny": (2, 64, 2)}  # tiny: to try the pipeline, not to time it

PIPELINE = """qntz: 1
name: gpu
model: {{factory: "models.scale_models:GPT2", kwargs: {kwargs}, device: {device}}}
inputs:
  input_ids:
    shape: [batch, seq]
    dtype: int64
    dynamic: {{batch: [1, 2, 2], seq: [{seq}, {seq}, {seq}]}}
    range: [0, 50256]
  attention_mask: {{shape: [batch, seq], dtype: int64, range: [0, 1]}}
steps:
  capture: {{uses: export}}
  onnx: {{opset: 18}}
{int8}  compare: {{needs: [capture, onnx{also}], provider: {provider}}}
"""
INT8 = "  int8: {uses: quantize, needs: [onnx]}\n"


def run_one(size: str, device: str, provider: str, seq: int, int8: bool, root: Path
            ) -> dict:
    n_layer, n_embd, n_head = SIZES[size]
    project = root / device.replace(":", "")
    (project / "models").mkdir(parents=True)
    (project / "models" / "scale_models.py").write_text((HERE / "scale_models.py").read_text())
    kwargs = json.dumps({"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head})
    (project / "pipeline.yaml").write_text(
        PIPELINE.format(kwargs=kwargs, device=device, provider=provider, seq=seq,
                        int8=INT8 if int8 else "", also=", int8" if int8 else ""))
    done = subprocess.run([sys.executable, "-m", "qntz", "run", "pipeline.yaml", "--json"],
                          cwd=project, capture_output=True, text=True, env=os.environ.copy())
    try:
        document = json.loads(done.stdout)
    except ValueError:
        document = {}
    steps = document.get("steps") or []
    if isinstance(steps, dict):
        steps = [{"id": k, **v} for k, v in steps.items()]
    report = project / "out" / "gpu" / "compare" / "report.json"
    verdicts = {}
    if report.exists():
        verdicts = {c["id"]: c["status"] for c in json.loads(report.read_text())["candidates"]}
    return {"rc": done.returncode, "seconds": {s["id"]: s.get("seconds", 0.0) for s in steps},
            "verdicts": verdicts, "error": _error(document, done)}


def _error(document: dict, done: subprocess.CompletedProcess) -> str:
    if done.returncode == 0:
        return ""
    steps = document.get("steps") or []
    failed = [s for s in (steps.values() if isinstance(steps, dict) else steps)
              if s.get("error") or s.get("state") == "failed"]
    said = json.dumps(failed or document.get("error") or {}, indent=1)
    return (said + "\n" + done.stderr)[-3000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="354m")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seq", type=int, default=32, help="one sequence length: "
                        "torch.export of GPT-2 on CUDA specializes a dynamic one")
    parser.add_argument("--no-int8", action="store_true", help="compare capture and onnx only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="qntz-gpu-compare-") as tmp:
        for device in args.devices:
            provider = "cpu" if device == "cpu" else args.provider  # as a CPU box would
            results[device] = run_one(args.size, device, provider, args.seq,
                                      not args.no_int8, Path(tmp))
    print(f"GPT-2 {args.size}, ONNX Runtime provider cpu, and {args.provider} on a GPU")
    for device, r in results.items():
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in r["seconds"].items())
        print(f"  device {device}: exit {r['rc']}; {steps}; verdicts {r['verdicts']}")
        if r["rc"] != 0:
            print("    " + r["error"].strip().replace("\n", "\n    "))
    walls = {d: r["seconds"].get("compare") for d, r in results.items()}
    gpu = next((d for d in walls if d.startswith("cuda")), None)
    if "cpu" in walls and gpu and walls["cpu"] and walls[gpu]:
        same = len({json.dumps(r["verdicts"], sort_keys=True) for r in results.values()}) == 1
        print(f"  compare wall, cpu over {gpu}: {walls['cpu'] / walls[gpu]:.2f}x shorter on "
              f"{gpu} (issue 21's bar: 5x); same verdicts: {same}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
