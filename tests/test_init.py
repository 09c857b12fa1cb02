"""`qntz init`: starter pipelines that validate and run to a passing compare, without edits."""

from __future__ import annotations

import json
import re

import pytest
import yaml

BERT = """
import transformers


def bert():
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100,
                                     max_position_embeddings=32)
    return transformers.BertModel(config)
"""

REFUSED = """
from torch import nn


class Reshaping(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        return self.fc(x.view(-1, 7))
"""


def _init_and_run(ws, *init_args: str) -> tuple[dict, dict]:
    """init, validate and run the written file as is; its settings and compare report."""
    result = ws.qntz("init", *init_args, "-o", "pipeline.yaml")
    assert result.code == 0, result.out + result.err
    assert "pipeline.yaml" in result.out
    assert ws.qntz("validate", "pipeline.yaml").code == 0
    run = ws.qntz("run", "pipeline.yaml")
    assert run.code == 0, run.out + run.err
    spec = yaml.safe_load((ws.root / "pipeline.yaml").read_text())
    report = json.loads((ws.root / "out" / spec["name"] / "compare/report.json").read_text())
    assert report["passed"]
    assert {c["id"]: c["status"] for c in report["candidates"]} == {
        "capture": "pass", "onnx": "pass", "simplify": "pass", "int8": "pass"}
    return spec, report


def _recipe(ws, spec: dict) -> str:
    summary = ws.root / "out" / spec["name"] / "int8/quantize.json"
    return json.loads(summary.read_text())["recipe"]["mode"]


def test_transformers_encoder_from_its_config(ws):
    pytest.importorskip("transformers")
    ws.write("hf.py", BERT)
    spec, _ = _init_and_run(ws, "hf:bert")
    inputs = spec["inputs"]
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]  # forward's order
    ids = inputs["input_ids"]
    assert ids["dtype"] == "int64" and ids["range"] == [0, 99] and ids["role"] == "tokens"
    assert ids["dynamic"]["seq"][2] == 32  # bounded by max_position_embeddings
    assert inputs["attention_mask"]["role"] == "mask"
    assert inputs["token_type_ids"]["range"] == [0, 1]  # type_vocab_size 2
    assert spec["steps"]["int8"]["recipe"] == "dynamic" == _recipe(ws, spec)
    assert "# " in (ws.root / "pipeline.yaml").read_text()  # steps are commented


def test_cnn_channels_from_its_first_conv(ws):
    spec, _ = _init_and_run(ws, "models.clean:SmallCNN", "--kwargs", '{"num_classes": 4}')
    assert spec["model"]["kwargs"] == {"num_classes": 4}
    (name, x), = spec["inputs"].items()
    assert name == "x" and x["shape"][:2] == ["batch", 3] and x["dtype"] == "float32"
    assert spec["steps"]["int8"]["recipe"] == "static" == _recipe(ws, spec)


def test_lstm_features_and_layout_from_the_layer(ws):
    spec, _ = _init_and_run(ws, "models.recurrent:SmallLSTM", "--kwargs", '{"hidden": 32}')
    x = spec["inputs"]["x"]
    assert x["shape"] == ["batch", "seq", 32] and set(x["dynamic"]) == {"batch", "seq"}
    assert spec["steps"]["int8"]["recipe"] == "dynamic" == _recipe(ws, spec)


def test_an_existing_file_is_kept_unless_forced(ws):
    ws.write("pipeline.yaml", "mine\n")
    result = ws.qntz("init", "models.clean:MLP")
    assert result.code == 2 and "--force" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert (ws.root / "pipeline.yaml").read_text() == "mine\n"
    assert ws.qntz("init", "models.clean:MLP", "--force").code == 0
    assert ws.qntz("validate", "pipeline.yaml").code == 0
    assert not list(ws.root.glob(".*.tmp"))  # nothing left aside


@pytest.mark.parametrize("factory", ["models.nowhere:Net", "models.clean:Nothing",
                                     "not a factory"])
def test_a_bad_factory_is_one_line(ws, factory):
    result = ws.qntz("init", factory, "-o", "p.yaml")
    assert result.code != 0
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert not (ws.root / "p.yaml").exists()


def test_a_model_that_refuses_every_guess_names_the_input(ws):
    ws.write("refusing.py", REFUSED)
    result = ws.qntz("init", "refusing:Reshaping", "-o", "p.yaml")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "input 'x'" in result.err and "is invalid for input" in result.err
    assert "# TODO" in (ws.root / "p.yaml").read_text()


TWO_INPUTS = """
from torch import nn


class FeatsMeta(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 2)

    def forward(self, feats, meta):
        return self.fc(feats) * meta.reshape(-1, 7)[:, :2].sum()


class SideInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 2)
        self.side = nn.Linear(4, 2)

    def forward(self, feats, meta):
        return self.fc(feats) + self.side(meta)
"""


def test_an_input_it_cannot_infer_gets_a_todo_in_the_file_it_writes(ws):
    ws.write("two.py", TWO_INPUTS)
    result = ws.qntz_subprocess("init", "two:FeatsMeta", "-o", "p.yaml")
    assert result.code == 2, result.err
    lines = (ws.root / "p.yaml").read_text().splitlines()
    line = int(re.search(r"p\.yaml:(\d+): could not infer input 'meta'", result.err).group(1))
    assert lines[line - 1].startswith("  meta:")  # the error names the line to fill in
    feats = next(i for i, ln in enumerate(lines) if ln.startswith("  feats:"))
    above_meta = lines[feats + 1:line - 1]  # feats's guess is the first Linear's: no TODO
    assert above_meta[0].startswith("  # TODO: forward() refused float32 [batch, 16]")
    assert all(ln.startswith("  # ") for ln in above_meta)
    assert not any("TODO" in ln for ln in lines[:feats])
    assert f"p.yaml:{line}" in result.err.rpartition("(fix: ")[2]
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert ws.qntz_subprocess("validate", "p.yaml").code == 0  # what it wrote is a pipeline


def test_a_second_input_is_inferred_from_a_later_layer(ws):
    ws.write("two.py", TWO_INPUTS)
    result = ws.qntz_subprocess("init", "two:SideInput", "-o", "p.yaml")
    assert result.code == 0, result.err
    inputs = yaml.safe_load((ws.root / "p.yaml").read_text())["inputs"]
    assert inputs["feats"]["shape"] == ["batch", 16] and inputs["meta"]["shape"] == ["batch", 4]
