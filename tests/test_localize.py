"""Divergence localization names the PyTorch module where a candidate starts to diverge.

The zoo here is one small residual CNN. Its hazard: block 2 can be built with one channel
whose activations are 1000x the others (scaled back down by the next conv), so per-tensor
int8 activation quantization rounds the other channels of that block away.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

from conftest import pipeline_text
from qntz.compare.localize import Localization, localize, module_path
from zoo.fragile import FragileNet

FRAGILE = 2


def _sample(seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.RandomState(seed).randn(1, 3, 16, 16).astype(np.float32)}


class _Calibration(CalibrationDataReader):
    def __init__(self) -> None:
        self._samples = iter([_sample(seed) for seed in range(4)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._samples, None)


def _export(folder: Path, name: str, fragile: int | None, dynamo: bool) -> Path:
    torch.manual_seed(0)
    path = folder / f"{name}.onnx"
    torch.onnx.export(FragileNet(fragile).eval(), (torch.from_numpy(_sample(0)["x"]),), str(path),
                      dynamo=dynamo, input_names=["x"], output_names=["y"])
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("localize")
    return {"torchscript": _export(folder, "torchscript", FRAGILE, dynamo=False),
            "dynamo": _export(folder, "dynamo", FRAGILE, dynamo=True),
            "clean": _export(folder, "clean", None, dynamo=False)}


@pytest.mark.parametrize("exporter, quant_format", [("torchscript", QuantFormat.QDQ),
                                                   ("dynamo", QuantFormat.QDQ),
                                                   ("torchscript", QuantFormat.QOperator)])
def test_the_fragile_block_is_named_first(models, tmp_path, exporter, quant_format):
    int8 = tmp_path / "int8.onnx"
    quantize_static(str(models[exporter]), str(int8), _Calibration(), quant_format=quant_format,
                    per_channel=False)
    result = localize(models[exporter], int8, _sample(7), workdir=tmp_path)
    top = result.layers[0]
    assert not result and result.flagged[0] == top
    assert top.module.startswith(f"blocks.{FRAGILE}."), result.summary()
    assert top.precision == "int8" and top.cosine < 0.9
    assert result.summary().startswith(f"largest error added at `blocks.{FRAGILE}.")
    later = [layer for layer in result.layers if layer.module.startswith("blocks.3")]
    assert later and all(layer.added_error < top.added_error / 4 for layer in later)
    assert list(tmp_path.iterdir()) == [int8]  # its temporary models are gone


def _swap_op(source: Path, target: Path, module: str, old: str, new: str) -> None:
    model = onnx.load(str(source))
    node = next(n for n in model.graph.node if module_path(n) == module and n.op_type == old)
    node.op_type = new
    onnx.save(model, str(target))


def _rename_everything(path: Path) -> None:
    """New node and tensor names (graph inputs, outputs and weights kept), as a rewriting
    tool might leave them: only the graph's shape still says which node is which."""
    model = onnx.load(str(path))
    graph = model.graph
    keep = {v.name for v in [*graph.input, *graph.output]} | {i.name for i in graph.initializer}
    names = {out: f"t{k}_{j}" for k, node in enumerate(graph.node)
             for j, out in enumerate(node.output) if out not in keep}
    for k, node in enumerate(graph.node):
        node.name = f"n{k}"
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    del graph.value_info[:]
    onnx.save(model, str(path))


@pytest.mark.parametrize("module, old, new", [("blocks.1.act", "Relu", "Sigmoid"),
                                              ("blocks.1", "Add", "Sub")])
@pytest.mark.parametrize("renamed", [False, True])
def test_a_wrong_op_is_named_first(models, tmp_path, module, old, new, renamed):
    wrong = tmp_path / "wrong.onnx"
    _swap_op(models["clean"], wrong, module, old, new)
    if renamed:
        _rename_everything(wrong)
    result = localize(models["clean"], wrong, _sample(7), workdir=tmp_path)
    top = result.layers[0]
    assert not result and top.module == module and top.op_label == f"{old} → {new}"
    assert result.summary().startswith(f"largest error added at `{module}` ({old} → {new}, fp32)")
    assert result.matched == result.total


def test_identical_models_flag_nothing(models, tmp_path):
    result = localize(models["dynamo"], models["dynamo"], _sample(3), workdir=tmp_path)
    assert isinstance(result, Localization) and result and not result.flagged
    assert result.matched == result.total > 10
    assert all(layer.cosine > 0.9999 and abs(layer.added_error) < 1e-6 for layer in result.layers)
    assert result.summary().startswith("no layer adds more than 0.05 relative error")
    assert result.to_dict()["layers"][0]["module"] == "stem"


def test_a_missing_input_is_reported(models, tmp_path):
    with pytest.raises(ValueError, match="lacks model inputs"):
        localize(models["clean"], models["clean"], {"image": _sample(0)["x"]}, workdir=tmp_path)


@pytest.mark.parametrize("name, scopes, expected", [
    ("/blocks/blocks.5/conv_dw/Conv", None, "blocks.5.conv_dw"),
    ("/bert/encoder/layer.3/attention/self/MatMul", None, "bert.encoder.layer.3.attention.self"),
    ("/Relu", None, ""),
    ("node_conv2d_7", "['', 'blocks', 'blocks.5', 'blocks.5.conv_dw', 'conv2d_7']",
     "blocks.5.conv_dw"),
    ("node_relu", "['', 'relu']", ""),
    ("Conv_12", None, ""),
])
def test_module_path_from_either_exporter(name, scopes, expected):
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], name=name)
    if scopes is not None:
        node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=scopes)
    assert module_path(node) == expected


@pytest.mark.parametrize(("factory", "named"), [
    ("models.hazards:NestedBranch", "first disagreeing module `blocks.1` (DataDependentIf)"),
    ("models.hazards:DataDependentIf", "the difference is made in the model's own forward"),
])
def test_a_failing_traced_candidate_is_localized_by_module_replay(ws, factory, named):
    """Each submodule of the TorchScript candidate is fed what its eager twin received:
    the one whose trace froze a branch disagrees although its inputs were right."""
    ws.pipeline(pipeline_text(factory, "capture: {uses: trace, strict: false}\n"
                              "compare: {needs: [capture], iterations: 0}"))
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 1
    assert named in result.err, result.err
    report = json.loads((ws.root / "out" / "t" / "compare" / "report.json").read_text())
    row = next(c for c in report["candidates"] if c["id"] == "capture")
    assert row["divergence"]["source"] == "PyTorch eager" and row["divergence"]["layers"]
