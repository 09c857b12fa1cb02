"""The `qntz` command: `run` works in a child process, so that a crash in native code (a
segfault in ONNX Runtime's calibration, an abort in an exporter) still ends with one line
that says what happened, and a non-zero exit, instead of a bare "Segmentation fault".

Nothing heavy is imported here: other commands go straight to the CLI in this process.
Ctrl-C from a terminal reaches the child itself (the same process group), so this process
ignores it; SIGTERM and SIGHUP are passed on, and the child dies with this process (Linux).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

CHILD = "QNTZ_GUARDED"  # set in the child: it runs the CLI itself
CRASHES = {signal.SIGSEGV: "a segmentation fault", signal.SIGBUS: "a bus error",
           signal.SIGILL: "an illegal instruction", signal.SIGFPE: "a floating-point trap",
           signal.SIGABRT: "an abort"}
EXIT_FAILED = 1
# `-c` puts the current folder first on sys.path, where a project's own json.py would
# shadow the standard library's (the console script does not): taken off before anything
CHILD_CODE = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
              "from qntz.cli import entry; entry()")


def entry() -> None:
    if os.environ.get(CHILD) or not _is_run(sys.argv[1:]):
        from qntz.cli import entry as cli_entry

        cli_entry()
        return
    sys.exit(_supervise(sys.argv[1:]))


def _is_run(argv: list[str]) -> bool:
    command = next((a for a in argv if not a.startswith("-")), None)
    return command == "run"


def _supervise(argv: list[str]) -> int:
    child = subprocess.Popen([sys.executable, "-c", CHILD_CODE, *argv],
                             env={**os.environ, CHILD: "1"},
                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for passed in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(passed, lambda number, frame: child.send_signal(number))
    code = child.wait()
    if code >= 0:
        return code
    number = -code
    if number in CRASHES:
        sys.stderr.write(
            f"error: qntz run stopped on {CRASHES[number]} (signal {number}) in native code "
            "(torch, ONNX Runtime or an exporter), in the step it last started above; "
            "nothing half-written is kept (fix: run that step alone with -v to see the "
            "library's last words, and change what that step asks of it, e.g. another "
            "`method` or opset; the cache is intact)\n")
        return EXIT_FAILED
    return 128 + number


def _die_with_parent() -> None:
    """The child gets SIGKILL when this process dies, even by SIGKILL (prctl's
    PR_SET_PDEATHSIG): a killed qntz leaves no run behind it."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
