"""Plain qntz pipelines over real-world architectures (issue 10).

    python benchmarks/real_world/run_all.py [--only NAME ...] [--keep DIR] [--timeout S]

Each model gets the pipeline a new user would write (preflight, capture `auto`, onnx,
simplify, default INT8 quantize, compare), run by `qntz run --json` in its own workspace
(a temp folder, or DIR/<name> with --keep); the factories are plain functions in
models/zoo.py (transformers from small configs, MONAI at small sizes), plus the
pretrained EfficientNet-Lite0 of efficientnet_int8.py on real photos. Prints one row per
model: exit code, preflight verdicts, capture method, compare figures, INT8 speedup over
ONNX Runtime FP32 and the first failure line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TEXT = """\
  input_ids: {shape: [batch, seq], dtype: int64, dynamic: {batch: [1, 2, 4], seq: [4, 16, 32]},
              range: [0, 999]}
  attention_mask: {shape: [batch, seq], dtype: int64, range: [0, 1]}"""
IMAGE = "  pixel_values: {shape: [batch, 3, S, S], dynamic: {batch: [1, 2, 4]}, range: [-1.0, 1.0]}"
AUDIO = """\
  input_values: {shape: [batch, samples], dynamic: {batch: [1, 2, 4], samples: [1600, 4000, 8000]},
                 range: [-1.0, 1.0]}"""
MEL = "  input_features: {shape: [batch, 16, 64], dynamic: {batch: [1, 2, 4]}, range: [-1.0, 1.0]}"
VOLUME = "  x: {shape: [batch, 1, S, S, S], dynamic: {batch: [1, 2, 4]}, range: [0.0, 1.0]}"
SLICE = "  x: {shape: [batch, 1, S, S], dynamic: {batch: [1, 2, 4]}, range: [0.0, 1.0]}"
EFFNET = "  x: {shape: [batch, 3, 224, 224], dynamic: {batch: [1, 4, 8]}, range: [-2.2, 2.7]}"

MODELS = {  # name: inputs block
    **dict.fromkeys(["bert", "distilbert", "roberta", "albert", "electra", "gpt2", "llama",
                     "qwen2", "opt", "t5_encoder", "bart_encoder"], TEXT),
    "vit": IMAGE.replace("S", "32"), "convnext": IMAGE.replace("S", "64"),
    "swin": IMAGE.replace("S", "64"), "mobilevit": IMAGE.replace("S", "64"),
    "wav2vec2": AUDIO, "whisper_encoder": MEL,
    "monai_unet": VOLUME.replace("S", "32"), "monai_segresnet": SLICE.replace("S", "64"),
    "monai_basicunet": SLICE.replace("S", "64"), "monai_densenet121": SLICE.replace("S", "64"),
    "effnet": EFFNET,
}

PIPELINE = """\
qntz: 1
name: NAME
model: {factory: FACTORY}
inputs:
INPUTS
DATA
steps:
  preflight: {}
  capture: {uses: auto}
  onnx: {opset: 18}
  simplify: {}
  int8: {uses: quantize QUANTIZE}
  compare:
    needs: [capture, onnx, simplify, int8]
    COMPARE
    tolerances: {int8: {metric: METRIC, threshold: THRESHOLD}}
"""
EFFNET_DATA = """\
data:
  calib: {from: npz, path: calib.npz, batch: 8}
  holdout: {from: npz, path: holdout.npz, batch: 8}"""


def pipeline_text(name: str) -> str:
    """The YAML a new user would write for this model."""
    pretrained = name == "effnet"
    fields = {"NAME": name, "INPUTS": MODELS[name],
              "FACTORY": "models.effnet:pretrained" if pretrained else f"models.zoo:{name}",
              "DATA": EFFNET_DATA if pretrained else "",
              "QUANTIZE": ", data: calib" if pretrained else "",
              "COMPARE": "data: holdout" if pretrained else "",
              "METRIC": "top1" if pretrained else "cosine",
              "THRESHOLD": "0.85" if pretrained else "0.99"}
    text = PIPELINE
    for key, value in fields.items():
        text = text.replace(key, value)
    return "\n".join(line for line in text.splitlines() if line.strip()) + "\n"


def build(work: Path, name: str) -> None:
    """The workspace: a project root, the factories, data (EfficientNet only), the pipeline."""
    (work / ".qntz").mkdir(parents=True, exist_ok=True)
    shutil.copytree(HERE / "models", work / "models", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    if name == "effnet":
        import efficientnet_int8 as eff

        (work / "models" / "effnet.py").write_text(textwrap.dedent(eff.FACTORY).lstrip())
        np.savez(work / "calib.npz", x=eff.crops(64, seed=1))
        np.savez(work / "holdout.npz", x=eff.crops(128, seed=2))
    (work / "pipeline.yaml").write_text(pipeline_text(name))


def run(work: Path, timeout: float, src: Path | None) -> tuple[int, dict, str]:
    """`qntz run --json`: exit code, the parsed JSON (or {}), stderr."""
    cmd = [sys.executable, "-m", "qntz", "run", "--json", "pipeline.yaml"]
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return -1, {}, f"timeout after {timeout:.0f}s"
    return proc.returncode, parse(proc.stdout), proc.stderr


def parse(stdout: str) -> dict:
    """The JSON document; a model's own print() can come before it on stdout."""
    start = stdout.find('{\n "ok"')
    try:
        return json.loads(stdout[max(start, 0):])
    except json.JSONDecodeError:
        return {}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def verdicts(out: Path) -> str:
    found = read_json(out / "preflight" / "report.json").get("verdicts", {})
    return " ".join(f"{method}:{verdict}" for method, verdict in found.items()) or "-"


def figures(out: Path) -> tuple[str, str]:
    """Each compare candidate's status and key figure; INT8 speedup over ORT FP32."""
    report = read_json(out / "compare" / "report.json")
    parts = []
    for row in report.get("candidates", []):
        stats = (row.get("outputs") or [{}])[0]
        key = stats.get("cosine_mean") if row["id"] == "int8" else stats.get("max_abs")
        if row["id"] == "int8" and stats.get("metric") == "top1":
            key = stats.get("top1")
        shown = "-" if not isinstance(key, float) else f"{key:.4f}" if row["id"] == "int8" \
            else f"{key:.2g}"
        parts.append(f"{row['id']}:{row['status']}({shown})")
    timing = read_json(out / "compare" / "latency.json").get("candidates", {})
    speed = timing.get("int8", {}).get("speedup_vs_source")
    return " ".join(parts) or "-", f"{speed:.2f}x" if speed else "-"


def capture_method(result: dict) -> str:
    step = next((s for s in result.get("steps", []) if s.get("id") == "capture"), {})
    summary = step.get("summary") or {}
    return summary.get("method") or step.get("kind") or "-"


def failure(code: int, result: dict, stderr: str) -> str:
    if code == 0:
        return ""
    for step in result.get("steps", []):
        error = step.get("error")
        if error:
            text = error.get("message", error) if isinstance(error, dict) else error
            return f"{step.get('id')}: {text}"[:300]
    lines = [line for line in stderr.splitlines() if line.strip()]
    return (lines[-1] if lines else "no message")[:300]


def one(name: str, keep: Path | None, timeout: float, src: Path | None) -> dict:
    work = keep / name if keep else Path(tempfile.mkdtemp(prefix=f"qntz-{name}-"))
    if work.exists() and keep:
        shutil.rmtree(work)
    build(work, name)
    code, result, stderr = run(work, timeout, src)
    out = work / "out" / name
    compared, speedup = figures(out)
    row = {"model": name, "exit": code, "preflight": verdicts(out),
           "capture": capture_method(result), "compare": compared, "int8_vs_fp32": speedup,
           "failure": failure(code, result, stderr)}
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(MODELS), help="run this model")
    parser.add_argument("--keep", type=Path, help="keep each workspace as DIR/<name>")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pipeline")
    parser.add_argument("--src", type=Path, help="run qntz from this source folder (PYTHONPATH)")
    args = parser.parse_args()
    rows = []
    for name in args.only or MODELS:
        keep = args.keep.resolve() if args.keep else None
        rows.append(one(name, keep, args.timeout, args.src))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]).replace("|", "/") for k in keys) + " |")
    passed = sum(r["exit"] == 0 for r in rows)
    print(f"\n{passed}/{len(rows)} pipelines exit 0")


if __name__ == "__main__":
    main()
