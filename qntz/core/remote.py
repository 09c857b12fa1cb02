"""A shared remote cache through fsspec (`s3://…`, `gs://…`, a shared folder).

The remote is content-addressed like DVC's: file contents under `files/<digest>`, and one
manifest per key under `entries/<key[:2]>/<key>.json`, published last. A manifest names
only files already uploaded, so an entry is complete the moment it is visible; concurrent
pushes of the same key write the same blobs and an equivalent manifest. Everything pulled is
re-hashed before it enters the local cache. Credentials come from wherever fsspec and its
backends read them (environment, ~/.aws, instance roles), never from the pipeline.

Configured by `QNTZ_REMOTE` or `remote:` in `<project root>/.qntz/config.yaml`; a remote
that cannot be reached is a warning, and the run goes on locally. Every message shows the
URL redacted (no userinfo, no secret query values), the backend's own text included. Keys
and digests read from a lock file or a manifest become paths only when they are 64 hex.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any, NoReturn

from qntz.core.cache import Artifact, DigestMismatch, Held, is_key, manifest_problem
from qntz.core.errors import PipelineError
from qntz.core.redact import redact, redact_text


class RemoteUnavailable(Exception):
    """The remote could not be reached or refused an operation; the message says why."""


def configured_remote(root: Path) -> str | None:
    """The remote URL: `QNTZ_REMOTE` first, then `.qntz/config.yaml` under the project root."""
    if os.environ.get("QNTZ_REMOTE"):
        return os.environ["QNTZ_REMOTE"]
    config = root / ".qntz" / "config.yaml"
    if not config.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(config.read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise PipelineError(f"cannot read the project config: {exc}", where=str(config),
                            hint="write `remote: s3://bucket/path` (YAML)") from exc
    url = data.get("remote") if isinstance(data, dict) else None
    if url is not None and not isinstance(url, str):
        raise PipelineError("`remote` must be a URL string", where=str(config),
                            hint="e.g. remote: s3://bucket/qntz")
    return url


class Redacted(Exception):
    """Stands in as the cause for a backend's exception whose text shows a secret: the same
    type name and text, secrets masked (with -v the CLI prints every cause)."""


def unavailable(url: str, message: str, exc: BaseException) -> NoReturn:
    """Raise RemoteUnavailable saying `message`, redacted, caused by `exc` (or by its
    Redacted stand-in when the text of `exc` would show a secret)."""
    raw = " ".join(str(exc).split())
    clean = redact_text(raw, url)
    cause = exc if clean == raw else Redacted(f"{type(exc).__name__}: {clean}")
    raise RemoteUnavailable(redact_text(message, url)) from cause


def _is_key(value: Any) -> bool:
    """64 lowercase hex: a cache key, or a file digest (sha256 too)."""
    return isinstance(value, str) and is_key(value)


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


class Remote:
    def __init__(self, url: str):
        self.url = url
        try:
            import fsspec
        except ImportError as exc:
            raise RemoteUnavailable('the remote cache needs fsspec: pip install "qntz[s3]" '
                                    "(or qntz[remote] for a shared folder)") from exc
        try:  # some backends (ftp, sftp, smb) connect here
            self.fs, self.base = fsspec.core.url_to_fs(url)
        except Exception as exc:
            unavailable(url, f"cannot open remote {redact(url)}: {_text(exc)}", exc)

    def _manifest_path(self, key: str) -> str:
        if not _is_key(key):  # a key from a lock file or a caller: never a path of its own
            raise RemoteUnavailable(f"refusing a malformed cache key {str(key)[:80]!r} "
                                    "(not 64 hex digits)")
        return f"{self.base}/entries/{key[:2]}/{key}.json"

    def _blob(self, digest: str) -> str:
        if not _is_key(digest):
            raise RemoteUnavailable(f"a manifest on {redact(self.url)} names a malformed file "
                                    f"digest {str(digest)[:80]!r}")
        return f"{self.base}/files/{digest[:2]}/{digest}"

    def _call(self, what: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except FileNotFoundError:
            raise
        except Exception as exc:
            unavailable(self.url, f"{what} on {redact(self.url)} failed: {_text(exc)}", exc)

    def manifest(self, key: str) -> dict[str, Any] | None:
        """The published manifest of `key`, or None (absent or malformed, or `key` is not
        a key)."""
        if not _is_key(key):
            return None
        path = self._manifest_path(key)
        try:
            self.fs.invalidate_cache()
            data = self._call("reading a manifest", self.fs.cat_file, path)
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(data)
        except ValueError:
            return None
        if manifest_problem(manifest, key) or not all(map(_is_key, manifest["files"].values())):
            return None
        return manifest

    def has(self, key: str) -> bool:
        return self.manifest(key) is not None

    def push(self, artifact: Artifact) -> bool:
        """Upload an entry: its files (each aside, then moved), then its manifest. False when
        the remote already had it."""
        path = self._manifest_path(artifact.key)  # refuses a malformed key before any upload
        if self.has(artifact.key):
            return False
        for name, digest in artifact.files().items():
            blob = self._blob(digest)
            if not self._call("checking a file", self.fs.exists, blob):
                aside = f"{blob}.{uuid.uuid4().hex[:8]}.partial"
                self._call("making a folder", self.fs.makedirs, blob.rsplit("/", 1)[0], True)
                self._call("uploading", self.fs.put_file, str(artifact.file(name)), aside)
                self._call("publishing", self.fs.mv, aside, blob)
        aside = f"{path}.{uuid.uuid4().hex[:8]}.partial"
        self._call("making a folder", self.fs.makedirs, path.rsplit("/", 1)[0], True)
        self._call("uploading a manifest", self.fs.pipe_file, aside,
                   json.dumps(artifact.manifest, sort_keys=True).encode())
        self._call("publishing a manifest", self.fs.mv, aside, path)
        return True

    def pull(self, held: Held, step_id: str) -> Artifact | None:
        """Download the held key's entry into the local cache, every file checked against
        its digest. None when the remote has no complete entry."""
        cache, key = held.cache, held.key
        manifest = self.manifest(key)
        if manifest is None:
            return None
        work = cache.workspace(key)
        try:
            for name, digest in manifest["files"].items():
                target = work / "out" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                self._call("downloading", self.fs.get_file, self._blob(digest), str(target))
            summary = {**manifest.get("summary", {}), "volatile": manifest.get("volatile", [])}
            return held.commit(step_id, work, manifest["provides"], summary,
                               manifest.get("record", {}), expected=manifest["files"])
        except DigestMismatch as exc:  # hashed once, by the commit, before it is in place
            unavailable(self.url, f"entry {key[:16]} on {redact(self.url)}: {exc}", exc)
        except FileNotFoundError as exc:
            unavailable(self.url, f"the entry {key[:16]} on {redact(self.url)} is "
                        f"incomplete ({exc})", exc)
        finally:
            cache.discard(work)


class RemoteLink:
    """A run's use of the remote: each failure becomes one warning and ends the remote's
    part in the run, which goes on locally."""

    def __init__(self, url: str | None):
        self.url = url
        self.warnings: list[str] = []
        self._remote: Remote | None = None
        self._lock = threading.Lock()

    def _get(self) -> Remote | None:
        with self._lock:
            if self.url is not None and self._remote is None:
                try:
                    self._remote = Remote(self.url)
                except RemoteUnavailable as exc:
                    self._give_up(exc)
            return self._remote

    def _give_up(self, exc: Exception) -> None:
        if self.url is None:  # another thread gave up first: one warning per run
            return
        self.warnings.append(redact_text(f"remote cache {redact(self.url)}: {exc}; going on "
                                         "locally", self.url))
        self.url, self._remote = None, None

    def pull(self, held: Held, step_id: str) -> Artifact | None:
        remote = self._get()
        if remote is None:
            return None
        try:
            return remote.pull(held, step_id)
        except RemoteUnavailable as exc:
            with self._lock:
                self._give_up(exc)
            return None

    def push(self, artifact: Artifact) -> None:
        remote = self._get()
        if remote is None:
            return
        try:
            remote.push(artifact)
        except (RemoteUnavailable, OSError) as exc:
            with self._lock:
                self._give_up(exc)
