"""The cache itself: commits, lookups, and every kind of damage being a miss, never an input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from qntz.core.cache import MANIFEST, Cache, DigestMismatch, is_key
from qntz.core.hashing import FileDigests, digest_value

pytestmark = pytest.mark.fast

KEY = digest_value("a toy key")


def build(cache: Cache, files: dict[str, str], key: str = KEY, provides=("text",),
          summary: dict | None = None, expected: dict | None = None):
    """One build as the runner does it: a workspace, files in out/, a commit under the lock."""
    with cache.locked(key) as held:
        work = cache.workspace(key)
        for name, text in files.items():
            (work / "out" / name).parent.mkdir(parents=True, exist_ok=True)
            (work / "out" / name).write_text(text)
        return held.commit("s", work, list(provides), dict(summary or {}), {"r": 1}, expected)


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    made = Cache(tmp_path / "cache", FileDigests(tmp_path / "cache" / "file-digests.json"))
    made.claim()
    return made


def writable(path: Path) -> Path:
    path.chmod(0o644)  # committed files are read-only: out/ links share their inode
    return path


def test_a_commit_is_found_with_its_files_and_digests(cache):
    artifact = build(cache, {"text.txt": "hello", "sub/more.txt": "x"}, summary={"n": 1})
    assert artifact.path == cache.entry_dir(KEY) and artifact.path.is_dir()
    assert set(artifact.files()) == {"text.txt", "sub/more.txt"}
    assert artifact.files()["text.txt"] == hashlib.sha256(b"hello").hexdigest()
    found, problem = cache.lookup("s", KEY, strict=True)
    assert problem is None and found.manifest == artifact.manifest
    assert found.summary == {"n": 1} and found.provides == ["text"]
    assert list(cache.keys()) == [KEY]
    assert not list((cache.root / "tmp").iterdir()), "the build folder is left behind"


def test_an_absent_entry_and_a_key_that_is_not_one_are_plain_misses(cache):
    assert cache.lookup("s", digest_value("other")) == (None, None)
    assert cache.lookup("s", "../../etc") == (None, None)
    assert not is_key(KEY.upper()) and not is_key(KEY[:-1])
    with pytest.raises(ValueError, match="not a cache key"):
        cache.entry_dir("../x")


@pytest.mark.parametrize("strict", [False, True])
def test_an_edited_file_is_a_miss(cache, strict):
    artifact = build(cache, {"text.txt": "hello"})
    writable(artifact.file("text.txt")).write_text("hellO")
    assert cache.lookup("s", KEY, strict=strict) == (
        None, "cache entry corrupt (text.txt changed), rebuilding")


def test_a_file_the_manifest_lists_that_is_not_there_is_a_miss(cache):
    artifact = build(cache, {"text.txt": "hello", "more.txt": "x"})
    artifact.file("more.txt").unlink()
    assert cache.lookup("s", KEY)[1] == "cache entry corrupt (more.txt missing), rebuilding"


def test_an_extra_file_is_a_miss(cache):
    artifact = build(cache, {"text.txt": "hello"})
    (artifact.path / "stray.txt").write_text("?")
    assert cache.lookup("s", KEY)[1] == (
        "cache entry corrupt (stray.txt is not in the manifest), rebuilding")


@pytest.mark.parametrize(("edit", "says"), [
    (lambda m: "{not json", "cache entry unreadable (manifest is not JSON), rebuilding"),
    (lambda m: json.dumps({**m, "key": digest_value("x")}),
     "cache entry malformed (manifest names another key), rebuilding"),
    (lambda m: json.dumps({**m, "files": {"../up.txt": m["files"]["text.txt"]}}),
     "cache entry malformed (bad file list), rebuilding"),
    (lambda m: json.dumps({**m, "digest": digest_value("x")}),
     "cache entry malformed (digest does not match the file list), rebuilding"),
    (lambda m: json.dumps([m]), "cache entry malformed (manifest is not an object), rebuilding"),
])
def test_a_malformed_manifest_is_a_miss(cache, edit, says):
    artifact = build(cache, {"text.txt": "hello"})
    manifest = writable(artifact.path / MANIFEST)
    manifest.write_text(edit(json.loads(manifest.read_text())))
    assert cache.lookup("s", KEY) == (None, says)


def test_an_entry_without_its_manifest_is_incomplete(cache):
    artifact = build(cache, {"text.txt": "hello"})
    (artifact.path / MANIFEST).unlink()
    assert cache.lookup("s", KEY)[1] == "cache entry incomplete (no manifest), rebuilding"


def test_an_entry_providing_what_its_step_does_not_is_damage(cache):
    build(cache, {"text.txt": "hello"}, provides=("text",))
    assert cache.lookup("s", KEY, declared=("text", "onnx"))[1] is None  # a subset is fine
    assert cache.lookup("s", KEY, declared=("onnx",))[1] == (
        "cache entry corrupt (provides ['text'], the step provides ['onnx']), rebuilding")
    other = digest_value("nothing")
    build(cache, {"text.txt": "hello"}, key=other, provides=())
    assert "provides nothing" in cache.lookup("s", other, declared=("text",))[1]


def test_a_commit_over_an_equal_entry_keeps_it_and_over_a_corrupt_one_replaces_it(cache):
    first = build(cache, {"text.txt": "hello"})
    inode = first.file("text.txt").stat().st_ino
    assert build(cache, {"text.txt": "hello"}).file("text.txt").stat().st_ino == inode
    writable(first.file("text.txt")).write_text("damaged")
    again = build(cache, {"text.txt": "hello"})
    assert cache.lookup("s", KEY, strict=True)[0] is not None
    assert again.file("text.txt").read_text() == "hello"


def test_downloaded_files_must_match_the_manifest_they_came_with(cache):
    expected = {"text.txt": digest_value("something else")}
    with pytest.raises(DigestMismatch, match="text.txt does not match its digest"):
        build(cache, {"text.txt": "hello"}, expected=expected)


def test_volatile_files_are_stored_but_not_in_the_digest(cache):
    one = build(cache, {"text.txt": "hello", "clock.txt": "1"},
                summary={"volatile": ["clock.txt"]})
    assert set(one.files()) == {"text.txt", "clock.txt"}
    assert set(one.lasting_files()) == {"text.txt"}
    other = build(cache, {"text.txt": "hello", "clock.txt": "2"}, key=digest_value("two"),
                  summary={"volatile": ["clock.txt"]})
    assert other.digest == one.digest and "volatile" not in other.summary


def test_a_killed_builds_folder_is_swept_when_the_key_is_locked_next(cache):
    leftover = cache.root / "tmp" / f"{KEY}-99999-deadbeef"
    (leftover / "out").mkdir(parents=True)
    with cache.locked(KEY):
        assert not leftover.exists()


def test_the_key_lock_is_seen_from_outside(cache):
    assert not cache.is_locked(KEY)
    with cache.locked(KEY):
        with cache.locked_if_free(KEY) as held:
            assert held is None  # held elsewhere: no writer handed out


def test_only_the_held_lock_writes_an_entry(cache):
    """`commit` and `remove` exist only on what `locked` hands out."""
    assert not hasattr(cache, "commit") and not hasattr(cache, "remove")
    build(cache, {"model.onnx": "m"}, provides=("onnx",))
    with cache.locked(KEY) as held:
        assert held.key == KEY
        held.remove()
    assert cache.lookup("s", KEY)[0] is None
