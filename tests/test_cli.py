"""The command line as a new user meets it: options anywhere, JSON, colours, pipes, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import pipeline_text

SMALL = "capture: {uses: trace}\nonnx: {}"


def cli(ws, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qntz", *args], cwd=ws.root, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=300)


def test_global_options_work_after_the_subcommand(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))
    assert ws.qntz("validate", "pipeline.yaml", "-v").code == 0
    assert ws.qntz("-v", "validate", "pipeline.yaml").code == 0
    assert ws.qntz("run", "pipeline.yaml", "--verbose").code == 0


def test_verbose_shows_the_cause(ws):
    ws.pipeline(pipeline_text("models.hazards:NoOnnxOperator", SMALL, shape="[batch, 4, 4]"))
    plain = cli(ws, "run", "pipeline.yaml")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    errors = [ln for ln in plain.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:"), plain.stderr
    verbose = cli(ws, "run", "pipeline.yaml", "-v")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and "caused by" in verbose.stderr


def test_json_everywhere(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))
    validated = json.loads(ws.qntz("validate", "pipeline.yaml", "--json").out)
    assert validated["ok"] and validated["steps"] == ["load", "capture", "onnx"]
    dag = json.loads(ws.qntz("dag", "pipeline.yaml", "--json").out)
    assert {"id": "onnx", "kind": "onnx", "needs": ["capture"]} in dag["steps"]
    kinds = json.loads(ws.qntz("steps", "--json").out)["kinds"]
    assert "opset" in next(k for k in kinds if k["kind"] == "onnx")["schema"]["properties"]
    result = ws.qntz("run", "pipeline.yaml", "--json")
    run = json.loads(result.out)
    assert result.code == 0 and run["ok"]
    assert [s["state"] for s in run["steps"]] == ["ran", "ran", "ran"]
    assert "model.onnx" in run["steps"][2]["files"]
    again = json.loads(ws.qntz("run", "pipeline.yaml", "--json").out)
    assert {s["state"] for s in again["steps"]} == {"cached"}
    bad = ws.qntz("validate", "missing.yaml", "--json")
    assert bad.code == 2 and json.loads(bad.out)["error"]["where"].endswith("missing.yaml")


def test_version(ws):
    from qntz import __version__

    lines = cli(ws, "--version").stdout.splitlines()
    assert lines[0] == f"qntz {__version__}"  # then the toolchain, as `dvc version` lists it
    assert any(line.split()[:1] == ["onnxruntime"] for line in lines[1:])


def test_no_color_turns_off_every_style(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))
    coloured = cli(ws, "dag", "pipeline.yaml", env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"})
    assert "\x1b[" in coloured.stdout  # the test can tell
    plain = cli(ws, "dag", "pipeline.yaml",
                env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
    assert plain.returncode == 0 and "\x1b[" not in plain.stdout and "onnx" in plain.stdout


def test_closed_pipe_ends_quietly(ws):
    done = subprocess.run(f"'{sys.executable}' -m qntz schema | head -1", shell=True,
                          cwd=ws.root, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "{" and done.stderr == ""


def test_ctrl_c_prints_one_line(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "preflight: {}\ncapture: {uses: auto}"))
    proc = subprocess.Popen([sys.executable, "-m", "qntz", "run", "pipeline.yaml"], cwd=ws.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = ws.root / ".qntz" / "cache" / "tmp"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp.is_dir() and any(tmp.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - start < 10, "it waited for the running step"
    assert proc.returncode == 130, err
    assert err.strip() == "error: interrupted", err


def test_plurals(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "").replace("steps:\n", "steps: {}\n")
                .replace("steps: {}\n\n", "steps: {}\n"))
    one = ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}"),
                      "one.yaml")
    validated = ws.qntz("validate", one)
    assert "2 steps:" in validated.out
    ran = ws.qntz("run", one, "--step", "load")
    assert "1 step:" in ran.out and "1 steps" not in ran.out


def test_validate_checks_the_factory_without_importing_it(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNNN", SMALL))
    typo = ws.qntz("validate", "pipeline.yaml")
    assert typo.code == 2 and "did you mean 'SmallCNN'" in typo.err
    assert "pipeline.yaml:4:" in typo.err  # the line of `factory:`
    ws.pipeline(pipeline_text("models.nowhere:Net", SMALL))
    missing = ws.qntz("validate", "pipeline.yaml")
    assert missing.code == 2 and "models.nowhere" in missing.err


def test_json_stdout_holds_only_the_document_when_the_model_prints(ws):
    ws.write("chatty.py", """
        import os
        from torch import nn


        def build():
            print("Loaded pretrained weights for chatty")
            os.write(1, b"printed from C\\n")
            return nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
        """)
    ws.pipeline(pipeline_text("chatty:build", "capture: {uses: trace}"))
    result = ws.qntz_subprocess("run", "pipeline.yaml", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["ok"] is True
    assert "Loaded pretrained weights" in result.err and "printed from C" in result.err


CRASHES = """\
import ctypes

from torch import nn


class Crashes(nn.Module):
    def forward(self, x):
        ctypes.string_at(0)  # a segfault, as native code crashing on a model it cannot take
        return x
"""


def test_a_crash_in_native_code_ends_in_one_line_and_a_failure(ws):
    ws.write("models/crash.py", CRASHES)
    ws.pipeline(pipeline_text("models.crash:Crashes", "capture: {uses: trace}"))
    done = subprocess.run([sys.executable, "-c", "from qntz.cli_guard import entry; entry()",
                           "run", "pipeline.yaml"], cwd=ws.root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: qntz run stopped on a segmentation fault"), done.stderr
    assert "(fix: " in last and "Traceback" not in done.stderr
    assert not (ws.root / "out" / "t" / "capture").exists()
