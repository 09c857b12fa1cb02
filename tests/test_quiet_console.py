"""Libraries' log lines stay off the terminal during a run (issue 22: torch's `W1203 …
symbolic_shapes.py:8866] Unable to find user code corresponding to {u0}` leaked during
preflight's export). The CLI runs as a subprocess, as a user runs it."""

from __future__ import annotations

from conftest import pipeline_text

LEAKS = ("W1203", "symbolic_shapes", "Unable to find user code")


def test_preflight_on_a_data_dependent_model_prints_only_qntz_lines(ws):
    path = ws.pipeline(pipeline_text("models.hazards:DataDependentIf", "preflight: {}"))
    done = ws.qntz_subprocess("run", path)
    assert done.code == 0, done.err
    for leak in LEAKS:
        assert leak not in done.err and leak not in done.out, (done.out + done.err)
    assert done.err == ""
    assert (ws.root / "out/t/preflight/report.md").exists()
