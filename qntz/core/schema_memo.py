"""Pipeline documents jsonschema has already accepted, remembered in the cache folder.

Validating with jsonschema means importing it (and referencing, rpds, attrs), which costs
more than everything else a fully cached run does. A part of a document accepted once
under a schema is accepted again, so each accepted (value, schema, jsonschema version) is
remembered by its sha256 in `<cache>/validated.json`, and a later load of an unchanged
pipeline skips the import. Nothing is remembered where there is no (marked) cache folder yet
(`qntz validate` in a fresh project writes nothing), and a memo that cannot be read or
written is simply not used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qntz.core.cache import CACHE_MARKER
from qntz.core.hashing import digest_value, library_version, write_atomic

LIMIT = 2000  # remembered entries, newest kept


class SchemaMemo:
    def __init__(self, folder: Path | None):
        self.path = folder / "validated.json" if folder is not None else None
        self.known = self._read()
        self.added: list[str] = []

    def key(self, value: Any, schema: dict[str, Any]) -> str | None:
        try:
            return digest_value([value, schema, library_version("jsonschema")])
        except (TypeError, ValueError):  # YAML values JSON cannot hold: validate each time
            return None

    def __contains__(self, key: str | None) -> bool:
        return key is not None and key in self.known

    def add(self, key: str | None) -> None:
        if key is not None and key not in self.known:
            self.known[key] = None
            self.added.append(key)

    def save(self) -> None:
        if not self.added or self.path is None or not _ours(self.path.parent):
            return
        keys = [k for k in {**self._read(), **self.known}][-LIMIT:]
        try:
            write_atomic(self.path, json.dumps(keys))
            self.added = []
        except OSError:
            pass

    def _read(self) -> dict[str, None]:
        try:
            keys = json.loads(self.path.read_text()) if self.path else []
        except (OSError, ValueError):
            return {}
        ok = isinstance(keys, list) and all(isinstance(k, str) and len(k) == 64 for k in keys)
        return dict.fromkeys(keys) if ok else {}


def _ours(folder: Path) -> bool:
    """A cache qntz marked, or a project's own `.qntz/cache` (qntz's by its place)."""
    return (folder / CACHE_MARKER).exists() or (
        folder.is_dir() and folder.name == "cache" and folder.parent.name == ".qntz")
