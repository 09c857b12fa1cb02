"""The report answers "which file do I ship?", and stays whole on a pipeline edited since
its run (issue 22)."""

from __future__ import annotations

import re

from conftest import pipeline_text

STEPS = "capture: {uses: trace}\nonnx: {}\nint8: {uses: quantize}\ncompare: {needs: [onnx, int8]}"


def page(ws) -> str:
    return (ws.root / "out" / "t" / "report.html").read_text()


def test_the_verdict_ranks_passing_candidates_by_speed_with_file_and_size(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    assert ws.qntz("run", path).code == 0
    assert ws.qntz("report", path).code == 0
    html = page(ws)
    verdict = html[html.index('class="verdict"'):html.index("</section>", html.index(
        'class="verdict"'))]
    names = re.findall(r"<tr><td><code>(\w+)</code>", verdict)
    assert sorted(names) == ["int8", "onnx"]
    assert "out/t/int8/model.onnx" in verdict and "out/t/onnx/model.onnx" in verdict
    assert re.search(r"\d+\.\d KB", verdict)
    assert "Ship <code>out/t/" in verdict


def test_a_cached_run_shows_the_build_time_of_each_entry(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    assert ws.qntz("run", path).code == 0
    assert ws.qntz("run", path).code == 0  # fully cached
    assert ws.qntz("report", path).code == 0
    rows = re.findall(r'<span class="badge neutral">cached</span></td><td>([^<]*)</td>'
                      r"<td>([^<]*)</td>", page(ws))
    assert rows and all(float(built) > 0 for _, built in rows if built != "—")
    assert any(built != "—" for _, built in rows)


def test_a_pipeline_edited_since_its_run_is_reported_as_run_and_said_stale(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    assert ws.qntz("run", path).code == 0
    model = ws.root / "models" / "clean.py"
    model.write_text(model.read_text() + "\n# a comment\n")
    assert ws.qntz("report", path).code == 0
    html = page(ws)
    assert "changed since this run" in html and "source changed" in html
    assert "Per output" in html or "int8 (quantize)" in html  # the details are still there
    assert 'class="verdict"' in html


def test_a_report_of_a_pipeline_never_run_is_refused(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS))
    done = ws.qntz("report", path)
    assert done.code == 2
    assert done.err.count("error:") == 1 and "never run" in done.err
    assert not (ws.root / "out" / "t" / "report.html").exists()
