"""The cost of `qntz cache verify` per GB of cached artifacts.

    python benchmarks/cache_verify.py [--mb 512] [--files 64]

Builds a cache of that many MB of random files (through the real Cache, as steps commit),
then times `qntz cache verify` in a separate process, twice (the second with the files in
the page cache, which is the usual case right after a run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qntz.core.cache import Cache
from qntz.core.hashing import FileDigests, digest_value


def fill(cache: Cache, megabytes: int, files: int) -> None:
    size = (megabytes << 20) // files
    for index in range(files):
        key = digest_value(index)
        with cache.locked(key):
            work = cache.workspace(key)
            (work / "out" / "model.onnx").write_bytes(os.urandom(size))
            cache.commit(f"s{index}", key, work, ["onnx"], {}, {})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--files", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / ".qntz").mkdir()
        fill(Cache(root / ".qntz" / "cache", FileDigests()), args.mb, args.files)
        for label in ("first", "again"):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "qntz", "cache", "verify"], cwd=root,
                           check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            print(f"cache verify ({label}): {args.mb} MB in {args.files} entries, "
                  f"{seconds:.2f} s = {seconds / (args.mb / 1024):.2f} s per GB")


if __name__ == "__main__":
    main()
