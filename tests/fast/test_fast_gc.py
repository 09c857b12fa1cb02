"""`cache gc` and `cache clear` on a marked cache, and the leases that keep a live run's keys.

The dead run is a real process that took a lease and exited without releasing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from qntz.core import cache_admin
from qntz.core.cache import CACHE_MARKER, Cache
from qntz.core.errors import PipelineError
from qntz.core.hashing import FileDigests
from qntz.core.lease import FOLDER, GUARD, Lease, live_leases, sweep_guard
from qntz.core.workspace import Workspace

pytestmark = pytest.mark.fast

STEPS = """
    a: {uses: emit, text: A}
    b: {uses: emit, text: B}
"""


class Console:
    """What gc prints, kept (a rich Console has the same `print`)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, text: str) -> None:
        self.lines.append(text)


def built(toy) -> tuple[Workspace, dict[str, str]]:
    """The project after a run, and each step's key."""
    toy.pipeline(STEPS)
    done = toy.run()
    return Workspace(toy.root, toy.cache_dir), {s: o.key for s, o in done.steps.items()}


def cached(toy) -> set[str]:
    return set(Cache(toy.cache_dir, FileDigests()).keys())


def forget_lock(toy) -> None:
    toy.path.with_name("toy.lock.json").unlink()


def test_gc_keeps_what_lock_files_use_and_removes_the_rest(toy):
    workspace, keys = built(toy)
    toy.pipeline("a: {uses: emit, text: A}")  # b is no longer in the pipeline
    toy.run()
    console = Console()
    assert cache_admin.gc(workspace, console, dry_run=True) == 0
    assert console.lines[-1].startswith("would remove 1 unused entry")
    assert cached(toy) == set(keys.values())
    cache_admin.gc(workspace, console, dry_run=False)
    assert console.lines[-1].startswith("removed 1 unused entry and 0 temporary folders; kept 2")
    assert cached(toy) == {keys["load"], keys["a"]}
    assert toy.run().ok and toy.states()["a"][0] == "cached"


def test_gc_removes_only_qntzs_own_leftovers(toy):
    workspace, keys = built(toy)
    tmp = toy.cache_dir / "tmp"
    leftover = tmp / f"{keys['a']}-4194303-0badcafe"  # a killed build: its key is not locked
    (leftover / "out").mkdir(parents=True)
    library = tmp / "libraries-4194303"  # a dead process's library scratch
    library.mkdir()
    foreign = tmp / "not-qntz"
    foreign.mkdir()
    console = Console()
    cache_admin.gc(workspace, console, dry_run=False)
    assert not leftover.exists() and not library.exists() and foreign.exists()
    assert "2 temporary folders" in console.lines[-1]
    assert cached(toy) == set(keys.values())  # all in the lock file


def test_a_live_leases_keys_are_kept(toy):
    workspace, keys = built(toy)
    forget_lock(toy)
    lease = Lease(toy.cache_dir)
    lease.add([keys["a"]])
    try:
        console = Console()
        cache_admin.gc(workspace, console, dry_run=False)
        assert cached(toy) == {keys["a"]}
        assert console.lines[-1].endswith("and 1 in use by a running qntz")
        assert cache_admin.clear(workspace) == (0, 1)
        assert cached(toy) == {keys["a"]}
    finally:
        lease.release()
    assert not list((toy.cache_dir / FOLDER).iterdir())
    assert cache_admin.clear(workspace) == (1, 0) and cached(toy) == set()


DEAD_RUN = """
    import os, sys
    from pathlib import Path
    from qntz.core.lease import Lease

    Lease(Path(sys.argv[1])).add([sys.argv[2]])
    os._exit(0)  # killed before it released its lease
"""


def test_a_dead_processs_lease_is_collected(toy):
    workspace, keys = built(toy)
    forget_lock(toy)
    subprocess.run([sys.executable, "-c", textwrap.dedent(DEAD_RUN), str(toy.cache_dir),
                    keys["a"]], check=True, timeout=60)
    leases = toy.cache_dir / FOLDER
    assert len(list(leases.glob("*.json"))) == 1 and len(list(leases.glob("*.lock"))) == 1
    with sweep_guard(toy.cache_dir, exclusive=True):
        assert live_leases(toy.cache_dir) == {}
    assert not list(leases.iterdir())  # its files went with it
    cache_admin.gc(workspace, Console(), dry_run=False)
    assert cached(toy) == set()


def test_a_live_lease_is_seen_with_its_pid(toy):
    _, keys = built(toy)
    lease = Lease(toy.cache_dir)
    lease.add([keys["b"], "not a key"])
    try:
        with sweep_guard(toy.cache_dir, exclusive=True):
            assert live_leases(toy.cache_dir) == {keys["b"]: os.getpid()}
    finally:
        lease.release()
    assert (toy.cache_dir / GUARD).exists()


def test_a_run_leaves_no_lease_behind(toy):
    built(toy)
    assert not list((toy.cache_dir / FOLDER).iterdir())


def test_clear_empties_the_cache_and_forgets_digests(toy):
    workspace, keys = built(toy)
    assert (toy.cache_dir / "file-digests.json").exists()
    assert cache_admin.clear(workspace) == (3, 0)
    assert cached(toy) == set() and not (toy.cache_dir / "file-digests.json").exists()
    assert (toy.cache_dir / CACHE_MARKER).exists()
    assert {s for s, _ in toy.states().values()} == {"stale", "pending"}


def test_a_folder_qntz_did_not_create_is_refused(toy, tmp_path):
    foreign = tmp_path / "someone-elses"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    workspace = Workspace(toy.root, foreign)
    with pytest.raises(PipelineError, match="no .qntz-cache marker"):
        cache_admin.gc(workspace, Console(), dry_run=False)
    with pytest.raises(PipelineError, match="no .qntz-cache marker"):
        cache_admin.clear(workspace)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_gc_of_a_cache_never_made_says_so(toy):
    console = Console()
    assert cache_admin.gc(Workspace(toy.root, toy.cache_dir), console, dry_run=False) == 0
    assert console.lines == [f"nothing to collect: {toy.cache_dir} does not exist"]


def test_verify_rehashes_and_reports_damage(toy):
    workspace, keys = built(toy)
    console = Console()
    assert cache_admin.verify(workspace, console) == 0
    entry = Cache(toy.cache_dir, FileDigests()).entry_dir(keys["b"])
    (entry / "text.txt").chmod(0o644)
    (entry / "text.txt").write_text("bit rot")
    assert cache_admin.verify(workspace, console) == 1
    assert any("text.txt changed" in line for line in console.lines)
