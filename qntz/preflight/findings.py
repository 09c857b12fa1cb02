"""Findings of `preflight`: what stands in the way of a capture method, where, and the fix."""

from __future__ import annotations

import functools
import inspect
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

METHODS = ("trace", "script", "export")


@dataclass
class Finding:
    rule: str
    severity: str  # error | warning
    methods: list[str]
    message: str
    fix: str
    file: str | None = None
    line: int | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.file else "(model)"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


INTERNAL = ("torch.overrides", "torch.utils._", "torch._tensor")
Place = tuple[str | None, int | None]


def _internal(frame: FrameType) -> bool:
    """qntz's own frames and torch's dispatch layers, told by module, not by path: a
    virtual environment inside a folder named qntz holds other people's code."""
    module = frame.f_globals.get("__name__") or ""
    return module == "qntz" or module.startswith(("qntz.", *INTERNAL))


@dataclass
class UserCode:
    """The model's source files (not torch's): findings are located there. Files of
    installed libraries (transformers, MONAI, ...) count, but a finding in one is placed at
    the user's own line that leads there, when there is one, with the library named."""

    files: set[str] = field(default_factory=set)
    via: dict[Place, str] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Any) -> UserCode:
        import torch

        torch_dir = str(Path(torch.__file__).parent)
        files = set()
        for module in model.modules():
            try:
                path = inspect.getsourcefile(type(module))
            except TypeError:
                continue
            if path and not path.startswith(torch_dir) and "site-packages/torch" not in path:
                files.add(str(Path(path).resolve()))
        return cls(files)

    def owns(self, filename: str) -> bool:
        return _resolved(filename) in self.files

    def caller(self, skip_torch: bool = False) -> Place:
        """The innermost frame of the current stack in the model's files.

        With skip_torch False only the immediate caller outside qntz and torch.overrides
        counts: a tensor turned into a Python value inside torch's own code is torch's
        business, not a finding in the user's model.
        """
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename
            if self.owns(name):
                return self._user_side([(name, frame.f_lineno), *_outer(frame.f_back)])
            if not _internal(frame) and not skip_torch:
                return None, None
            frame = frame.f_back
        return None, None

    def _user_side(self, frames: list[tuple[str, int]]) -> Place:
        """The first frame (innermost first); if it is a library's, the user's line that
        leads there, remembering where in the library it ends."""
        first = frames[0]
        if library_of(first[0]) is None:
            return first
        for name, line in frames[1:]:
            if self.owns(name) and library_of(name) is None:
                self.via[(name, line)] = _library_place(*first)
                return name, line
        return first

    def inside(self, where: Place) -> str | None:
        """The library a finding at `where` lives in or leads into, with its file and line."""
        if where in self.via:
            return self.via[where]
        if where[0] and library_of(where[0]):
            return _library_place(where[0], where[1] or 0)
        return None

    def in_traceback(self, exc: BaseException) -> Place:
        """The last frame in the model's files, from the exception's traceback or text."""
        owned = [(f.filename, f.lineno or 0) for f in traceback.extract_tb(exc.__traceback__)
                 if self.owns(f.filename)]
        if owned:
            return self._user_side(owned[::-1])
        return self.in_text(str(exc))

    def in_text(self, text: str) -> Place:
        import re

        for match in re.finditer(r'(/[^\s"():]+\.py)(?:", line |:|\()(\d+)', text):
            if self.owns(match.group(1)):
                return match.group(1), int(match.group(2))
        return None, None


def _outer(frame: FrameType | None) -> list[tuple[str, int]]:
    out = []
    while frame is not None:
        out.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return out


@functools.lru_cache(maxsize=4096)
def _resolved(filename: str) -> str:
    try:
        return str(Path(filename).resolve())
    except OSError:
        return filename


@functools.lru_cache(maxsize=1)
def _install_dirs() -> tuple[str, ...]:
    import site
    import sysconfig

    dirs = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    dirs |= set(site.getsitepackages()) | {site.getusersitepackages()}
    return tuple(sorted({_resolved(d) + "/" for d in dirs}))


@functools.lru_cache(maxsize=4096)
def library_of(filename: str) -> str | None:
    """The installed distribution's top-level package a file belongs to, or None."""
    path = _resolved(filename)
    for folder in _install_dirs():
        if path.startswith(folder):
            return path[len(folder):].split("/")[0].removesuffix(".py")
    return None


def _library_place(filename: str, line: int) -> str:
    library = library_of(filename) or "?"
    path = _resolved(filename)
    tail = path[path.index(f"/{library}") + 1:] if f"/{library}" in path else Path(path).name
    return f"installed {library} code, {tail}:{line}"


def definition_line(model: Any) -> tuple[str | None, int | None]:
    """Where the model's forward is defined: the place of findings with no better line."""
    try:
        forward = inspect.unwrap(type(model).forward)  # a decorator's wrapper is not the model
        return inspect.getsourcefile(forward), inspect.getsourcelines(forward)[1]
    except (TypeError, OSError):
        return None, None
