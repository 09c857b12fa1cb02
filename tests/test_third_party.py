"""Third-party model code (transformers) through a plain pipeline, as a new user writes it."""

from __future__ import annotations

import json
import os
import sysconfig

import numpy as np
import pytest

from qntz.core.errors import PipelineError
from qntz.core.inputs import generate_feed, opt_sizes, parse_inputs

FACTORY = """
import transformers


def bert():
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)
    return transformers.BertModel(config).eval()


def gpt2():
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100,
                                     n_positions=64, use_cache=False)
    return transformers.GPT2Model(config).eval()
"""

PIPELINE = """
qntz: 1
name: t
model: {{factory: hf:{factory}}}
inputs:
  input_ids: {{shape: [batch, seq], dtype: int64, dynamic: {{batch: [1, 2, 3], seq: [4, 8, 12]}},
              range: [0, 99]}}
  attention_mask: {{shape: [batch, seq], dtype: int64, range: [0, 1]}}
steps:
  preflight: {{}}
  capture: {{uses: auto}}
  onnx: {{opset: 18}}
  compare: {{needs: [capture, onnx], iterations: 0}}
"""


def test_bert_preflight_is_not_fooled_by_a_venv_inside_a_folder_named_qntz(ws, tmp_path):
    """After `git clone ... qntz && python -m venv .venv`, every library path holds /qntz/:
    transformers' own `mask.all()` must not be charged to the model."""
    pytest.importorskip("transformers")
    site = tmp_path / "clone" / "qntz" / ".venv-site"
    site.parent.mkdir(parents=True)
    site.symlink_to(sysconfig.get_paths()["purelib"])
    ws.write("hf.py", FACTORY)
    ws.pipeline(PIPELINE.format(factory="bert"))
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    result = ws.qntz_subprocess("run", "pipeline.yaml", env={"PYTHONPATH": path})
    assert result.code == 0, result.out + result.err
    report = json.loads((ws.root / "out/t/preflight/report.json").read_text())
    assert not [f for f in report["findings"] if f["rule"] == "data-dependent-control-flow"]
    in_library = [f for f in report["findings"] if "installed transformers code" in f["message"]]
    assert in_library, report["findings"]  # where a finding is in the library, it says so


def test_gpt2_inputs_bound_by_name_and_outputs_named_by_key(ws):
    pytest.importorskip("transformers")
    ws.write("hf.py", FACTORY)
    ws.pipeline(PIPELINE.format(factory="gpt2"))
    result = ws.qntz("run", "pipeline.yaml")  # by position the mask lands in past_key_values
    assert result.code == 0, result.out + result.err
    import onnx

    graph = onnx.load(str(ws.root / "out/t/onnx/model.onnx")).graph
    assert [o.name for o in graph.output] == ["last_hidden_state"]
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    compare = json.loads((ws.root / "out/t/compare/report.json").read_text())
    names = {o["name"] for c in compare["candidates"] for o in c["outputs"]}
    assert names == {"last_hidden_state"}


def where(*_: object) -> str:
    return "pipeline.yaml"


def test_integer_range_includes_both_ends_and_masks_are_padded():
    inputs = parse_inputs({
        "ids": {"shape": ["batch", "seq"], "dtype": "int64", "range": [0, 1],
                "dynamic": {"batch": [8, 8, 8], "seq": [6, 6, 6]}},
        "attention_mask": {"shape": ["batch", "seq"], "dtype": "int64", "range": [0, 1]}},
        where)
    assert inputs["attention_mask"].role == "mask" and inputs["ids"].role is None
    feed = generate_feed(inputs, opt_sizes(inputs), np.random.default_rng(0))
    assert set(np.unique(feed["ids"])) == {0, 1}
    mask = feed["attention_mask"]
    lengths = mask.sum(1)
    assert lengths[0] == 6 and lengths.min() >= 1 and len(set(lengths)) > 1
    for row, length in zip(mask, lengths):  # ones, then trailing zeros
        assert row[:length].all() and not row[length:].any()


def test_tokens_hold_the_pad_id_where_the_mask_pads():
    inputs = parse_inputs({
        "tokens": {"shape": [4, 10], "dtype": "int64", "range": [0, 50], "role": "tokens"},
        "pad": {"shape": [4, 10], "dtype": "int64", "range": [0, 1], "role": "mask"}}, where)
    feed = generate_feed(inputs, {}, np.random.default_rng(1))
    assert (feed["tokens"][feed["pad"] == 0] == 0).all()


def test_a_range_that_generates_one_value_is_refused(ws):
    ws.pipeline("""
    qntz: 1
    name: t
    model: {factory: models.clean:MLP}
    inputs:
      x: {shape: [2, 32], dtype: int64, range: [1, 1]}
    steps:
      preflight: {}
    """)
    result = ws.qntz("validate", "pipeline.yaml")
    assert result.code == 2
    assert "generates only the value 1" in result.err and "Traceback" not in result.err
    with pytest.raises(PipelineError):
        parse_inputs({"m": {"shape": [2], "dtype": "uint8", "range": [0, 256]}}, where)
    asked = parse_inputs({"t": {"shape": [2], "dtype": "int64", "range": [0, 0],
                                "constant": True}}, where)
    assert not generate_feed(asked, {}, np.random.default_rng(0))["t"].any()


def test_names_and_keywords_follow_forward():
    torch = pytest.importorskip("torch")
    from qntz.runtime.torchio import output_names, to_torch

    class Model(torch.nn.Module):
        def forward(self, input_ids, past=None, attention_mask=None):
            return {"hidden": input_ids, "cache": [(attention_mask, input_ids)]}

    inputs = parse_inputs({"attention_mask": {"shape": [2], "dtype": "int64"},
                           "input_ids": {"shape": [2], "dtype": "int64"}}, where)
    feed = generate_feed(inputs, {}, np.random.default_rng(0))
    args, kwargs = to_torch(feed, inputs, Model())
    assert args == () and list(kwargs) == ["input_ids", "attention_mask"]
    names = output_names(Model()(**kwargs))
    assert names == ["hidden", "cache.0.0", "cache.0.1"]


DIFFUSERS_LIKE = """
from collections import OrderedDict

import torch
from torch import nn


class Output(OrderedDict):
    '''diffusers' BaseOutput: an OrderedDict registered as a pytree node without key paths.'''


torch.utils._pytree.register_pytree_node(
    Output, lambda o: (list(o.values()), list(o.keys())),
    lambda values, keys: Output(zip(keys, values)), serialized_type_name="denoise.Output")


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, sample):
        return Output(sample=self.conv(sample))
"""


def test_an_output_keyed_like_its_input_and_registered_without_key_paths(ws):
    """diffusers' UNet2DModel and AutoencoderKL: `forward(sample)` returns a BaseOutput
    with a `sample` field. Naming the outputs raised, then the ONNX input was renamed
    `sample.1` and the simplify step raised on the missing feed."""
    import onnx

    ws.write("denoise.py", DIFFUSERS_LIKE)
    ws.pipeline("qntz: 1\nname: t\nmodel: {factory: denoise:Denoiser}\ninputs:\n"
                "  sample: {shape: [batch, 3, 16, 16], dynamic: {batch: [1, 2, 4]}}\n"
                "steps:\n  capture: {uses: export}\n  onnx: {}\n  simplify: {}\n"
                "  compare: {needs: [capture, onnx, simplify]}\n")
    result = ws.qntz("run", "pipeline.yaml")
    assert result.code == 0, result.err
    model = onnx.load(str(ws.root / "out" / "t" / "simplify" / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["sample"]
    assert [o.name for o in model.graph.output] == ["output.sample"]
