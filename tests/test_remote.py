"""The remote cache with real servers: moto's S3 server on localhost, and a shared folder."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, pipeline_text

pytest.importorskip("s3fs")
pytest.importorskip("moto")

SMALL = "capture: {uses: trace}\nonnx: {}\nsimplify: {}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3() -> dict[str, str]:
    """A real S3 API server on 127.0.0.1 and the environment that points s3fs at it."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("qntz-test")
    yield {**env, "QNTZ_REMOTE": "s3://qntz-test/cache"}
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    server.wait(timeout=10)


def qntz(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qntz", *map(str, args)], cwd=cwd, text=True,
                          capture_output=True, timeout=600, env={**os.environ, **env})


def states(out: str) -> dict[str, str]:
    icons = {"✓": "ran", "•": "cached", "↓": "pulled", "✗": "failed"}
    return {ln.split()[1]: icons[ln[0]] for ln in out.splitlines() if ln[:1] in icons}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def workspace(folder: Path) -> Path:
    shutil.copytree(REPO / "pipelines", folder / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__", "*.lock.json"))
    (folder / ".qntz").mkdir()
    return folder / "pipelines" / "quickstart.yaml"


@pytest.mark.slow
def test_second_workspace_runs_nothing(tmp_path, s3):
    env = {**s3, "QNTZ_REMOTE": "s3://qntz-test/quickstart"}
    first, second = tmp_path / "a", tmp_path / "b"
    a, b = workspace(first), workspace(second)
    built = qntz(first, "run", a, env=env)
    assert built.returncode == 0 and "warning" not in built.stderr, built.stderr
    served = qntz(second, "run", b, env=env)
    assert served.returncode == 0, served.stderr
    assert set(states(served.stdout).values()) == {"pulled"}, served.stdout
    assert tree(first / "out") == tree(second / "out")
    assert a.with_name("quickstart.lock.json").read_text() == \
        b.with_name("quickstart.lock.json").read_text()
    status = qntz(second, "status", b, "--remote", env=env)
    assert status.stdout.count("(on the remote)") == len(states(served.stdout))


def test_damaged_remote_entry_is_never_used(ws, s3):
    env = {**s3, "QNTZ_REMOTE": "s3://qntz-test/damaged"}
    small = ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))
    assert qntz(ws.root, "run", small, env=env).returncode == 0
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    blobs = [p for p in fs.find("qntz-test/damaged/files")]
    for blob in blobs:  # every stored file is replaced by other bytes
        fs.pipe_file(blob, b"not what the manifest says")
    shutil.rmtree(ws.root / ".qntz" / "cache")
    again = qntz(ws.root, "run", small, env=env)
    assert again.returncode == 0, again.stderr
    assert "pulled" not in states(again.stdout).values()
    assert "does not match its digest" in again.stderr and "going on locally" in again.stderr


def test_push_pull_and_a_shared_folder_remote(ws, tmp_path):
    small = ws.pipeline(pipeline_text("models.clean:SmallCNN", SMALL))
    assert qntz(ws.root, "run", small, env={}).returncode == 0  # no remote yet
    (ws.root / ".qntz" / "config.yaml").write_text(f"remote: {tmp_path / 'shared'}\n")
    pushed = qntz(ws.root, "push", small, env={})
    assert pushed.returncode == 0 and pushed.stdout.count(": pushed") == 4, pushed.stdout
    assert "already there" in qntz(ws.root, "push", small, env={}).stdout
    shutil.rmtree(ws.root / ".qntz" / "cache")
    pulled = qntz(ws.root, "pull", small, "--step", "onnx", env={})
    assert pulled.returncode == 0 and pulled.stdout.strip() == "onnx: pulled"
    rest = qntz(ws.root, "run", small, env={})
    assert states(rest.stdout) == {"load": "pulled", "capture": "pulled", "onnx": "cached",
                                   "simplify": "pulled"}, rest.stdout
    offline = qntz(ws.root, "run", small, "--no-remote", env={})
    assert offline.returncode == 0 and set(states(offline.stdout).values()) == {"cached"}


def test_unreachable_remote_is_a_warning(ws):
    small = ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}"))
    env = {"QNTZ_REMOTE": "s3://nowhere/cache", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    result = qntz(ws.root, "run", small, env=env)
    assert result.returncode == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "going on locally" in warnings[0]
    assert "Traceback" not in result.stderr


def test_no_remote_extras_needed_locally(ws):
    probe = ("import sys; from qntz.cli import main; code = main(sys.argv[1:]); "
             "print('LOADED', [m for m in ('fsspec', 's3fs', 'ray') if m in sys.modules])")
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}"))
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", probe, "run", "pipeline.yaml"],
                              cwd=ws.root, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "LOADED []" in done.stdout, done.stderr


SECRET = "SUPERSECRET"


def _unheard() -> str:
    """A local port nothing listens on (an ftp remote there refuses the connection)."""
    return f"127.0.0.1:{_free_port()}"


def _everything_written(root: Path) -> str:
    """The text of every file qntz wrote for people: the lock, out/, the run logs."""
    files = [p for p in root.rglob("*") if p.is_file() and ".qntz/cache" not in p.as_posix()
             and "models" not in p.relative_to(root).parts[:1]]
    return "\n".join(p.read_bytes().decode(errors="replace") for p in files)


def test_credentials_in_the_remote_url_are_never_shown(ws, s3):
    small = ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}"))
    urls = [f"s3://AKIAXXX:{SECRET}@qntz-test/secret",  # s3fs keeps it in the bucket name
            f"ftp://me:{SECRET}@{_unheard()}/x?token={SECRET}2&X-Amz-Signature={SECRET}3"]
    for url in urls:
        env = {**s3, "QNTZ_REMOTE": url, "AWS_MAX_ATTEMPTS": "1"}
        shown = [qntz(ws.root, "run", small, "--force", env=env),  # --force: it pushes
                 qntz(ws.root, "run", small, "--json", "--force", env=env),
                 qntz(ws.root, "status", small, "--remote", env=env),
                 qntz(ws.root, "-v", "push", small, env=env),  # -v: the whole cause chain
                 qntz(ws.root, "pull", small, env=env)]
        assert shown[0].returncode == 0, shown[0].stderr
        assert "warning: remote cache" in shown[0].stderr and "***@" in shown[0].stderr
        assert shown[2].returncode != 0 and shown[3].returncode != 0, shown[2].stderr
        for done in shown:
            assert SECRET not in done.stdout + done.stderr, (url, done.stdout, done.stderr)
    assert (ws.root / "out").is_dir() and (ws.root / "pipeline.lock.json").is_file()
    assert SECRET not in _everything_written(ws.root)


def test_an_unreachable_ftp_remote_is_one_warning_or_one_error(ws, monkeypatch):
    small = ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}"))
    monkeypatch.setenv("QNTZ_REMOTE", f"ftp://{_unheard()}/x")
    run = ws.qntz("run", small)
    assert run.code == 0, run.err
    warnings = [ln for ln in run.err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "going on locally" in warnings[0], run.err
    for command in (["push", small], ["pull", small], ["status", small, "--remote"]):
        done = ws.qntz(*command)
        errors = [ln for ln in done.err.splitlines() if ln.startswith("error:")]
        assert done.code != 0 and len(errors) == 1, (command, done.err)
        assert "ftp://127.0.0.1" in errors[0] and "fix:" in errors[0], errors
        assert "Traceback" not in done.err


def _outside(root: Path) -> list[Path]:
    """What an escaping key could have made in the project's parent folders."""
    return [p for folder in [root, *list(root.parents)[:4]]
            for p in folder.glob("escape*")]


def test_a_lock_key_that_is_a_path_never_leaves_the_project(ws, tmp_path):
    small = ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}"))
    shared = tmp_path / "remote" / "a" / "b" / "shared"
    (ws.root / ".qntz" / "config.yaml").write_text(f"remote: {shared}\n")
    assert ws.qntz("run", small).code == 0
    lock = ws.root / "pipeline.lock.json"
    data = json.loads(lock.read_text())
    data["steps"]["capture"]["key"] = "../../../escape/k"
    lock.write_text(json.dumps(data))
    before = sorted(p for p in tmp_path.rglob("*") if ".qntz" not in p.parts)
    for command in ("pull", "push"):
        done = ws.qntz(command, small)
        assert "Traceback" not in done.err and not _outside(ws.root), (command, done.err)
    after = sorted(p for p in tmp_path.rglob("*") if ".qntz" not in p.parts)
    assert [p for p in after if p not in before and shared not in [p, *p.parents]] == []
    assert not [p for p in shared.rglob("*") if "escape" in p.as_posix()]


def test_the_remote_refuses_keys_and_digests_that_are_not_hex(tmp_path):
    from qntz.core.cache import Artifact, Cache, Held
    from qntz.core.hashing import FileDigests, digest_value
    from qntz.core.remote import Remote, RemoteUnavailable

    remote = Remote(str(tmp_path / "remote" / "shared"))
    cache = Cache(tmp_path / "cache", FileDigests(tmp_path / "digests.json"))
    assert remote.manifest("../../../escape/k") is None
    # a key that is no key cannot be locked: handed to the remote as if held, it is refused
    assert remote.pull(Held(cache, "../../escape/k"), "capture") is None
    key, lying = "a" * 64, "../../../../escape/blob"
    (tmp_path / "escape").mkdir()
    (tmp_path / "escape" / "blob").write_text("a file outside the remote")
    manifest = {"key": key, "files": {"model.pt": lying}, "provides": ["torchscript"],
                "digest": digest_value({"model.pt": lying})}
    entry = tmp_path / "remote" / "shared" / "entries" / key[:2] / f"{key}.json"
    entry.parent.mkdir(parents=True)
    entry.write_text(json.dumps(manifest))
    assert remote.manifest(key) is None and remote.pull(Held(cache, key), "capture") is None
    with pytest.raises(RemoteUnavailable, match="malformed"):
        remote._blob(lying)
    built = tmp_path / "entry"
    built.mkdir()
    (built / "model.pt").write_text("model")
    escaping = Artifact("capture", "../../../escape/k", built, {
        "key": "../../../escape/k", "files": {"model.pt": "b" * 64}, "provides": []})
    with pytest.raises(RemoteUnavailable, match="malformed"):
        remote.push(escaping)
    assert [p.name for p in (tmp_path / "escape").iterdir()] == ["blob"]
    assert not (tmp_path / "remote" / "shared" / "files").exists()  # refused before uploading


def test_ray_missing_with_a_remote_is_one_line(ws, tmp_path):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}"))
    probe = "import sys; sys.modules['ray'] = None; from qntz.cli import main; " \
            "sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", probe, "run", "pipeline.yaml", "--executor",
                           "ray"], cwd=ws.root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "QNTZ_REMOTE": str(tmp_path / "shared")})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and 'pip install "qntz[ray]"' in done.stderr
    assert [ln for ln in done.stderr.splitlines() if ln.strip()] == \
        [ln for ln in done.stderr.splitlines() if ln.startswith("error:")], done.stderr
