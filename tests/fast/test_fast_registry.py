"""`registry.override`: kinds and runners registered in this process, and put back after."""

from __future__ import annotations

import pytest

from fast import toykinds
from qntz.core import registry
from qntz.core.errors import PipelineError
from qntz.core.registry import KINDS, override, provider, runner_factory, step_names
from qntz.core.step import Step

pytestmark = pytest.mark.fast


def test_override_adds_kinds_over_the_entry_points_and_takes_them_back():
    installed = step_names()
    assert "simplify" in installed and "emit" not in KINDS
    assert provider("load").startswith("qntz==")
    with override({"emit": toykinds.Emit}):
        assert step_names() == [*installed, "emit"]
        assert KINDS["emit"] is toykinds.Emit and "emit" in KINDS
        assert "simplify" in KINDS  # still there, not imported
        assert provider("emit") is None  # no distribution: no plugin release in its key
    assert step_names() == installed and "emit" not in KINDS
    assert registry._layer is None  # the default path is the entry points alone again


def test_only_hides_the_entry_points():
    with override(toykinds.KINDS, only=True):
        assert step_names() == ["load", "emit", "shout", "read", "meet", "fail"]
        assert KINDS["load"] is toykinds.Source and provider("load") is None
        assert KINDS.get("simplify") is None
    assert provider("load").startswith("qntz==")


def test_overrides_nest_and_unwind_in_order():
    v2, v3 = toykinds.bumped(toykinds.Emit, 2), toykinds.bumped(toykinds.Emit, 3)
    with override({"emit": v2}, only=True):
        with override({"emit": v3, "meet": toykinds.Meet}):
            assert KINDS["emit"] is v3 and step_names() == ["emit", "meet"]
        assert KINDS["emit"] is v2 and step_names() == ["emit"]
    assert "emit" not in KINDS


def test_the_registry_is_restored_when_the_block_raises():
    with pytest.raises(RuntimeError), override({"emit": toykinds.Emit}, only=True):
        raise RuntimeError("a failing test")
    assert "emit" not in KINDS and "simplify" in KINDS


def test_it_works_as_a_decorator():
    @override({"emit": toykinds.Emit})
    def inside() -> bool:
        return "emit" in KINDS

    assert inside() and "emit" not in KINDS


def test_a_kind_registered_under_another_name_is_refused_at_once():
    with pytest.raises(PipelineError, match="registered as 'echo'.*declares kind 'emit'"):
        with override({"echo": toykinds.Emit}):
            pass  # pragma: no cover
    assert "echo" not in KINDS


def test_a_kind_for_a_newer_step_api_is_refused():
    newer = type("Newer", (Step,), {"kind": "newer", "api_version": 99})
    with pytest.raises(PipelineError, match="needs step API 99"):
        with override({"newer": newer}):
            pass  # pragma: no cover


def test_runners_are_registered_by_what_an_artifact_provides():
    assert runner_factory(["text"]) is None
    with override(runners={"text": toykinds.text_runner}):
        assert runner_factory(["blob", "text"]) == ("text", toykinds.text_runner)
        # the entry points' runners stay (looked at without importing compare's module)
        assert registry._registered(registry.RUNNERS_GROUP)["onnx"].startswith("qntz.")
    with override(runners={"text": toykinds.text_runner}, only=True):
        assert runner_factory(["onnx"]) is None
    assert runner_factory(["text"]) is None


def test_an_unknown_kind_in_a_pipeline_names_the_toy_kinds(toy):
    toy.pipeline("a: {uses: emitt}")
    with pytest.raises(PipelineError, match="unknown step kind 'emitt'.*did you mean 'emit'"):
        toy.run()


def test_a_toy_kinds_parameters_are_validated_by_its_schema(toy):
    toy.pipeline("a: {uses: emit, txet: A}")
    with pytest.raises(PipelineError, match="unknown parameter 'txet'") as caught:
        toy.run()
    assert caught.value.where.endswith("toy.yaml:6:19")
