"""Fault injection with real processes: concurrent runs, kills, damaged and malformed
metadata, a read-only cache, a full disk, edited outputs. Each of these broke main once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, pipeline_text
from qntz.core.workspace import OutsideWorkspace, Workspace, lay_out

SMALL = "capture: {uses: trace}\nonnx: {}\nsimplify: {}"


def qntz(cwd: Path, *args: str, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qntz", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qntz", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def ran(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith("✓")]


def one_line_error(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors, proc.stderr


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_quickstart(folder: Path) -> Path:
    shutil.copytree(REPO / "pipelines", folder / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__", "out", "*.lock.json"))
    (folder / ".qntz").mkdir(exist_ok=True)
    return folder / "pipelines" / "quickstart.yaml"


def entry(root: Path, key: str) -> Path:
    return root / ".qntz" / "cache" / "entries" / key[:2] / key


def lock_of(pipeline: Path) -> dict:
    return json.loads(pipeline.with_name(pipeline.stem + ".lock.json").read_text())


@pytest.fixture
def small(ws) -> Path:
    return ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))


# -- concurrency ---------------------------------------------------------------------------
@pytest.mark.slow
def test_three_concurrent_runs_build_each_step_once(tmp_path):
    cache = tmp_path / "shared-cache"
    folders = [tmp_path / f"user{i}" for i in range(3)]
    pipelines = [copy_quickstart(f) for f in folders]
    env = {"QNTZ_CACHE": str(cache)}
    procs = [start(f, "run", p, env=env) for f, p in zip(folders, pipelines)]
    outs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err
    built = [sid for out, _ in outs for sid in ran(out)]
    steps = set(lock_of(pipelines[0])["steps"])
    assert sorted(built) == sorted(steps), built  # every step exactly once, across the three
    trees = [tree(f / "out" / "quickstart") for f in folders]
    assert trees[0] and trees[0] == trees[1] == trees[2]
    assert lock_of(pipelines[0]) == lock_of(pipelines[1]) == lock_of(pipelines[2])
    assert not list((cache / "tmp").iterdir())


def test_concurrent_runs_in_one_project_share_out(ws, small):
    procs = [start(ws.root, "run", small) for _ in range(2)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(s for out, _ in outs for s in ran(out)) == sorted(lock_of(small)["steps"])
    assert qntz(ws.root, "cache", "verify").returncode == 0


# -- kills ---------------------------------------------------------------------------------
def test_killed_run_leaves_nothing_that_is_served(ws, small):
    proc = start(ws.root, "run", small)
    tmp = ws.root / ".qntz" / "cache" / "tmp"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp.is_dir() and any(tmp.iterdir())):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = list(tmp.iterdir())
    assert leftovers, "the kill came too late to leave a temp folder"
    dry = qntz(ws.root, "cache", "gc", "--dry-run")
    assert dry.returncode == 0 and f"{len(leftovers)} temporary" in dry.stdout
    assert all(p.exists() for p in leftovers)
    again = qntz(ws.root, "run", small)
    assert again.returncode == 0, again.stderr
    assert not list(tmp.iterdir())  # swept under each key's lock
    assert qntz(ws.root, "cache", "verify").returncode == 0


def test_gc_removes_leftovers_and_unused_entries(ws, small):
    assert qntz(ws.root, "run", small).returncode == 0
    keys = {s["key"] for s in lock_of(small)["steps"].values()}
    orphan = ws.root / ".qntz" / "cache" / "tmp" / ("f" * 64 + "-999999-deadbeef")
    orphan.mkdir(parents=True)
    small.write_text(small.read_text().replace("simplify: {}", "simplify: {check: 1}"))
    assert qntz(ws.root, "run", small).returncode == 0
    new_keys = {s["key"] for s in lock_of(small)["steps"].values()}
    old_simplify = (keys - new_keys).pop()
    dry = qntz(ws.root, "cache", "gc", "--dry-run")
    assert "would remove 1 unused entry and 1 temporary" in dry.stdout
    assert entry(ws.root, old_simplify).exists() and orphan.exists()
    gc = qntz(ws.root, "cache", "gc")
    assert gc.returncode == 0 and not entry(ws.root, old_simplify).exists()
    assert not orphan.exists()
    assert all(entry(ws.root, k).exists() for k in new_keys)
    assert "0 ran" not in qntz(ws.root, "run", small).stdout  # nothing it uses was removed
    assert ran(qntz(ws.root, "run", small).stdout) == []


# -- damage --------------------------------------------------------------------------------
def test_bytes_changed_with_mtime_kept_are_caught_before_use(ws, small):
    assert qntz(ws.root, "run", small).returncode == 0
    onnx = entry(ws.root, lock_of(small)["steps"]["onnx"]["key"]) / "model.onnx"
    stat = onnx.stat()
    data = bytearray(onnx.read_bytes())
    data[-100] ^= 0xFF  # same size, inside the weights
    os.chmod(onnx, 0o644)
    onnx.write_bytes(bytes(data))
    os.utime(onnx, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify = qntz(ws.root, "cache", "verify")
    assert verify.returncode == 1 and "model.onnx changed" in verify.stdout
    # simplify consumes onnx: it re-reads it, finds the damage and rebuilds it first
    small.write_text(small.read_text().replace("simplify: {}", "simplify: {check: 2}"))
    result = qntz(ws.root, "run", small)
    assert result.returncode == 0, result.stderr
    assert ran(result.stdout) == ["onnx", "simplify"]
    assert qntz(ws.root, "cache", "verify").returncode == 0


@pytest.mark.parametrize("manifest", ["[]", "{}", '{"files": []}', "not json"])
def test_malformed_manifest_is_rebuilt(ws, small, manifest):
    assert qntz(ws.root, "run", small).returncode == 0
    key = lock_of(small)["steps"]["onnx"]["key"]
    (entry(ws.root, key) / "qntz-manifest.json").write_text(manifest)
    status = qntz(ws.root, "status", small)
    assert status.returncode == 0 and "malformed" in status.stdout + status.stderr or \
        "unreadable" in status.stdout
    assert entry(ws.root, key).exists()  # status has no side effects
    result = qntz(ws.root, "run", small)
    assert result.returncode == 0 and "onnx" in ran(result.stdout), result.stderr
    assert "Traceback" not in result.stderr


def test_hostile_manifest_cannot_lay_out_outside(ws, small):
    assert qntz(ws.root, "run", small).returncode == 0
    folder = entry(ws.root, lock_of(small)["steps"]["onnx"]["key"])
    manifest = json.loads((folder / "qntz-manifest.json").read_text())
    manifest["files"]["../../../../escaped.txt"] = "0" * 64
    (folder / "qntz-manifest.json").write_text(json.dumps(manifest))
    result = qntz(ws.root, "run", small)
    assert result.returncode == 0 and "onnx" in ran(result.stdout)
    assert not list(ws.root.parent.rglob("escaped.txt"))


@pytest.mark.parametrize("name,text", [("digests", "[]"), ("digests", '{"a": 5}'),
                                       ("lock", "[]"), ("lock", '{"steps": []}'),
                                       ("lock", '{"steps": {"onnx": 3}}')])
def test_malformed_metadata_is_ignored(ws, small, name, text):
    assert qntz(ws.root, "run", small).returncode == 0
    path = (ws.root / ".qntz" / "cache" / "file-digests.json" if name == "digests"
            else small.with_name("pipeline.lock.json"))
    path.write_text(text)
    for command in ("status", "run"):
        result = qntz(ws.root, command, small)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert ran(result.stdout) == []


def test_status_has_no_side_effects(ws, small):
    assert qntz(ws.root, "run", small).returncode == 0
    key = lock_of(small)["steps"]["onnx"]["key"]
    model = entry(ws.root, key) / "model.onnx"
    os.chmod(model, 0o644)
    model.write_bytes(b"broken")
    before = tree(ws.root / ".qntz" / "cache" / "entries")
    status = qntz(ws.root, "status", small)
    assert "corrupt" in status.stdout
    assert tree(ws.root / ".qntz" / "cache" / "entries") == before


def test_edited_output_is_restored(ws, small):
    assert qntz(ws.root, "run", small).returncode == 0
    laid = ws.root / "out" / "t" / "onnx" / "model.onnx"
    original = laid.read_bytes()
    laid.unlink()  # replaced by another file of the same size, as an editor saves
    laid.write_bytes(b"x" * len(original))
    result = qntz(ws.root, "run", small)
    assert result.returncode == 0 and ran(result.stdout) == []
    assert laid.read_bytes() == original


# -- the world: read-only and full disks (a real tmpfs) -----------------------------------
def test_read_only_cache_serves_a_cached_run(ws, small, mounts):
    cache = mounts(ws.root / "ro-cache", "64m")
    env = {"QNTZ_CACHE": str(cache)}
    assert qntz(ws.root, "run", small, env=env).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
    shutil.rmtree(ws.root / "out")
    result = qntz(ws.root, "run", small, env=env)
    assert result.returncode == 0, result.stderr
    assert (ws.root / "out" / "t" / "onnx" / "model.onnx").is_file()
    small.write_text(small.read_text().replace("simplify: {}", "simplify: {check: 2}"))
    blocked = qntz(ws.root, "run", small, env=env)
    assert blocked.returncode == 1
    one_line_error(blocked)
    assert "step 'simplify'" in blocked.stderr and "writable" in blocked.stderr


def test_full_disk_is_one_line_and_leaves_nothing_half_written(ws, small, mounts):
    cache = mounts(ws.root / "tiny-cache", "40k")  # smaller than all the steps make
    result = qntz(ws.root, "run", small, env={"QNTZ_CACHE": str(cache)})
    assert result.returncode == 1
    one_line_error(result)
    assert "no space left" in result.stderr and "step '" in result.stderr
    assert not list((cache / "tmp").glob("*"))
    assert all(p.stat().st_size == 0 or p.suffix == ".lock" or p.name.endswith(".json")
               for p in (cache / "locks").rglob("*") if p.is_file())
    for laid in (ws.root / "out").rglob("*") if (ws.root / "out").exists() else []:
        assert not laid.name.startswith(".")  # no aside folders left


def test_full_output_disk_keeps_out_whole(ws, small, mounts):
    assert qntz(ws.root, "run", small).returncode == 0
    shutil.rmtree(ws.root / "out")
    mounts(ws.root / "out", "24k")  # another device: copies, and too small for them
    result = qntz(ws.root, "run", small)
    assert result.returncode == 1
    one_line_error(result)
    assert "cannot lay out outputs" in result.stderr
    leftover = [p for p in (ws.root / "out").rglob("*") if p.is_file()]
    cache = {d for s in lock_of(small)["steps"].values() for d in s["outputs"].values()}
    import hashlib
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() in cache for p in leftover)
    assert not [p for p in (ws.root / "out").rglob(".*")]


# -- where things go -----------------------------------------------------------------------
def test_project_root_not_the_current_folder(tmp_path):
    project = tmp_path / "proj"
    shutil.copytree(REPO / "tests" / "zoo", project / "models")
    (project / ".git").mkdir()
    (project / "p.yaml").write_text(pipeline_text("models.clean:SmallCNN",
                                                  "capture: {uses: trace}"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert qntz(elsewhere, "run", "../proj/p.yaml").returncode == 0
    assert not list(elsewhere.iterdir())
    assert (project / "out" / "t" / "capture" / "model.pt").is_file()
    assert (project / "p.lock.json").is_file() and (project / ".qntz" / "cache").is_dir()
    again = qntz(project, "run", "p.yaml")
    assert again.returncode == 0 and ran(again.stdout) == []


def test_nothing_is_written_outside_the_workspace():
    base = Path("/tmp/qntz-outside-check")
    with pytest.raises(OutsideWorkspace):
        Workspace(base, base / ".qntz").out("../../victim")
    with pytest.raises(OutsideWorkspace):
        lay_out({}, base / "elsewhere", base / "out")
    assert not base.exists()
