"""Are preflight's verdicts true on models qntz has never seen? torch.export's own examples.

    python benchmarks/preflight_truth.py

For every example model that ships with torch (torch._export.db.examples) and takes only
tensors, runs a preflight pipeline, then for each method a pipeline that captures with it
and compares with eager. A verdict holds when `ok`/`risky` methods pass compare and `fails`
methods fail to capture or fail compare. Prints one line per example and the totals.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import tempfile
from pathlib import Path

DTYPES = {"torch.float32": "float32", "torch.int64": "int64", "torch.bool": "bool",
          "torch.int32": "int32"}


def examples() -> list[tuple[str, str, dict]]:
    import torch
    from torch._export.db.examples import all_examples

    found = []
    for name, case in sorted(all_examples().items()):
        model, args = case.model, case.example_args
        if case.example_kwargs or not isinstance(model, torch.nn.Module) or not all(
                isinstance(a, torch.Tensor) and str(a.dtype) in DTYPES for a in args):
            continue
        names = list(inspect.signature(model.forward).parameters)[:len(args)]
        inputs = {n: {"shape": list(a.shape), "dtype": DTYPES[str(a.dtype)],
                      "range": [0, 1] if a.dtype.is_floating_point else [0, 3]}
                  for n, a in zip(names, args)}
        found.append((name, f"{type(model).__module__}:{type(model).__name__}", inputs))
    return found


def run(work: Path, text: str, name: str) -> int:
    from qntz.cli import main

    (work / name).write_text(text)
    devnull = open(os.devnull, "w")
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = devnull
    try:
        return main(["run", str(work / name)])
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def main() -> None:
    work = Path(tempfile.mkdtemp())
    os.chdir(work)
    held = broken = 0
    for name, factory, inputs in examples():
        head = (f"qntz: 1\nname: {name}\nmodel: {{factory: '{factory}'}}\n"
                f"inputs: {json.dumps(inputs)}\n")
        if run(work, head + "steps:\n  preflight: {fail_on: never, onnx: false}\n", "p.yaml"):
            print(f"{name:36s} preflight did not run")
            continue
        report = json.loads((work / "out" / name / "preflight" / "report.json").read_text())
        verdicts, wrong = report["verdicts"], []
        for method in ("trace", "script", "export"):
            code = run(work, head + f"steps:\n  capture: {{uses: {method}}}\n"
                       "  compare: {iterations: 0}\n", f"{method}.yaml")
            if (code == 0) != (verdicts[method] != "fails"):
                wrong.append(f"{method}: said {verdicts[method]}, pipeline exit {code}")
        held += not wrong
        broken += bool(wrong)
        print(f"{name:36s} {verdicts}  {'HOLDS' if not wrong else 'WRONG: ' + '; '.join(wrong)}")
    print(f"\nverdicts hold on {held} of {held + broken} examples")


if __name__ == "__main__":
    main()
