"""`--executor ray` on a real local Ray cluster of two nodes: a head, and a worker node whose
custom resource `gpu_t4` stands in for a GPU type. Artifacts travel through a remote cache
on a shared folder.

Every cluster here is this suite's own: each node is a `ray start --block` in a session of
its own, bound to 127.0.0.1 (nothing of it listens on or talks to another address), with a
temp folder of its own; it is stopped by signalling its own process groups and checked to
leave no process behind. Never `ray stop`, which stops every Ray on the machine."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_compare_missing import FAILING_INT8

from conftest import REPO, pipeline_text

pytest.importorskip("ray")
ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
# `ray start`, except that 127.0.0.1 stays 127.0.0.1: Ray swaps a loopback --node-ip-address
# (and a loopback --address) for the machine's outward address, and its servers then listen
# on every interface. With the node's address 127.0.0.1 they listen there alone.
LAUNCH = "\n".join([
    "import sys",
    "from ray._private import services",
    "services.resolve_ip_for_localhost = lambda host: host",
    "services.get_node_ip_address = lambda address=None: '127.0.0.1'",
    "from ray.scripts.scripts import main",
    "sys.argv[0] = 'ray'",
    "sys.exit(main())",
])
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    """A Ray cluster of this test's own on 127.0.0.1: `head()`, then `worker()`s."""

    def __init__(self) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="qr-", dir="/tmp"))  # short: socket paths
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []

    def head(self, cpus: int = 2) -> subprocess.Popen:
        return self._start("h", ["--head", "--port", str(self.port), "--num-cpus", str(cpus),
                                 "--include-dashboard=false"])

    def worker(self, cpus: int = 1, resources: dict[str, int] | None = None
               ) -> subprocess.Popen:
        extra = ["--resources", json.dumps(resources)] if resources else []
        return self._start(f"w{len(self.nodes)}", ["--address", self.address,
                                                    "--num-cpus", str(cpus), *extra])

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.temp / f"{name}.log"
        with log.open("w") as out:
            node = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, "start", "--block", *args,
                 "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp / name),
                 "--object-store-memory", "100000000", "--disable-usage-stats"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                # on SIGTERM, shut down now rather than drain the node for 30 s first
                env={**os.environ, **ENV, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
        self.nodes.append(node)
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if node.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray node {name} did not start:\n"
                                   + log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        return node

    def processes(self, nodes: list[subprocess.Popen] | None = None) -> dict[int, str]:
        """pid -> command line of every live process of these nodes (all of them by
        default): those in a node's session, and any naming the cluster's temp folder."""
        sessions = {n.pid for n in (self.nodes if nodes is None else nodes)}
        marker = str(self.temp) if nodes is None else None
        found: dict[int, str] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
                command = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] in ("Z", "X"):  # exited, not yet reaped: holds nothing
                continue
            command_line = command.replace(b"\0", b" ").decode(errors="replace").strip()
            if int(fields[3]) in sessions or (marker and marker in command_line):
                found[int(entry.name)] = command_line
        return found

    def sockets(self, also: set[int] = frozenset()) -> list[tuple[str, str, str, int]]:
        """(protocol, local address, remote address, pid) of every TCP and UDP socket the
        cluster's processes (and those `also` names, e.g. a driver) hold."""
        inodes: dict[str, int] = {}
        for pid in set(self.processes()) | set(also):
            try:
                for fd in os.scandir(f"/proc/{pid}/fd"):
                    target = os.readlink(fd.path)
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
            except OSError:
                continue
        held = []
        for protocol in ("tcp", "tcp6", "udp", "udp6"):
            for line in Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    held.append((protocol, _address(cols[1]), _address(cols[2]),
                                 inodes[cols[9]]))
        return held

    def kill_node(self, node: subprocess.Popen) -> None:
        """SIGKILL one node: its process group (raylet, its workers and agents), then any
        process of its session that left the group, by pid."""
        if node.returncode is None:  # not reaped: the group id is still this node's
            os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)
        for pid in self.processes([node]):
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> dict[int, str]:
        """Stop the nodes, workers first: SIGTERM to each node's own process group, SIGKILL
        after a grace period; returns the processes that outlived that (then killed by pid)."""
        for node in reversed(self.nodes):
            if node.returncode is None:
                try:
                    os.killpg(node.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    node.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(node.pid, signal.SIGKILL)
                    node.wait(timeout=30)
        deadline = time.monotonic() + 15
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left

    def remove(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)


def _address(text: str) -> str:
    """An address of /proc/net/{tcp,udp}[6] ('0100007F:1F90'), as 'ip:port'."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"{ip}:{int(port, 16)}"


def _on_loopback(address: str) -> bool:
    """127.0.0.1, or no address at all (an unconnected socket's peer)."""
    host, port = address.rsplit(":", 1)
    return ipaddress.ip_address(host) == LOOPBACK or (
        ipaddress.ip_address(host).is_unspecified and port == "0")


@pytest.fixture(scope="module")
def cluster():
    nodes = LocalCluster()
    try:
        nodes.head(cpus=2)
        nodes.worker(cpus=1, resources={"gpu_t4": 1})
        yield nodes
    finally:
        left = nodes.stop()
        nodes.remove()
    assert left == {}, f"processes of the cluster outlived its stop: {left}"


def qntz(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qntz", *map(str, args)], cwd=cwd, text=True,
                          capture_output=True, timeout=900, env={**os.environ, **ENV, **env})


def project(folder: Path, steps: str) -> Path:
    shutil.copytree(REPO / "tests" / "zoo", folder / "models",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (folder / ".qntz").mkdir(parents=True)
    path = folder / "p.yaml"
    path.write_text(pipeline_text("models.clean:SmallCNN", steps))
    return path


def remote_view(folder: Path) -> dict[str, dict]:
    """What a remote holds, without what varies between equal runs (volatile files such
    as timings, unfinished uploads): per entry, its digest, provides and lasting files,
    each of which must be uploaded."""
    view = {}
    for path in sorted((folder / "entries").rglob("*.json")):
        manifest = json.loads(path.read_text())
        files = {n: d for n, d in manifest["files"].items()
                 if n not in set(manifest.get("volatile", []))}
        for digest in manifest["files"].values():
            assert (folder / "files" / digest[:2] / digest).is_file(), (path.name, digest)
        view[path.stem] = {"digest": manifest["digest"], "provides": manifest["provides"],
                           "files": files}
    return view


AUTO = "preflight: {}\ncapture: {uses: auto}\nonnx: {opset: 18}"
PINNED = "capture: {uses: trace}\nonnx: {}\nsimplify: {resources: {resources: {gpu_t4: 1}}}"


def test_the_cluster_listens_on_127_0_0_1_only_and_stops_alone():
    """Every socket of every process of a two-node cluster, and of a driver connected the
    way qntz connects, with its tasks running on both nodes, is on 127.0.0.1; stopping the
    cluster leaves none of its processes, and touches no other process (one in a session
    of its own survives it)."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
    nodes = LocalCluster()
    try:
        nodes.head(cpus=1)
        nodes.worker(cpus=0, resources={"gpu_t4": 1})
        code = ("import sys, time, ray\n"
                "from qntz.core.ray_executor import _connect\n"
                "_connect(ray, sys.argv[1], {})\n"
                "@ray.remote(num_cpus=1)\n"
                "def hold(): time.sleep(20); return ray.get_runtime_context().get_node_id()\n"
                "@ray.remote(num_cpus=0, resources={'gpu_t4': 1})\n"
                "def pinned(): time.sleep(20); return ray.get_runtime_context().get_node_id()\n"
                "print(len(set(ray.get([hold.remote(), pinned.remote()]))))\n")
        driver = subprocess.Popen([sys.executable, "-c", code, nodes.address], text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**os.environ, **ENV})
        busy: set[str] = set()
        deadline = time.monotonic() + 120
        while len(busy) < 2 and time.monotonic() < deadline and driver.poll() is None:
            busy = {c for c in nodes.processes().values() if c.startswith("ray::hold")
                    or c.startswith("ray::pinned")}
            time.sleep(0.5)
        assert len(busy) == 2, (busy, driver.poll())
        held = nodes.sockets(also={driver.pid})
        assert {pid for *_, pid in held} > {driver.pid}, held
        listening = [s for s in held if s[2].endswith(":0")]
        assert len(listening) >= 6, held  # gcs, two raylets' servers, agents, workers
        assert [s for s in held if not (_on_loopback(s[1]) and _on_loopback(s[2]))] == []
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0 and out.strip() == "2", err[-3000:]
    finally:
        left = nodes.stop()
        nodes.remove()
    assert left == {}, left
    assert nodes.processes() == {}
    assert bystander.poll() is None, "stopping the cluster stopped another process"
    bystander.kill()
    bystander.wait()


def test_losing_a_node_mid_step_costs_only_a_retry(tmp_path):
    """A head that runs no steps and two worker nodes: once two steps are on the remote,
    the node seen running the next one is killed whole (its process group: raylet, workers,
    agents). Ray retries the task on the other node, which pulls what it needs from the
    remote; the run exits 0, and its lock file and remote equal a clean run's."""
    nodes = LocalCluster()
    try:
        nodes.head(cpus=0)
        workers = [nodes.worker(cpus=1), nodes.worker(cpus=1)]
        remote = tmp_path / "remote"
        pipeline = project(tmp_path / "a", AUTO)
        proc = subprocess.Popen(
            [sys.executable, "-m", "qntz", "run", pipeline, "--executor", "ray", "--address",
             nodes.address, "--json"], cwd=pipeline.parent, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **ENV, "QNTZ_REMOTE": str(remote)})
        lost = None
        deadline = time.monotonic() + 180
        while lost is None and time.monotonic() < deadline and proc.poll() is None:
            # past load and preflight (on the remote now), into a later step on some node
            if len(list((remote / "entries").rglob("*.json"))) >= 2:
                for node in workers:
                    if any(c.startswith("ray::build_step")
                           for c in nodes.processes([node]).values()):
                        time.sleep(0.5)
                        nodes.kill_node(node)
                        lost = node
                        break
            time.sleep(0.1)
        out, err = proc.communicate(timeout=900)
        assert lost is not None, "no node was seen running a step"
        assert "Traceback" not in err
        assert proc.returncode == 0, out[-2000:] + err[-2000:]
        assert nodes.processes([lost]) == {}
        placement = json.loads(out)["placement"]
        assert {p["state"] for p in placement.values()} <= {"ran", "pulled", "cached"}
        clean = project(tmp_path / "b", AUTO)
        done = qntz(clean.parent, "run", clean, env={"QNTZ_REMOTE": str(tmp_path / "clean")})
        assert done.returncode == 0, done.stderr
        assert pipeline.with_name("p.lock.json").read_text() == \
            clean.with_name("p.lock.json").read_text()
        assert remote_view(remote) == remote_view(tmp_path / "clean")
    finally:
        left = nodes.stop()
        nodes.remove()
    assert left == {}, left


def test_pinned_step_runs_on_its_node_and_matches_a_local_run(tmp_path, cluster):
    remote = {"QNTZ_REMOTE": str(tmp_path / "remote")}
    pipeline = project(tmp_path / "a", PINNED)
    result = qntz(pipeline.parent, "run", pipeline, "--executor", "ray", "--address",
                  cluster.address, "--json", env=remote)
    assert result.returncode == 0, result.stderr
    placement = json.loads(result.stdout)["placement"]
    assert placement["simplify"]["node_resources"] == ["gpu_t4"]
    assert {p["state"] for p in placement.values()} == {"ran"}
    local = project(tmp_path / "b", PINNED)
    assert qntz(local.parent, "run", local, env={}).returncode == 0
    assert pipeline.with_name("p.lock.json").read_text() == \
        local.with_name("p.lock.json").read_text()
    again = qntz(pipeline.parent, "run", pipeline, "--executor", "ray", "--address",
                 cluster.address, "--json", env=remote)
    assert {p["state"] for p in json.loads(again.stdout)["placement"].values()} <= {
        "cached", "pulled"}


def test_a_step_cached_on_a_node_but_not_on_the_remote_is_pushed(tmp_path, cluster):
    """A task that finds its step in its node's own cache (an earlier attempt built it
    there and was lost before its push; here: a run against another remote) still makes
    sure the remote has it: the driver gets every artifact from the remote."""
    first = project(tmp_path / "a", PINNED)
    done = qntz(first.parent, "run", first, "--executor", "ray", "--address",
                cluster.address, env={"QNTZ_REMOTE": str(tmp_path / "r1")})
    assert done.returncode == 0, done.stderr
    # the same project elsewhere (the same working_dir package: the nodes' caches have
    # every step), an empty cache here, and an empty remote
    second = project(tmp_path / "b", PINNED)
    again = qntz(second.parent, "run", second, "--executor", "ray", "--address",
                 cluster.address, "--json", env={"QNTZ_REMOTE": str(tmp_path / "r2")})
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "cached" in {p["state"] for p in json.loads(again.stdout)["placement"].values()}
    assert remote_view(tmp_path / "r2") == remote_view(tmp_path / "r1")
    assert second.with_name("p.lock.json").read_text() == \
        first.with_name("p.lock.json").read_text()


def test_a_failed_candidate_leaves_compare_judging_the_others(tmp_path, cluster):
    """As in a local run: int8 fails on the cluster, compare still judges onnx and fp16,
    marks int8 not built, and records the same lock as a local run."""
    pipeline = project(tmp_path / "a", FAILING_INT8)
    done = qntz(pipeline.parent, "run", pipeline, "--executor", "ray", "--address",
                cluster.address, "--json", env={"QNTZ_REMOTE": str(tmp_path / "remote")})
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    steps = {s["id"]: s for s in report["steps"]}
    assert steps["int8"]["state"] == "failed" and steps["compare"]["state"] == "failed"
    assert report["placement"]["compare"]["state"] != "skipped"
    statuses = {c["id"]: c["status"] for c in steps["compare"]["summary"]["candidates"]}
    assert statuses == {"onnx": "pass", "int8": "not built", "fp16": "pass"}
    local = project(tmp_path / "b", FAILING_INT8)
    assert qntz(local.parent, "run", local, env={}).returncode == 1
    assert pipeline.with_name("p.lock.json").read_text() == \
        local.with_name("p.lock.json").read_text()


@pytest.mark.slow
def test_quickstart_and_encoder_together(tmp_path, cluster):
    remote = {"QNTZ_REMOTE": str(tmp_path / "remote")}
    for name in ("ray", "local"):
        shutil.copytree(REPO / "pipelines", tmp_path / name / "pipelines",
                        ignore=shutil.ignore_patterns("__pycache__", "*.lock.json"))
        (tmp_path / name / ".qntz").mkdir()
    files = ["pipelines/quickstart.yaml", "pipelines/encoder.yaml"]
    done = qntz(tmp_path / "ray", "run", *files, "--executor", "ray", "--address",
                cluster.address, env=remote)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for file in files:
        assert qntz(tmp_path / "local", "run", file, env={}).returncode == 0
    for lock in ("quickstart.lock.json", "encoder.lock.json"):
        ray_lock = json.loads((tmp_path / "ray" / "pipelines" / lock).read_text())
        local_lock = json.loads((tmp_path / "local" / "pipelines" / lock).read_text())
        assert ray_lock == local_lock, lock


def test_killing_a_worker_mid_step_loses_nothing(tmp_path, cluster):
    remote = {"QNTZ_REMOTE": str(tmp_path / "remote")}
    pipeline = project(tmp_path / "a", AUTO)
    proc = subprocess.Popen([sys.executable, "-m", "qntz", "run", pipeline, "--executor", "ray",
                             "--address", cluster.address], cwd=pipeline.parent, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **ENV, **remote})
    killed = _kill_a_busy_worker(cluster, deadline=time.monotonic() + 120)
    out, err = proc.communicate(timeout=900)
    assert killed, "no worker was seen running a step"
    assert "Traceback" not in err
    assert proc.returncode == 0, out[-2000:] + err[-2000:]  # a lost worker costs a retry
    again = qntz(pipeline.parent, "run", pipeline, "--executor", "ray", "--address",
                 cluster.address, env=remote)
    assert again.returncode == 0, again.stderr
    fresh = project(tmp_path / "b", AUTO)
    lock = pipeline.with_name("p.lock.json")
    shutil.copy(lock, fresh.with_name("p.lock.json"))
    pulled = qntz(fresh.parent, "pull", fresh, env=remote)
    assert pulled.returncode == 0 and "not on the remote" not in pulled.stdout, pulled.stdout
    assert qntz(fresh.parent, "cache", "verify", env={}).returncode == 0
    assert qntz(pipeline.parent, "cache", "verify", env={}).returncode == 0


def _kill_a_busy_worker(cluster: LocalCluster, deadline: float) -> bool:
    """SIGKILL the first worker of this cluster (by pid) seen running `build_step`."""
    while time.monotonic() < deadline:
        found = [pid for pid, command in cluster.processes().items()
                 if command.startswith("ray::build_step")]
        if found:
            time.sleep(1.0)  # let it get into the step
            try:
                os.kill(found[0], signal.SIGKILL)
            except ProcessLookupError:  # it finished meanwhile: wait for the next one
                continue
            return True
        time.sleep(0.1)
    return False


class _Ref:
    def __init__(self, sid: str, after: tuple) -> None:
        self.sid, self.after, self.value = sid, after, None


class _Cluster:
    """Ray as `_place` uses it, scripted: per step, what each of its tasks does in turn
    ('ran', 'lost': Ray gave up on it, 'failed': it failed on its own, 'unpushed': it
    finished but the remote lacks its entry); then 'ran'."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        import ray

        self.exceptions = ray.exceptions
        self.script = {sid: list(acts) for sid, acts in script.items()}
        self.submitted: list[str] = []
        self.missing: set[str] = set()

    def options(self, **_: object) -> _Cluster:
        return self

    def remote(self, pipeline: str, sid: str, *after: object) -> _Ref:
        self.submitted.append(sid)
        return _Ref(sid, after)

    def get(self, ref: _Ref) -> dict:
        if ref.value is None:
            try:  # as Ray does: a task whose argument failed fails with its error
                after = [self.get(a) if isinstance(a, _Ref) else a for a in ref.after]
            except self.exceptions.RayError as exc:
                ref.value = exc
            else:
                ref.value = self._run(ref.sid, after)
        if isinstance(ref.value, Exception):
            raise ref.value
        return ref.value

    def _run(self, sid: str, after: list[dict]) -> dict | Exception:
        if any(a["state"] not in ("ran", "cached", "pulled") for a in after):
            return {"step": sid, "state": "skipped", "node": "n", "key": None,
                    "reason": "a need did not finish", "on_remote": False}
        act = self.script.get(sid, []).pop(0) if self.script.get(sid) else "ran"
        if act == "lost":
            return self.exceptions.WorkerCrashedError()
        if act == "unpushed":
            self.missing.add(sid)
        else:
            self.missing.discard(sid)
        return {"step": sid, "state": "failed" if act == "failed" else "ran", "node": "n",
                "key": sid, "reason": "", "on_remote": True}

    def has(self, key: str) -> bool:  # the remote, as the driver sees it
        return key not in self.missing


@pytest.mark.parametrize("script, submitted, states", [
    ({}, ["load", "preflight", "capture", "onnx"], {"ran"}),
    # lost for good by Ray: submitted again, with what waited on it
    ({"preflight": ["lost"]}, ["load", "preflight", "capture", "onnx", "preflight", "capture",
                               "onnx"], {"ran"}),
    # finished, but the remote lacks it: submitted again (that task pushes it)
    ({"onnx": ["unpushed"]}, ["load", "preflight", "capture", "onnx", "onnx"], {"ran"}),
    # a step's own failure is final, and what needs it is skipped
    ({"capture": ["failed"]}, ["load", "preflight", "capture", "onnx"],
     {"ran", "failed", "skipped"}),
    # lost in every round: failed, saying so
    ({"load": ["lost"] * 3}, ["load", "preflight", "capture", "onnx"] * 3,
     {"failed", "skipped"}),
])
def test_what_ray_could_not_finish_is_submitted_again(tmp_path, script, submitted, states):
    from types import SimpleNamespace

    from qntz.core.pipeline import load_pipeline
    from qntz.core.ray_executor import _place

    current = SimpleNamespace(pipeline=load_pipeline(project(tmp_path, AUTO)))
    fake = _Cluster(script)
    placed = _place(fake, fake, [current], tmp_path.resolve(), fake)
    assert fake.submitted == submitted
    assert {done["state"] for done in placed.values()} == states
    if script.get("load") == ["lost"] * 3:
        assert placed[("p.yaml", "load")]["reason"].startswith("lost on the cluster")
