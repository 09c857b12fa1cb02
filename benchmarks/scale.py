"""qntz's plain pipeline against the same conversion by hand, on production-size models.

    .venv/bin/python benchmarks/scale.py --size 124m [--batch 1 2] [--seq 8 32] [--keep]
    .venv/bin/python benchmarks/scale.py --size vit --vit-layers 8     # a smaller ViT

Builds GPT-2 from `transformers.GPT2Config` with random weights (124m: 12 layers x 768,
354m: 24 x 1024, 642m: 36 x 1280) taking `input_ids` + `attention_mask` with dynamic batch
and sequence and returning logits, or a ViT (`--size vit`: hidden 1280, 32 layers, ~630M,
`pixel_values` with a dynamic batch, returning last_hidden_state). Writes a plain pipeline
(preflight, capture auto, onnx opset 18, simplify, int8 = quantize of onnx, compare of
simplify and int8) into a temporary project and runs `qntz run --json` in a subprocess,
then `benchmarks/scale/by_hand.py` (torch.export + dynamo ONNX export, onnxsim,
quantize_dynamic, one ONNX Runtime check of each model against eager) in another, one
after the other. Prints per step the wall seconds (qntz: the run's steps[].seconds), each
whole process's peak RSS (`/usr/bin/time -v`, else getrusage of the children), the bytes
each step holds in the cache, and the ratios to the by-hand figures. Issue 19's bars:
wall <= 1.5x, int8 <= 2x (quantize_dynamic + one check), RSS <= 1x, cache <= 3x the ONNX.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "scale"
sys.path.insert(0, str(HERE))

from scale_models import GPT2_SIZES  # noqa: E402

TIME = "/usr/bin/time"

PIPELINE = """qntz: 1
name: {name}
model: {{factory: "models.scale_models:{factory}", kwargs: {kwargs}}}
inputs:
{inputs}
steps:
  preflight: {{}}
  capture: {{uses: auto}}
  onnx: {{opset: 18}}
  simplify: {{}}
  int8: {{uses: quantize, needs: [onnx]}}
  compare: {{needs: [simplify, int8]}}
"""

GPT2_INPUTS = """  input_ids:
    shape: [batch, seq]
    dtype: int64
    dynamic: {{batch: [{b0}, {b0}, {b1}], seq: [{s0}, {sm}, {s1}]}}
    range: [0, 50256]
  attention_mask: {{shape: [batch, seq], dtype: int64, range: [0, 1]}}"""

VIT_INPUTS = """  pixel_values:
    shape: [batch, 3, {image}, {image}]
    dtype: float32
    dynamic: {{batch: [{b0}, {b0}, {b1}]}}
    range: [0.0, 1.0]"""


def spec(args: argparse.Namespace) -> dict:
    b0, b1 = args.batch
    s0, s1 = args.seq
    if args.size == "vit":
        kwargs = {"hidden": args.vit_hidden, "layers": args.vit_layers,
                  "heads": args.vit_hidden // 80, "image": args.image, "patch": 14}
        inputs = VIT_INPUTS.format(image=args.image, b0=b0, b1=b1)
        return {"kind": "vit", "factory": "ViT", "kwargs": kwargs, "inputs": inputs,
                "batch": max(b1, 2), "batch_max": max(b1, 2), "image": args.image}
    n_layer, n_embd, n_head = GPT2_SIZES[args.size]
    kwargs = {"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head}
    inputs = GPT2_INPUTS.format(b0=b0, b1=b1, s0=s0, s1=s1, sm=(s0 + s1) // 2)
    return {"kind": "gpt2", "factory": "GPT2", "kwargs": kwargs, "inputs": inputs,
            "batch": max(b1, 2), "batch_max": max(b1, 2), "seq": (s0 + s1) // 2,
            "seq_max": max(s1, 3)}


def timed(command: list[str], cwd: Path, env: dict) -> tuple[subprocess.CompletedProcess,
                                                                float, int]:
    """Run `command`; its wall seconds and the peak RSS (bytes) of its process tree's
    largest process (`/usr/bin/time -v`'s figure, else getrusage of the children)."""
    report = Path(tempfile.mkstemp(suffix=".time")[1])
    use_time = Path(TIME).exists()
    full = [TIME, "-v", "-o", str(report), *command] if use_time else command
    start = time.perf_counter()
    done = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = 0
    if use_time:
        for line in report.read_text().splitlines():
            if "Maximum resident set size" in line:
                peak = int(line.rsplit(":", 1)[1]) * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    report.unlink()
    return done, wall, peak


def cache_bytes(project: Path, keys: dict[str, str]) -> tuple[dict[str, int], int]:
    """Bytes each step's entry holds in the cache (entries/<kk>/<key>/, one count per
    inode; steps named through the run's keys), and the whole cache's total."""
    root = project / ".qntz" / "cache"
    step_of = {key: sid for sid, key in keys.items() if key}
    seen: set[tuple[int, int]] = set()
    per_step: dict[str, int] = {}
    total = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        stat = path.stat()
        if (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        total += stat.st_size
        parts = path.relative_to(root).parts
        owner = parts[0]
        if parts[0] == "entries" and len(parts) > 3:
            owner = step_of.get(parts[2], "entries (other keys)")
        per_step[owner] = per_step.get(owner, 0) + stat.st_size
    return per_step, total


def run_qntz(project: Path, env: dict) -> dict:
    done, wall, peak = timed([sys.executable, "-m", "qntz", "run", "pipeline.yaml", "--json"],
                             project, env)
    (project / "qntz.stdout").write_text(done.stdout)
    (project / "qntz.stderr").write_text(done.stderr)
    try:
        document = json.loads(done.stdout)
    except ValueError:
        document = {}
    steps = document.get("steps") or {}
    if isinstance(steps, list):
        steps = {s.get("id", str(i)): s for i, s in enumerate(steps)}
    per_step, total = cache_bytes(project, {sid: s.get("key") for sid, s in steps.items()})
    return {"rc": done.returncode, "wall": wall, "peak": peak, "document": document,
            "seconds": {sid: s.get("seconds", 0.0) for sid, s in steps.items()},
            "states": {sid: s.get("state", "?") for sid, s in steps.items()},
            "cache": per_step, "cache_total": total, "stderr": done.stderr}


def run_by_hand(work: Path, model_spec: dict, env: dict) -> dict:
    spec_path, result_path = work / "spec.json", work / "by_hand.json"
    spec_path.write_text(json.dumps(model_spec))
    done, wall, peak = timed([sys.executable, str(HERE / "by_hand.py"), str(spec_path),
                              str(result_path), str(work / "by_hand")], work, env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the by-hand script failed (exit {done.returncode})")
    result = json.loads(result_path.read_text())
    return {"wall": wall, "peak": peak, **result}


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "—"


def table(size: str, q: dict, h: dict) -> None:
    hs = h["seconds"]
    # what each qntz step corresponds to by hand
    by_hand = {"load": hs["load"], "preflight": 0.0, "capture": hs["export"],
               "onnx": hs["onnx"], "simplify": hs["simplify"],
               "int8": hs["int8"] + hs["check_int8"],
               "compare": hs["eager"] + hs["check_simplify"] + hs["check_int8"]}
    print(f"\n{size}: qntz run exit {q['rc']}, float ONNX {gb(h['onnx_bytes'])}")
    print(f"  {'step':<11}{'state':<9}{'qntz s':>9}{'by hand s':>11}{'ratio':>8}"
          f"{'cache':>11}")
    for sid in ("load", "preflight", "capture", "onnx", "simplify", "int8", "compare"):
        s = q["seconds"].get(sid)
        shown = "—" if s is None else f"{s:.1f}"
        hand = by_hand[sid]
        r = ratio(s, hand) if s is not None and hand else "—"
        print(f"  {sid:<11}{q['states'].get(sid, '—'):<9}{shown:>9}{hand:>11.1f}{r:>8}"
              f"{gb(q['cache'].get(sid, 0)):>11}")
    other = {k: v for k, v in q["cache"].items() if v >= 1e7 and k not in (
        "load", "preflight", "capture", "onnx", "simplify", "int8", "compare")}
    if other:
        print("  cache, elsewhere: " + ", ".join(f"{k} {gb(v)}" for k, v in other.items()))
    print(f"  {'whole run':<20}{q['wall']:>9.1f}{h['wall']:>11.1f}{ratio(q['wall'], h['wall']):>8}"
          "   (bar 1.5x)")
    print(f"  {'int8 vs quantize_dynamic + one check':<40}"
          f"{ratio(q['seconds'].get('int8', 0), hs['int8'] + hs['check_int8'])}   (bar 2x)")
    print(f"  {'peak RSS':<20}{gb(q['peak']):>9}{gb(h['peak']):>11}{ratio(q['peak'], h['peak']):>8}"
          "   (bar 1x)")
    times = ratio(q["cache_total"], h["onnx_bytes"])
    print(f"  {'cache bytes':<20}{gb(q['cache_total']):>9}  = {times} the float ONNX   (bar 3x)")
    print("  by hand: " + ", ".join(f"{k} {v:.1f}s" for k, v in hs.items())
          + "; cosine " + ", ".join(f"{k} {v:.5f}" for k, v in h["cosine"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=[*GPT2_SIZES, "vit"], default="124m")
    parser.add_argument("--batch", type=int, nargs=2, default=[1, 2], metavar=("MIN", "MAX"))
    parser.add_argument("--seq", type=int, nargs=2, default=[8, 32], metavar=("MIN", "MAX"))
    parser.add_argument("--vit-hidden", type=int, default=1280)
    parser.add_argument("--vit-layers", type=int, default=32)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--only", choices=["qntz", "hand"], help="run one side only")
    parser.add_argument("--work", type=Path, help="project folder (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the project folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    model_spec = spec(args)
    work = args.work or Path(tempfile.mkdtemp(prefix=f"qntz-scale-{args.size}-"))
    project = work / "project"
    (project / "models").mkdir(parents=True, exist_ok=True)
    (project / ".qntz").mkdir(exist_ok=True)
    shutil.copy(HERE / "scale_models.py", project / "models" / "scale_models.py")
    (project / "models" / "__init__.py").write_text("")
    (project / "pipeline.yaml").write_text(PIPELINE.format(
        name=f"scale-{args.size}", factory=model_spec["factory"],
        kwargs=json.dumps(model_spec["kwargs"]), inputs=model_spec["inputs"]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    env.pop("QNTZ_CACHE", None)
    env.pop("QNTZ_REMOTE", None)
    print(f"project: {project}", flush=True)

    q = h = None
    saved = work / "qntz.json"  # so that `--only hand` can finish a table
    if args.only != "hand":
        q = run_qntz(project, env)
        saved.write_text(json.dumps({k: v for k, v in q.items() if k != "document"}))
        print(f"qntz run: exit {q['rc']}, {q['wall']:.1f}s, peak {gb(q['peak'])}", flush=True)
        if q["rc"] != 0:
            sys.stderr.write(q["stderr"][-3000:])
            errors = [f"{sid}: {s.get('error') or s.get('reason')}"
                      for sid, s in (q["document"].get("steps") or {}).items()
                      if isinstance(s, dict) and s.get("state") not in ("ok", "cached", "done")]
            print("\n".join(errors)[:3000])
    elif saved.is_file():
        q = json.loads(saved.read_text())
    if args.only != "qntz":
        h = run_by_hand(work, model_spec, env)
        print(f"by hand: {h['wall']:.1f}s, peak {gb(h['peak'])}", flush=True)
    if q and h:
        table(args.size, q, h)
    if args.json:
        args.json.write_text(json.dumps({"qntz": q and {k: v for k, v in q.items()
                                                          if k not in ("document", "stderr")},
                                         "by_hand": h}, indent=1, default=str))
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    elif q:
        print(f"kept: {work}")


if __name__ == "__main__":
    main()
