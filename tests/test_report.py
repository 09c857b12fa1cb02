"""`qntz report`, `qntz explain` and `qntz diff` on real runs.

One run per pipeline per module (module-scoped fixtures): the quickstart and the encoder
example, each opened in real headless Chromium; the zoo's fragile CNN, whose INT8 compare
fails and names the fragile block; and the quickstart again after its calibration method
changed, for `qntz diff` (that test runs last: it changes the quickstart's run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser import CONSOLE, browse, find_chromium
from conftest import REPO, ZOO, Result
from qntz.cli import main

PLOT = re.compile(r'<svg[^>]*data-plot="([^"]+)"')
STEP = re.compile(r'<g class="node" data-step="([^"]+)"')

FRAGILE = """\
qntz: 1
name: fragile
model: {factory: models.fragile:FragileNet}
inputs:
  x: {shape: [batch, 3, 16, 16], dynamic: {batch: [1, 2, 4]}, range: [-2.0, 2.0]}
steps:
  capture: {uses: trace}
  onnx: {opset: 17}
  int8: {uses: quantize, min_top1: null, min_cosine: null}
  compare:
    needs: [onnx, int8]
    iterations: 0
    tolerances: {int8: {metric: cosine, threshold: 0.999}}
"""


def qntz(capsys: pytest.CaptureFixture | None, *args: object) -> Result:
    """The real CLI in this process; output captured when `capsys` is given."""
    if capsys is not None:
        capsys.readouterr()
    code = main([str(a) for a in args])
    if capsys is None:
        return Result(code, "", "")
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project folder with the shipped pipelines and the test zoo, in a git repository."""
    root = tmp_path_factory.mktemp("report")
    (root / ".qntz").mkdir()
    shutil.copytree(REPO / "pipelines", root / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__", "*.lock.json"))
    shutil.copytree(ZOO, root / "models", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "fragile.yaml").write_text(FRAGILE)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("QNTZ_CACHE", raising=False)
        patch.chdir(root)
        yield root


@pytest.fixture(scope="module")
def quickstart(project: Path) -> Path:
    pipeline = project / "pipelines" / "quickstart.yaml"
    assert qntz(None, "run", pipeline, "--report") == Result(0, "", "")
    return pipeline


@pytest.fixture(scope="module")
def encoder(project: Path) -> Path:
    pipeline = project / "pipelines" / "encoder.yaml"
    assert qntz(None, "run", pipeline, "--report").code == 0
    return pipeline


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


def _open(browser: str, page: Path, work: Path, name: str) -> str:
    """The DOM Chromium built from `page`; no console message; a screenshot kept."""
    loaded = browse(browser, page, work, "--dump-dom")
    console = [line for line in loaded.stderr.splitlines() if CONSOLE.search(line)]
    assert not console, console
    shots = Path(os.environ.get("QNTZ_TEST_ARTIFACTS") or work)
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"run-report-{name}.png"
    browse(browser, page, work, f"--screenshot={shot}", "--window-size=1280,2400")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    return loaded.stdout


def _page(pipeline: Path, name: str) -> Path:
    return pipeline.parent.parent / "out" / name / "report.html"


def _check_page(chromium: str, pipeline: Path, name: str, tmp_path: Path) -> str:
    from qntz.core.pipeline import load_pipeline

    spec = load_pipeline(pipeline)
    dom = _open(chromium, _page(pipeline, name), tmp_path, name)
    assert STEP.findall(dom) == spec.order()
    plots = PLOT.findall(dom)
    compares = [s for s in spec.steps.values() if s.kind == "compare"]
    assert plots.count("dag") == 1
    assert plots.count("error-distribution") >= len(compares)  # one per output per compare
    assert "<script" not in dom and 'src="http' not in dom
    return dom


def _regenerated_same(capsys: pytest.CaptureFixture, pipeline: Path, name: str) -> None:
    page = _page(pipeline, name)
    before = page.read_bytes()
    page.unlink()
    done = qntz(capsys, "report", pipeline)
    assert done.code == 0 and "report.html" in done.out
    assert page.read_bytes() == before


def test_quickstart_report(quickstart: Path, chromium: str, tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    dom = _check_page(chromium, quickstart, "quickstart", tmp_path)
    assert PLOT.findall(dom).count("accuracy-latency") >= 2  # compare and check
    for plot in ("size-error", "size-latency"):
        assert plot in PLOT.findall(dom)
    assert "quantized" in dom and "/head/Gemm" in dom  # what INT8 did to each node
    _regenerated_same(capsys, quickstart, "quickstart")
    run = json.loads((quickstart.parents[1] / ".qntz" / "runs" / "quickstart.json").read_text())
    assert run["recorded_at"] in _page(quickstart, "quickstart").read_text()


def test_encoder_report(encoder: Path, chromium: str, tmp_path: Path,
                        capsys: pytest.CaptureFixture) -> None:
    _check_page(chromium, encoder, "encoder", tmp_path)
    _regenerated_same(capsys, encoder, "encoder")


def test_fragile_block_is_named_first(project: Path, capsys: pytest.CaptureFixture) -> None:
    done = qntz(capsys, "run", project / "fragile.yaml", "--report")
    assert done.code == 1 and "Traceback" not in done.err
    errors = [line for line in done.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "largest error added at `blocks.2." in errors[0], done.err
    html = (project / "out" / "fragile" / "report.html").read_text()
    table = html[html.index('class="divergence"'):]
    assert re.search(r"<td>1</td><td><code>blocks\.2\.", table)
    explained = qntz(capsys, "explain", project / "fragile.yaml", "int8", "--json")
    found = json.loads(explained.out)
    assert explained.code == 0 and found["source"] == "onnx"
    assert found["layers"][0]["module"].startswith("blocks.2.")
    refused = qntz(capsys, "explain", project / "fragile.yaml", "capture")
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1
    assert "ONNX" in refused.err and "Traceback" not in refused.err


def test_diff_names_step_parameter_and_agreement(quickstart: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Runs last: it changes the quickstart's INT8 calibration and re-runs it."""
    root = quickstart.parent.parent
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "pipelines"], check=True)
    subprocess.run([*git, "commit", "-qm", "quickstart"], check=True)
    missing = qntz(capsys, "diff", "HEAD~3", quickstart)
    assert missing.code == 2 and "not in HEAD~3" in missing.err and "Traceback" not in missing.err
    text = quickstart.read_text()
    quickstart.write_text(text.replace("method: minmax", "method: entropy"))
    assert qntz(capsys, "run", quickstart, "--step", "compare").code == 0
    shown = qntz(capsys, "diff", quickstart)
    assert shown.code == 0, shown.err
    assert re.search(r"int8 \(quantize\) changed: params changed: method minmax → entropy",
                     shown.out), shown.out
    assert re.search(r"compare: int8 top1 \S+ → \S+", shown.out), shown.out
    found = json.loads(qntz(capsys, "diff", "HEAD", quickstart, "--json").out)
    row = next(r for r in found["figures"] if (r["step"], r["candidate"]) == ("compare", "int8"))
    assert row["metric"] == "top1" and 0.9 <= row["old"] <= 1 and 0.9 <= row["new"] <= 1
    assert [s["id"] for s in found["steps"]][:2] == ["int8", "compare"]


def test_diff_outside_git_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / ".qntz").mkdir()
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__", "*.lock.json"))
    done = qntz(capsys, "diff", tmp_path / "pipelines" / "quickstart.yaml")
    assert done.code == 1 and "not in a git repository" in done.err
    assert len(done.err.strip().splitlines()) == 1 and "Traceback" not in done.err
