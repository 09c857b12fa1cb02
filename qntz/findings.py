"""Findings of `preflight`: what stands in the way of a capture method, where, and the fix."""

from __future__ import annotations

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


@dataclass
class UserCode:
    """The model's own source files (not torch's): findings are located there."""

    files: set[str] = field(default_factory=set)

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
        try:
            return str(Path(filename).resolve()) in self.files
        except OSError:
            return False

    def caller(self, skip_torch: bool = False) -> tuple[str | None, int | None]:
        """The innermost frame of the current stack in the user's files.

        With skip_torch False only the immediate caller outside qntz and torch.overrides
        counts: a tensor turned into a Python value inside torch's own code is torch's
        business, not a finding in the user's model.
        """
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename
            if self.owns(name):
                return name, frame.f_lineno
            internal = "/qntz/" in name or "torch/overrides" in name or "torch/utils/_" in name \
                or "torch/_tensor" in name
            if not internal and not skip_torch:
                return None, None
            frame = frame.f_back
        return None, None

    def in_traceback(self, exc: BaseException) -> tuple[str | None, int | None]:
        """The last frame in the user's files, from the exception's traceback or text."""
        found: tuple[str | None, int | None] = (None, None)
        for frame in traceback.extract_tb(exc.__traceback__):
            if self.owns(frame.filename):
                found = (frame.filename, frame.lineno)
        if found[0]:
            return found
        return self.in_text(str(exc))

    def in_text(self, text: str) -> tuple[str | None, int | None]:
        import re

        for match in re.finditer(r'(/[^\s"():]+\.py)(?:", line |:|\()(\d+)', text):
            if self.owns(match.group(1)):
                return match.group(1), int(match.group(2))
        return None, None


def definition_line(model: Any) -> tuple[str | None, int | None]:
    """Where the model's forward is defined: the place of findings with no better line."""
    try:
        forward = type(model).forward
        return inspect.getsourcefile(forward), inspect.getsourcelines(forward)[1]
    except (TypeError, OSError):
        return None, None
