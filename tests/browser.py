"""Real headless Chromium for the report tests: found on PATH (Debian's `chromium`), run
offline with a throwaway profile; its console messages come back on stderr."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CONSOLE = re.compile(r":CONSOLE[:(]")


def find_chromium() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if not found:
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    return found


def browse(browser: str, page: Path, work: Path, *args: str, timeout: int = 120
           ) -> subprocess.CompletedProcess:
    command = [browser, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
               f"--user-data-dir={work / 'profile'}", "--disable-background-networking",
               "--disable-component-update", "--host-resolver-rules=MAP * ~NOTFOUND",
               "--enable-logging=stderr", "--v=0", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
