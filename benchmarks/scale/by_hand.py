"""The same conversion by hand, as a deployment engineer writes it: torch.export, the
dynamo ONNX exporter, onnxsim, ONNX Runtime's quantize_dynamic, one ONNX Runtime check of
each model against eager. Writes its per-step seconds as JSON to argv[2].

    python by_hand.py SPEC_JSON RESULT_JSON WORKDIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

EXTERNAL = 1_900_000_000  # bytes of weights past which ONNX needs external data


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result_path, work = Path(sys.argv[2]), Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    import numpy as np
    import scale_models
    import torch
    model = getattr(scale_models, spec["factory"])(**spec["kwargs"]).eval()
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL
    lap("load")

    torch.manual_seed(1)
    if spec["kind"] == "gpt2":
        batch, seq = spec["batch"], spec["seq"]
        ids = torch.randint(0, 50256, (batch, seq))
        mask = torch.ones(batch, seq, dtype=torch.long)
        args = (ids, mask)
        b, s = torch.export.Dim("batch", min=1, max=spec["batch_max"]), \
            torch.export.Dim("seq", min=2, max=spec["seq_max"])
        dynamic = {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}}
        names = ["input_ids", "attention_mask"]
    else:
        args = (torch.rand(spec["batch"], 3, spec["image"], spec["image"]),)
        dynamic = {"pixel_values": {0: torch.export.Dim("batch", min=1,
                                                         max=spec["batch_max"])}}
        names = ["pixel_values"]
    with torch.no_grad():
        program = torch.export.export(model, args, dynamic_shapes=dynamic)
    lap("export")

    exported = work / "model.onnx"
    onnx_program = torch.onnx.export(program, args, dynamo=True, opset_version=18,
                                     input_names=names, output_names=["output"],
                                     optimize=True)
    onnx_program.save(str(exported), external_data=big)
    del onnx_program, program
    lap("onnx")

    import onnx
    import onnxsim
    simplified_path = work / "simplified.onnx"
    simplified, ok = onnxsim.simplify(str(exported))
    assert ok, "onnxsim check failed"
    onnx.save(simplified, str(simplified_path), save_as_external_data=big)
    del simplified
    lap("simplify")

    from onnxruntime.quantization import quantize_dynamic
    int8_path = work / "int8.onnx"
    quantize_dynamic(str(exported), str(int8_path), use_external_data_format=big)
    lap("int8")

    import onnxruntime as ort
    with torch.no_grad():
        reference = model(*args).numpy().astype(np.float64).ravel()
    lap("eager")
    feed = {n: a.numpy() for n, a in zip(names, args, strict=True)}
    cosines = {}
    for label, path in (("simplify", simplified_path), ("int8", int8_path)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, feed)[0].astype(np.float64).ravel()
        del session
        cosines[label] = float(got @ reference / (np.linalg.norm(got) * np.linalg.norm(reference)))
        lap(f"check_{label}")
    result_path.write_text(json.dumps({"seconds": seconds, "cosine": cosines,
                                       "onnx_bytes": _bytes(work, "model.onnx"),
                                       "bytes": {"onnx": _bytes(work, "model.onnx"),
                                                 "simplify": _bytes(work, "simplified.onnx"),
                                                 "int8": _bytes(work, "int8.onnx")}}))


def _bytes(folder: Path, name: str) -> int:
    """A model file with its external data files (named after it)."""
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.name == name or (p.name.startswith(name) and p.name != name
                                     and not p.name.endswith(".onnx")))


if __name__ == "__main__":
    main()
