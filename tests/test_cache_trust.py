"""The cache commands never touch what is not qntz's, gc never races a build, a lying or
edited entry is never served, and no run exits 0 without its work done (issue 18). Real
processes throughout: the CLI in subprocesses, real concurrent gc and clear, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import entry, lock_of, one_line_error, qntz, ran, start

from conftest import REPO, pipeline_text

SMALL = "capture: {uses: trace}\nonnx: {}\nsimplify: {}"
LONGER = SMALL + "\ncompare: {needs: [capture, onnx, simplify]}"


@pytest.fixture
def small(ws) -> Path:
    return ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))


def user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    (folder / "photos").mkdir(parents=True)
    (folder / "notes.txt").write_text("x")
    (folder / "tmp" / "build-12345678").mkdir(parents=True)
    (folder / "tmp" / "build-12345678" / "keep.txt").write_text("y")
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- never remove what is not qntz's -------------------------------------------------------
@pytest.mark.parametrize("command", [["cache", "clear", "--yes"], ["cache", "gc"],
                                     ["cache", "clear"]])
def test_cache_commands_refuse_a_folder_qntz_did_not_make(ws, tmp_path, command):
    folder = user_folder(tmp_path)
    before = files_of(folder)
    done = qntz(ws.root, *command, env={"QNTZ_CACHE": str(folder)})
    assert done.returncode == 2
    one_line_error(done)
    assert len(done.stderr.strip().splitlines()) == 1
    assert files_of(folder) == before and (folder / "photos").is_dir()


@pytest.mark.parametrize("where", ["/", "home", "root", "parent"])
def test_a_cache_that_would_hold_the_project_is_refused(ws, small, where):
    folder = {"/": Path("/"), "home": Path.home(), "root": ws.root,
              "parent": ws.root.parent}[where]
    before = {p.name for p in folder.iterdir()}
    for command in (["status", small], ["cache", "gc"], ["cache", "clear", "--yes"],
                    ["run", small]):
        done = qntz(ws.root, *command, env={"QNTZ_CACHE": str(folder)})
        assert done.returncode == 2, (command, done.stderr)
        one_line_error(done)
    assert {p.name for p in folder.iterdir()} == before


@pytest.mark.parametrize("target", ["file", "/dev/null"])
def test_a_cache_that_is_not_a_folder_is_one_line(ws, small, target):
    path = ws.write("a-file", "x") if target == "file" else Path(target)
    for command in (["run", small], ["status", small], ["cache", "gc"]):
        done = qntz(ws.root, *command, env={"QNTZ_CACHE": str(path)})
        assert done.returncode == 2, done.stderr
        one_line_error(done)
        assert "not a folder" in done.stderr


def test_gc_and_clear_remove_only_qntz_names(ws, small):
    assert qntz(ws.root, "run", small).returncode == 0
    cache = ws.root / ".qntz" / "cache"
    theirs = [cache / "tmp" / "build-12345678", cache / "photos", cache / "tmp" / "libs"]
    for folder in theirs:
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("y")
    dead = cache / "tmp" / ("a" * 64 + "-999999-deadbeef")
    dead.mkdir()
    gc = qntz(ws.root, "cache", "gc")
    assert gc.returncode == 0 and "1 temporary folder" in gc.stdout
    assert not dead.exists() and all((f / "keep.txt").is_file() for f in theirs)
    clear = qntz(ws.root, "cache", "clear")
    assert clear.returncode == 0 and "removed 4 cache entries" in clear.stdout
    assert all((f / "keep.txt").is_file() for f in theirs)
    assert not list((cache / "entries").glob("*/*"))


def test_clear_asks_on_a_terminal_unless_yes(ws, small):
    import pty

    assert qntz(ws.root, "run", small).returncode == 0

    def on_a_terminal(answer: bytes, *flags: str) -> bytes:
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(ws.root)
            os.execv(sys.executable, [sys.executable, "-m", "qntz", "cache", "clear", *flags])
        os.write(fd, answer)
        seen = b""
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        os.waitpid(pid, 0)
        return seen

    assert b"[y/N]" in on_a_terminal(b"n\n") and b"nothing removed" in on_a_terminal(b"\n")
    assert len(list((ws.root / ".qntz" / "cache" / "entries").glob("*/*"))) == 4
    assert b"removed 4 cache entries" in on_a_terminal(b"y\n")
    assert qntz(ws.root, "run", small).returncode == 0
    assert b"[y/N]" not in on_a_terminal(b"", "--yes")


@pytest.mark.parametrize("command", [["cache", "clear", "--yes"], ["cache", "gc"]])
def test_a_read_only_cache_is_never_said_to_be_cleared(ws, small, mounts, command):
    cache = mounts(ws.root / "ro-cache", "64m")
    env = {"QNTZ_CACHE": str(cache)}
    assert qntz(ws.root, "run", small, env=env).returncode == 0
    small.write_text(small.read_text().replace("simplify: {}", "simplify: {check: 1}"))
    assert qntz(ws.root, "run", small, env=env).returncode == 0  # one unused entry
    before = files_of(cache)
    subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
    done = qntz(ws.root, *command, env=env)
    assert done.returncode == 1, done.stdout
    one_line_error(done)
    assert "removed" not in done.stdout and "nothing removed" in done.stderr
    assert files_of(cache) == before


def test_status_writes_nothing_where_no_cache_is(ws, small):
    done = qntz(ws.root, "status", small)
    assert done.returncode == 0, done.stderr
    assert not (ws.root / ".qntz" / "cache").exists()


# -- gc and clear while a run builds --------------------------------------------------------
def _clean_run(base: Path, steps: str) -> tuple[bytes, dict[str, bytes]]:
    """A run of the same pipeline in another project (its lock file must not be one gc of
    the project under test sees)."""
    clean = base / "clean"
    (clean / ".qntz").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(REPO / "tests" / "zoo"), str(clean / "models")], check=True)
    path = clean / "pipeline.yaml"
    path.write_text(pipeline_text("models.clean:SmallCNN", steps))
    assert qntz(clean, "run", path).returncode == 0
    return path.with_name("pipeline.lock.json").read_bytes(), lasting_out(clean, path)


def lasting_out(root: Path, pipeline: Path) -> dict[str, bytes]:
    """out/'s files, those whose bytes the lock records by content (latency figures are
    volatile: only their names must match)."""
    lock = lock_of(pipeline)
    laid = files_of(root / "out")
    kept = {f"t/{sid}/{name}" for sid, step in lock["steps"].items() for name in step["outputs"]}
    return {name: data if name in kept else b"volatile" for name, data in laid.items()}


@pytest.mark.parametrize("command", [["cache", "gc"], ["cache", "clear", "--yes"]])
def test_gc_or_clear_during_a_run_changes_nothing_it_makes(ws, tmp_path_factory, command):
    lock, out = _clean_run(tmp_path_factory.mktemp("elsewhere"), LONGER)
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", LONGER))
    run = start(ws.root, "run", path)
    sweeps = []
    while run.poll() is None:  # one sweep after another, for the whole run
        sweeps.append(qntz(ws.root, *command))
    stdout, stderr = run.communicate()
    assert run.returncode == 0, stderr
    assert "Traceback" not in stderr and len(sweeps) >= 3
    assert all(s.returncode == 0 and "Traceback" not in s.stderr for s in sweeps), sweeps
    assert path.with_name("pipeline.lock.json").read_bytes() == lock
    assert lasting_out(ws.root, path) == out
    assert qntz(ws.root, "cache", "verify").returncode == 0


def test_an_interrupted_lease_of_a_killed_run_is_collected(ws, small):
    assert qntz(ws.root, "run", small).returncode == 0
    small.write_text(small.read_text().replace("simplify: {}", "simplify: {check: 1}"))
    proc = start(ws.root, "run", small, "--force")
    leases = ws.root / ".qntz" / "cache" / "leases"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(leases.glob("*.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert qntz(ws.root, "cache", "gc").returncode == 0
    assert not list(leases.iterdir())


# -- what a lock file, a manifest or an edit says is never taken on trust ------------------
def _rewrite_manifest(folder: Path, change) -> None:
    from qntz.core.hashing import digest_value

    path = folder / "qntz-manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    lasting = {n: d for n, d in manifest["files"].items() if n not in manifest["volatile"]}
    manifest["digest"] = digest_value(lasting)
    os.chmod(path, 0o644)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("lie", ["omits a file", "provides nothing", "provides another"])
def test_a_manifest_that_lies_is_rebuilt(ws, small, lie):
    assert qntz(ws.root, "run", small).returncode == 0
    onnx = entry(ws.root, lock_of(small)["steps"]["onnx"]["key"])
    changes = {"omits a file": lambda m: m["files"].pop("model.onnx"),
               "provides nothing": lambda m: m.update(provides=[]),
               "provides another": lambda m: m.update(provides=["engine"])}
    _rewrite_manifest(onnx, changes[lie])
    if lie == "omits a file":
        os.chmod(onnx / "model.onnx", 0o644)
        (onnx / "model.onnx").write_bytes(b"not a model")
    again = qntz(ws.root, "run", small)
    assert again.returncode == 0, again.stderr
    assert "onnx" in ran(again.stdout)
    assert qntz(ws.root, "cache", "verify").returncode == 0


def test_an_out_file_edited_in_place_with_its_mtime_kept_is_noticed(ws, small):
    assert qntz(ws.root, "run", small).returncode == 0
    laid = ws.root / "out" / "t" / "onnx" / "model.onnx"
    good = laid.read_bytes()
    stat = laid.stat()
    os.chmod(laid, 0o644)
    with laid.open("r+b") as handle:  # the same inode: the cache's file changes too
        handle.seek(len(good) - 100)
        handle.write(bytes(b ^ 0xFF for b in good[-100:-99]))
    os.utime(laid, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = qntz(ws.root, "run", small)
    assert again.returncode == 0, again.stderr
    assert "onnx" in ran(again.stdout)
    assert laid.read_bytes() == good
    assert ran(qntz(ws.root, "run", small).stdout) == []  # and then cached, not re-read


# -- no exit 0 without the work done; every other exit with one error line -----------------
EXITING = """\
import sys

import torch


def exits():
    sys.exit({code})


def interrupts():
    raise KeyboardInterrupt


def broken():
    class Broken(torch.nn.Module):
        def forward(self, x):
            return x

        def parameters(self, recurse=True):
            raise ValueError("no parameters here")

    return Broken()
"""


@pytest.mark.parametrize("factory,json_output", [("exits", False), ("exits", True),
                                                 ("interrupts", False), ("broken", False)])
def test_a_step_that_exits_or_breaks_fails_with_one_line(ws, factory, json_output):
    ws.write("models/exiting.py", EXITING.format(code=0))
    path = ws.pipeline(pipeline_text(f"models.exiting:{factory}", "capture: {uses: trace}"))
    done = qntz(ws.root, "run", path, *(["--json"] if json_output else []))
    assert done.returncode == 1, (done.stdout, done.stderr)
    if json_output:
        document = json.loads(done.stdout)
        assert document["ok"] is False
        assert any(s["state"] == "failed" and s["error"] for s in document["steps"])
    else:
        one_line_error(done)
        assert "step 'load'" in done.stderr
    assert not small_lock_written(path)


def small_lock_written(path: Path) -> bool:
    lock = path.with_name(path.stem + ".lock.json")
    return lock.exists() and "capture" in json.loads(lock.read_text())["steps"]


def test_ctrl_c_stops_within_seconds_and_leaves_nothing_half_written(ws):
    compares = "".join(f"\ncompare{i}: {{uses: compare, needs: [onnx, simplify], "
                       "iterations: 10000}"  # a second or more each: time to interrupt
                       for i in range(6))
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL + compares))
    assert qntz(ws.root, "run", path).returncode == 0
    lock = path.with_name("pipeline.lock.json").read_bytes()
    out = lasting_out(ws.root, path)
    first = lock_of(path)["steps"]["compare0"]["key"]
    proc = start(ws.root, "run", path, "--force", "--jobs", "1")  # five compares queued
    tmp = ws.root / ".qntz" / "cache" / "tmp"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp.glob(f"{first}-*")):
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - sent < 5
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert path.with_name("pipeline.lock.json").read_bytes() == lock
    assert lasting_out(ws.root, path) == out
    again = qntz(ws.root, "run", path)
    assert again.returncode == 0 and ran(again.stdout) == []
