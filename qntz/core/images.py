"""A folder of images as one NCHW float32 array (resize, scale to [0, 1], normalize)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from qntz.core.errors import PipelineError

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_ENTRIES = 100_000  # entries looked at under an image folder: `path: /` must not walk the disk


def image_files(folder: Path, where: str) -> list[Path]:
    """The folder's image files, sorted; regular files only (a FIFO named x.png blocks)."""
    found: list[Path] = []
    seen = 0
    for parent, folders, names in os.walk(folder):
        seen += len(folders) + len(names)
        if seen > MAX_ENTRIES:
            raise PipelineError(f"{folder} holds more than {MAX_ENTRIES} files and folders",
                                where=where, hint="point `path` at a folder of images")
        found.extend(Path(parent, n) for n in names if Path(n).suffix.lower() in SUFFIXES)
    return sorted(p for p in found if p.is_file())


def load_images(folder: Path, spec: dict[str, Any]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:
        raise PipelineError("image datasets need Pillow", where=str(folder),
                            hint='pip install "qntz[images]"') from exc
    files = image_files(folder, str(folder))
    if not files:
        raise PipelineError(f"no images ({', '.join(SUFFIXES)}) in {folder}", where=str(folder),
                            hint="put images in the folder or fix `path`")
    files = files[: spec.get("samples") or len(files)]
    height, width = spec.get("size", [224, 224])
    mean = np.asarray(spec.get("mean", [0.0, 0.0, 0.0]), np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.get("std", [1.0, 1.0, 1.0]), np.float32).reshape(3, 1, 1)
    arrays = []
    for path in files:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((width, height), Image.BILINEAR)
        chw = np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0
        arrays.append((chw - mean) / std)
    return np.stack(arrays).astype(np.float32)
