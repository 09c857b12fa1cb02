"""The file `qntz init` writes: the steps a user most often wants, each commented, around
the inputs `starter` guessed; written aside, validated, then moved into place."""

from __future__ import annotations

import json
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qntz.core.errors import PipelineError


@dataclass(frozen=True)
class Recipe:
    mode: str  # static | dynamic
    why: str
    source: str  # the step quantized


def recipe_for(model: Any) -> Recipe:
    """The INT8 recipe for the model's layers, as ONNX Runtime advises: static for CNNs,
    dynamic for transformers, recurrent and other weight-bound models."""
    import torch
    import torch.nn as nn

    floats = {t.dtype for t in model.parameters() if t.is_floating_point()}
    if floats and floats <= {torch.float16, torch.bfloat16}:
        return Recipe("none", "left out: the weights are float16, and INT8 calibration needs a "
                      "float32 graph; to quantize, return model.float() from the factory and "
                      "uncomment the step", "simplify")
    modules = list(model.modules())
    note = "; GRU/RNN layers stay float (ONNX Runtime has no int8 kernel for them)" if any(
        isinstance(m, (nn.GRU, nn.RNN)) for m in modules) else ""
    if any(isinstance(m, nn.LSTM) for m in modules):
        return Recipe("dynamic", "LSTM: ONNX Runtime quantizes LSTM only dynamically "
                      "(DynamicQuantizeLSTM: int8 weights, activations at run time)" + note,
                      "simplify")
    if any(isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__
           for m in modules):
        # the attention fusions look for the exporter's patterns, which simplify rewrites
        return Recipe("dynamic", "transformer: int8 MatMul weights, activations quantized "
                      "at run time, attention and normalization fused for ONNX Runtime first "
                      "(on the exported graph, whose patterns the fusions know)", "onnx")
    if any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in modules):
        return Recipe("static", "CNN: static Q/DQ calibrated on `calib`, int8 weights per "
                      "channel, uint8 activations (fast on x86 CPUs)" + note, "simplify")
    return Recipe("dynamic", "no convolutions: int8 MatMul weights, activations quantized at "
                  "run time (static Q/DQ pays off for CNNs)" + note, "simplify")


def render(factory: str, kwargs: dict[str, Any], guess: Any, recipe: Recipe,
           name: str) -> str:
    """The pipeline text; `guess` is starter.Guess (inputs and a note for each)."""
    lines = [f"# A starter pipeline written by `qntz init {factory}`: edit it freely.",
             "# The inputs were guessed from forward() and checked by calling the model at",
             "# their smallest, usual and largest sizes.",
             "qntz: 1", f"name: {_flow(name)}", "model:", f"  factory: {factory}"]
    if kwargs:
        lines.append(f"  kwargs: {_flow(kwargs)}")
    lines.append("inputs:")
    for input_name, spec in guess.inputs.items():
        if input_name in guess.todo:
            lines += _comment(f"TODO: {guess.todo[input_name]}: write the shape and dtype "
                              f"forward() takes for {input_name} here (a guess below)", "  ")
        else:
            lines += _comment(guess.notes.get(input_name, ""), "  ")
        lines += _entry(input_name, _ordered(spec), "  ")
    return "\n".join(lines + _steps(name, recipe)) + "\n"


def _steps(name: str, recipe: Recipe) -> list[str]:
    int8 = (f"int8: {{uses: quantize, needs: [{recipe.source}], data: calib, "
            f"recipe: {recipe.mode if recipe.mode != 'none' else 'auto'}}}")
    compared = "capture, onnx, simplify" + (", int8" if recipe.mode != "none" else "")
    return [
        "data:",
        "  # calibration batches generated from `inputs`; real samples calibrate better:",
        "  # {from: npz, path: calib.npz} (an array per input), or {from: images, path: DIR}",
        "  calib: {from: generate, samples: 16}",
        "steps:",
        "  # tries trace, script and export; what breaks each, and where:",
        f"  # out/{name}/preflight/report.md",
        "  preflight: {}",
        "  # capture with the method preflight recommends",
        "  capture: {uses: auto}",
        "  # ONNX with the dynamic dims of `inputs` (opset 18: what the dynamo exporter writes)",
        "  onnx: {opset: 18}",
        "  # constant folding and graph clean-up, checked against its input",
        "  simplify: {}",
        *_comment(f"INT8, {recipe.why}", "  "),
        f"  {'# ' if recipe.mode == 'none' else ''}{int8}",
        "  # every artifact against the PyTorch model, on fresh inputs at the smallest,",
        "  # largest and in-between sizes: float ones must match closely (metric auto),",
        "  # INT8 by cosine similarity",
        "  compare:",
        f"    needs: [{compared}]",
        *(["    tolerances:", "      int8: {metric: cosine, threshold: 0.99}"]
          if recipe.mode != "none" else []),
    ]


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, 92, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")


def _entry(key: str, value: dict[str, Any], indent: str) -> list[str]:
    """`key: {flow}` when it fits on a line, else one line per setting."""
    line = f"{indent}{_flow(key)}: {_flow(value)}"
    if len(line) <= 96:
        return [line]
    return [f"{indent}{_flow(key)}:"] + [f"{indent}  {_flow(k)}: {_flow(v)}"
                                          for k, v in value.items()]


KEY_ORDER = ("shape", "dtype", "dynamic", "range", "constant", "role")


def _ordered(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: spec[k] for k in KEY_ORDER if k in spec}


PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def _flow(value: Any) -> str:
    """YAML flow style: what people write for short mappings and lists."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(str(k))}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str):
        plain = PLAIN.match(value) and value.lower() not in RESERVED
        return value if plain else json.dumps(value)
    return json.dumps(value)  # numbers, booleans and null as JSON writes them, valid YAML


def write_atomically(path: Path, text: str, force: bool) -> None:
    """Written aside, checked as `qntz validate` checks it, then moved into place; without
    `force` a file that appeared meanwhile is left alone."""
    aside = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        aside.write_text(text)
        _self_check(aside)
        if force:
            os.replace(aside, path)
            return
        try:
            os.link(aside, path)
        except FileExistsError:
            raise PipelineError(f"{path} already exists",
                                hint="pass --force to overwrite it") from None
        except OSError:  # no hard links here: exclusive create, still never clobbering
            with open(path, "x") as file:
                file.write(text)
    finally:
        aside.unlink(missing_ok=True)


def _self_check(path: Path) -> None:
    from qntz.core.factory_check import check_factories
    from qntz.core.pipeline import load_pipeline

    check_factories(load_pipeline(path))
