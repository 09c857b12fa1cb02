"""The CLI conventions users bring from DVC, Polygraphy and trtexec (issue 22): status for CI,
dry runs, quiet runs and log files, shell completion, the toolchain's versions, parameter
overrides, folders of pipelines, CI logs, pipes, JSON everywhere, diff and init --run.

A run whose result a later subprocess checks runs in a subprocess too: both then use the
step kinds as they are on disk now (an in-process run keeps the versions imported when the
test session started).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import pipeline_text

SMALL = "capture: {uses: trace}\nonnx: {}"


def cli(ws, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qntz", *map(str, args)], cwd=ws.root,
                          text=True, capture_output=True, env={**os.environ, **(env or {})},
                          timeout=300)


MEMOS = {".qntz/cache/validated.json", ".qntz/cache/file-digests.json"}


def tree(root: Path, memos: bool = True) -> dict[str, bytes]:
    """Every file under `root` with its bytes (the test zoo's models aside); `memos` False
    leaves out what `status` and `validate` remember to be fast (accepted schemas, file
    stats), which are not artifacts."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "models" not in p.relative_to(root).parts[:1]
            and (memos or str(p.relative_to(root)) not in MEMOS)}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- 1. status --check / -q ----------------------------------------------------------------
def test_status_check_fails_until_every_step_is_cached(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))
    never = cli(ws, "status", "pipeline.yaml", "--check")
    assert never.returncode == 1, never.stderr
    assert "pending" in never.stdout or "stale" in never.stdout  # it still prints
    quiet = cli(ws, "status", "pipeline.yaml", "-q")
    assert quiet.returncode == 1 and quiet.stdout == "" and quiet.stderr == ""
    assert cli(ws, "status", "pipeline.yaml").returncode == 0  # without --check: as before
    assert cli(ws, "run", "pipeline.yaml").returncode == 0  # a subprocess, as the status
    cached = cli(ws, "status", "pipeline.yaml", "--check")
    assert cached.returncode == 0 and "cached" in cached.stdout
    assert cli(ws, "status", "pipeline.yaml", "-q").returncode == 0
    stale = cli(ws, "status", "pipeline.yaml", "--check", "--set", "onnx.opset=18")
    assert stale.returncode == 1 and "params changed: opset" in stale.stdout


# -- 2. run --dry-run ----------------------------------------------------------------------
def test_dry_run_says_what_would_run_and_writes_nothing(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))
    before = tree(ws.root)
    dry = cli(ws, "run", "--dry-run", "pipeline.yaml")
    assert dry.returncode == 0, dry.stderr
    assert "1 step would run, 2 may re-run after them, 0 cached" in dry.stdout
    assert "not in cache (never run)" in dry.stdout
    assert "onnx" in dry.stdout and "nothing was run or written" in dry.stdout
    assert tree(ws.root) == before
    assert not (ws.root / "out").exists() and not (ws.root / "pipeline.lock.json").exists()

    assert cli(ws, "run", "pipeline.yaml").returncode == 0
    before = tree(ws.root, memos=False)
    again = cli(ws, "run", "--dry-run", "pipeline.yaml", "--set", "onnx.opset=18")
    assert again.returncode == 0, again.stderr
    assert "1 step would run, 0 may re-run after them, 2 cached" in again.stdout
    assert "params changed: opset" in again.stdout and "cached" in again.stdout
    assert tree(ws.root, memos=False) == before
    document = json.loads(cli(ws, "run", "--dry-run", "pipeline.yaml", "--json").stdout)
    assert document["dry_run"] and {s["state"] for s in document["pipelines"][0]["steps"]} \
        == {"cached"}


# -- 3. -q and --log-file; 8. a line when a step starts where stdout is no terminal ---------
def test_quiet_run_prints_the_final_line_and_the_log_file_gets_every_line(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))
    loud = ws.qntz("run", "pipeline.yaml", "--step", "capture", "--log-file", "run.log")
    assert loud.code == 0
    assert "… capture (trace) started" in loud.out  # stdout is no terminal here
    result = ws.qntz("run", "pipeline.yaml", "-q", "--log-file", "run.log")
    assert result.code == 0, result.err
    lines = error_lines(result.out)
    assert len(lines) == 1 and lines[0].startswith("3 steps:"), result.out
    log = (ws.root / "run.log").read_text()
    assert log.count("# qntz run pipeline.yaml") == 2  # appended
    assert "… onnx (onnx) started" in log and "✓ onnx (onnx)" in log and "3 steps:" in log
    assert "\x1b[" not in log and "[bold]" not in log


def test_heartbeat_on_a_long_step_when_stdout_is_no_terminal():
    from rich.console import Console

    from qntz.cli_progress import ConsoleReporter

    console = Console(file=io.StringIO(), width=120)
    reporter = ConsoleReporter(console, heartbeat=0.05)
    reporter.started("engine", "tensorrt")
    time.sleep(0.3)
    reporter.finished(SimpleNamespace(id="engine", kind="tensorrt", state="ran", seconds=0.3,
                                      reason="", summary={}))
    reporter.close()
    text = console.file.getvalue()
    assert text.startswith("… engine (tensorrt) started")
    assert "… engine (tensorrt) still running" in text and "✓ engine (tensorrt) 0.3s" in text
    beats = text.count("still running")
    time.sleep(0.15)
    assert console.file.getvalue().count("still running") == beats  # stopped with the step


# -- 4. completion --------------------------------------------------------------------------
def test_completion_scripts_come_from_the_parser(ws):
    script = cli(ws, "completion", "-s", "bash")
    assert script.returncode == 0, script.stderr
    (ws.root / "qntz.bash").write_text(script.stdout)

    def complete(*words: str) -> list[str]:
        done = subprocess.run(["bash", "-c", "source qntz.bash; COMP_WORDS=(" + " ".join(
            words) + f"); COMP_CWORD={len(words) - 1}; _qntz; " + 'echo "${COMPREPLY[*]}"'],
            cwd=ws.root, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("qntz", "ru") == ["run"]
    assert "--dry-run" in complete("qntz", "run", "--d")
    assert complete("qntz", "-v", "cache", "ver") == ["verify"]
    zsh = cli(ws, "completion", "-s", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef qntz")
    assert "'--dry-run[" in zsh.stdout and "'--check[" in zsh.stdout
    if shutil.which("zsh"):
        (ws.root / "qntz.zsh").write_text(zsh.stdout)
        assert subprocess.run(["zsh", "-n", "qntz.zsh"], cwd=ws.root).returncode == 0


# -- 5. --version ---------------------------------------------------------------------------
def test_version_lists_the_toolchain_without_importing_it(ws):
    from qntz import __version__
    from qntz.core.hashing import library_version

    shown = cli(ws, "--version")
    assert shown.returncode == 0
    lines = shown.stdout.splitlines()
    assert lines[0] == f"qntz {__version__}"
    found = dict(line.split(None, 1) for line in lines[1:])
    names = ["Python", "torch", "onnx", "onnxruntime", "onnxscript", "onnxsim", "TensorRT",
             "TensorRT-RTX", "polygraphy"]
    assert all(name in found for name in names), shown.stdout
    assert found["torch"].strip() == (library_version("torch") or "not installed")
    assert found["TensorRT"].strip() == (library_version("tensorrt") or "not installed")
    probe = ("import sys\nfrom qntz.cli import main\ntry:\n    main(['--version'])\n"
             "except SystemExit:\n    pass\nprint('HEAVY', [m for m in ('torch', 'onnx', "
             "'onnxruntime', 'tensorrt_rtx') if m in sys.modules])\n")
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "HEAVY []" in heavy.stdout, heavy.stdout + heavy.stderr


# -- 6. --set -------------------------------------------------------------------------------
def test_set_overrides_a_parameter_validated_and_locked_like_the_file(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))
    valid = cli(ws, "validate", "pipeline.yaml", "--set", "onnx.opset=18", "--json")
    assert valid.returncode == 0 and json.loads(valid.stdout)["ok"]
    for bad, said in [("onx.opset=18", "did you mean 'onnx'"),
                      ("onnx.opsett=18", "did you mean 'opset'"),
                      ("onnx.opset=eighteen", "opset"), ("onnx=18", "STEP.PARAM=VALUE")]:
        for command in ("validate", "status", "run"):
            refused = cli(ws, command, "pipeline.yaml", "--set", bad)
            assert refused.returncode == 2, (command, bad, refused.stderr)
            assert len(error_lines(refused.stderr)) == 1 and said in refused.stderr, bad
            assert "Traceback" not in refused.stderr
    ran = cli(ws, "run", "pipeline.yaml", "--set", "onnx.opset=18",
              "--set", "capture.check_trace=false", "--json")
    assert ran.returncode == 0, ran.stderr
    lock = json.loads((ws.root / "pipeline.lock.json").read_text())
    assert lock["steps"]["onnx"]["params"]["opset"] == 18
    assert lock["steps"]["capture"]["params"]["check_trace"] is False
    assert cli(ws, "status", "pipeline.yaml", "--check", "--set", "onnx.opset=18",
               "--set", "capture.check_trace=false").returncode == 0
    plain = cli(ws, "status", "pipeline.yaml")  # the file itself now differs from the lock
    assert "params changed: check_trace False → True" in plain.stdout
    opset_only = cli(ws, "status", "pipeline.yaml", "--set", "capture.check_trace=false")
    assert "params changed: opset 18 → 17" in opset_only.stdout


# -- 7. a folder of pipelines, --keep-going over files that cannot run here -----------------
def _folder(ws) -> Path:
    folder = ws.root / "pipes"
    shutil.copytree(ws.root / "models", folder / "models")
    one = pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}")
    (folder / "a.yaml").write_text(one.replace("name: t", "name: a"))
    needs_trt = pipeline_text("models.clean:SmallCNN", SMALL + "\nengine: {uses: tensorrt, "
                              "runtime: tensorrt}")
    (folder / "b.yaml").write_text(needs_trt.replace("name: t", "name: b"))
    (folder / "c.yml").write_text(one.replace("name: t", "name: c"))
    (folder / "notes.txt").write_text("not a pipeline")
    return folder


def test_a_folder_runs_every_pipeline_in_it_and_keep_going_covers_what_cannot_run(ws):
    from qntz.core.hashing import library_version

    if library_version("tensorrt"):
        pytest.skip("full TensorRT is installed here: b.yaml would load")
    _folder(ws)
    refused = cli(ws, "run", "pipes")
    assert refused.returncode == 2 and "TensorRT" in refused.stderr  # checked before any runs
    assert not (ws.root / "pipes" / "out").exists() and not (ws.root / "out").exists()
    going = cli(ws, "run", "pipes", "--keep-going")
    assert going.returncode == 2, going.stderr  # the worst
    errors = error_lines(going.stderr)
    assert len(errors) == 1 and "b.yaml" in errors[0] and "not installed" in errors[0]
    assert (ws.root / "pipes" / "a.lock.json").is_file()
    assert (ws.root / "pipes" / "c.lock.json").is_file()
    (ws.root / "pipes" / "b.yaml").write_text("qntz: 1\nname: [oops\n")  # malformed
    broken = cli(ws, "run", "pipes", "--keep-going")
    assert broken.returncode == 2 and len(error_lines(broken.stderr)) == 1
    assert broken.stdout.count("cached") >= 2
    empty = ws.root / "empty"
    empty.mkdir()
    nothing = cli(ws, "run", "empty")
    assert nothing.returncode == 2 and "no pipeline file" in nothing.stderr


# -- 9. pipes -------------------------------------------------------------------------------
def test_a_reader_that_leaves_is_not_a_failure(ws):
    for command in ("steps", "--version", "completion"):
        done = subprocess.run(["bash", "-o", "pipefail", "-c",
                               f"'{sys.executable}' -m qntz {command} | head -1"],
                              cwd=ws.root, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
        assert done.stderr == "" and len(done.stdout.splitlines()) == 1


# -- 11. --json on cache, push, pull, report, init ------------------------------------------
def test_json_on_cache_push_pull_report_and_init(ws):
    made = cli(ws, "init", "models.clean:MLP", "-o", "mlp.yaml", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["wrote"].endswith("mlp.yaml")
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}"))
    assert cli(ws, "run", "pipeline.yaml").returncode == 0
    folder = json.loads(cli(ws, "cache", "dir", "--json").stdout)["cache"]
    assert Path(folder) == ws.root / ".qntz" / "cache"
    verified = json.loads(cli(ws, "cache", "verify", "--json").stdout)
    assert verified["ok"] and verified["lines"]
    collected = cli(ws, "cache", "gc", "--dry-run", "--json")
    assert collected.returncode == 0 and json.loads(collected.stdout)["dry_run"]
    remote = {"QNTZ_REMOTE": str(ws.root / "remote")}
    pushed = cli(ws, "push", "pipeline.yaml", "--json", env=remote)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["steps"]["capture"] == "pushed"
    pulled = json.loads(cli(ws, "pull", "pipeline.yaml", "--json", env=remote).stdout)
    assert pulled["steps"]["capture"] == "already here"
    page = cli(ws, "report", "pipeline.yaml", "--json")
    assert page.returncode == 0 and json.loads(page.stdout)["report"].endswith("report.html")
    cleared = json.loads(cli(ws, "cache", "clear", "--yes", "--json").stdout)
    assert cleared["removed"] >= 2
    unset = cli(ws, "push", "pipeline.yaml", "--json")
    assert unset.returncode == 2 and json.loads(unset.stdout)["ok"] is False


# -- 12. diff -------------------------------------------------------------------------------
def test_diff_says_when_there_is_nothing_to_compare_and_a_missing_lock_is_usage(ws):
    subprocess.run(["git", "init", "-q"], cwd=ws.root, check=True)
    none = cli(ws, "diff")
    assert none.returncode == 0 and "no lock file git tracks" in none.stdout
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}"))
    assert ws.qntz("run", "pipeline.yaml").code == 0
    missing = cli(ws, "diff", "HEAD", "pipeline.yaml")
    assert missing.returncode == 2, missing.stderr
    assert len(error_lines(missing.stderr)) == 1 and "not in HEAD" in missing.stderr


# -- 13. init --run; --kwargs the factory does not take -------------------------------------
def test_init_run_writes_then_runs_and_unknown_kwargs_are_usage(ws):
    typo = cli(ws, "init", "models.clean:SmallCNN", "-o", "p.yaml",
               "--kwargs", '{"num_clases": 4}')
    assert typo.returncode == 2, typo.stderr
    assert len(error_lines(typo.stderr)) == 1 and "did you mean 'num_classes'" in typo.stderr
    assert not (ws.root / "p.yaml").exists()
    done = ws.qntz("init", "models.clean:MLP", "-o", "p.yaml", "--run")
    assert done.code == 0, done.err
    assert "wrote p.yaml" in done.out and "steps:" in done.out
    assert (ws.root / "p.yaml").is_file() and (ws.root / "p.lock.json").is_file()
